-- Applies one page of storagesvc's list atomically (rules: cache/mod.rs, "Pages").
-- KEYS[1] the books hash   KEYS[2] the id index   KEYS[3] the page's mark
-- ARGV[1] seen revision    ARGV[2] max age in ms
-- ARGV[3] after (the page's exclusive start, decimal)
-- ARGV[4] upto: the last id of a full page, or "" when the page was the catalogue's end
-- ARGV[5] how long the mark makes the page fresh, in ms (0: write no mark)
-- ARGV[6..] one triple per listed book, in id order: id, version, body
-- Returns {applied, ignored, removed}. Cost: the page's books plus the index members of its
-- range that storagesvc did not list, never the size of the catalogue.
local key, index, mark = KEYS[1], KEYS[2], KEYS[3]
local seen, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local after, upto, fresh_for = ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local applied, ignored, removed = 0, 0, 0
local listed = {}

for i = 6, #ARGV, 3 do
  local id, version, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  listed[id] = true
  local cur = load(redis.call('HGET', key, id), now, max_age)
  if fill_wins(cur, seen, version) then
    store(key, index, id, version, now, 'b', body)
    applied = applied + 1
  else
    -- A newer entry stays; if it is a book, make sure the index lists it (entries written
    -- before the index existed are not in it).
    if cur.kind == 'b' then redis.call('ZADD', index, 0, index_member(id)) end
    ignored = ignored + 1
  end
end

-- Books the index holds in the page's range that storagesvc no longer lists. As for a single
-- book: unchanged since the read, they were deleted (a tombstone with their last version keeps
-- a late older upsert out); written after the read, they are newer news (a create that raced
-- this page) and stay. Dead fields are dropped.
local last = '+'
if upto ~= '' then last = '[' .. index_member(upto) end
local members = redis.call('ZRANGEBYLEX', index, '(' .. index_member(after), last)
for _, member in ipairs(members) do
  local id = string.match(member, '^0*(%d+)$')
  if id and not listed[id] then
    local cur = load(redis.call('HGET', key, id), now, max_age)
    if cur == nil then
      drop(key, index, id)
    elseif cur.rev <= seen then
      store(key, index, id, cur.version, now, 't', '')
      removed = removed + 1
    end
  end
end

-- The page is now known whole from `after` to `upto`, and events keep it so: fresh until the
-- mark expires. Its value is when it was written and how far it reaches.
if fresh_for > 0 then
  redis.call('SET', mark, string.format('%d:%s', now, upto), 'PX', fresh_for)
end
keep_alive(key, index, max_age)
return { applied, ignored, removed }
