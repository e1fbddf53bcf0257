-- Helpers shared by the cache's write scripts; prepended to each script's own source.
--
-- An entry is one field of the books hash (field = book id) whose value is
--   "<rev>:<version>:<written_ms>:<kind>:<body>"
-- rev: value of the hash's "_rev" counter when the entry was written (unique, increasing);
-- version: the book's version (decimal, no sign, no leading zeros); written_ms: Redis time
-- of the write in ms; kind: "b" (book, body = its JSON) or "t" (tombstone, empty body).

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

local function store(key, id, version, now, kind, body)
  local rev = redis.call('HINCRBY', key, '_rev', 1)
  redis.call('HSET', key, id, string.format('%d:%s:%d:%s:%s', rev, version, now, kind, body))
end

