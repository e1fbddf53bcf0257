-- Helpers shared by the cache's scripts; prepended to each script's own source.
--
-- An entry is one field of the books hash (KEYS[1], field = book id) whose value is
--   "<rev>:<version>:<written_ms>:<kind>:<body>"
-- rev: value of the hash's "_rev" counter when the entry was written (unique, increasing);
-- version: the book's version (decimal, no sign, no leading zeros); written_ms: Redis time
-- of the write in ms; kind: "b" (book, body = its JSON) or "t" (tombstone, empty body).
--
-- The id index (KEYS[2]) is a sorted set holding the id of every live book entry ("b"), as
-- 19 digits with leading zeros, all at score 0: ordered by id, so a page is ZRANGEBYLEX from
-- its `after`. Only store() and drop() below change an entry, and they keep the index in step,
-- in the same script: the two never disagree.

-- Redis server time in ms: one clock for every writer and reader, whatever host they run on.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The entry's header, or nil when the field is absent, unreadable or past max age: all three
-- count as "absent", so a write replaces them and the cache heals itself.
local function load(raw, now, max_age)
  if not raw then return nil end
  local rev, version, at, kind = string.match(raw, '^(%d+):(%d+):(%d+):([bt]):')
  if not rev then return nil end
  if now - tonumber(at) >= max_age then return nil end
  return { rev = tonumber(rev), version = version, kind = kind }
end

-- a > b for decimal strings. Compared as text because Lua numbers are doubles and lose
-- precision past 2^53, which a forged version can exceed.
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- The fill rule: storagesvc's answer replaces the entry the filler saw (rev <= seen), whatever
-- its version; an entry written after that read keeps its place unless the fill is newer.
local function fill_wins(cur, seen, version)
  return cur == nil or cur.rev <= seen or newer(version, cur.version)
end

-- A book id as the index holds it. Padded as text: Lua numbers lose precision past 2^53.
local function index_member(id)
  return string.rep('0', 19 - #id) .. id
end

-- Writes an entry and keeps the index in step: a book is listed, a tombstone is not.
local function store(key, index, id, version, now, kind, body)
  local rev = redis.call('HINCRBY', key, '_rev', 1)
  redis.call('HSET', key, id, string.format('%d:%s:%d:%s:%s', rev, version, now, kind, body))
  if kind == 'b' then
    redis.call('ZADD', index, 0, index_member(id))
  else
    redis.call('ZREM', index, index_member(id))
  end
end

-- Removes a dead field (unreadable or past max age) and its index member.
local function drop(key, index, id)
  redis.call('HDEL', key, id)
  redis.call('ZREM', index, index_member(id))
end

-- What the cache has proven (docs/decisions/0013-deleted-stays-deleted.md). The hash's
-- "_since" field is "<run_id>:<ms>": from that Redis time on, on the Redis server process with
-- that run_id, the hash has kept every entry written to it, tombstones included, for max_age.
-- A restart changes the run_id (persistence or not: a snapshot may predate the last
-- tombstones), and a hash lost with its data takes the field with it; either way the field
-- starts again at now. The run_id comes from INFO, the one thing a restarted Redis cannot keep.
local SKEW_MS = 2000

local function since(key, now)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  local raw = redis.call('HGET', key, '_since')
  if raw then
    local r, at = string.match(raw, '^(%x*):(%d+)$')
    if r == run then return tonumber(at) end
  end
  redis.call('HSET', key, '_since', run .. ':' .. now)
  return now
end

-- Whether an event that occurred at `occurred` (ms, the writer's clock) is within what the
-- cache has proven: after its "_since" and within max_age, so any delete that followed it
-- left a tombstone that is still here. SKEW_MS covers the clocks of PostgreSQL and Redis.
local function proven(key, now, max_age, occurred)
  local horizon = math.max(since(key, now), now - max_age)
  return occurred >= horizon + SKEW_MS
end

-- Every write leaves both keys to expire max_age after it: an idle deployment keeps nothing.
local function keep_alive(key, index, max_age)
  redis.call('PEXPIRE', key, max_age)
  redis.call('PEXPIRE', index, max_age)
end

