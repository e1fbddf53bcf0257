-- Reads one page atomically: the index from `after`, those entries, and the page's mark.
-- KEYS[1] the books hash   KEYS[2] the id index   KEYS[3] the page's mark
-- ARGV[1] after (decimal)  ARGV[2] limit
-- Returns strings {now_ms, seen revision, mark ("" if none), ids..., entries...}: one entry
-- per id, the raw field ("" if absent). Cost: O(log n + limit).
local key, index, mark = KEYS[1], KEYS[2], KEYS[3]
local members = redis.call('ZRANGEBYLEX', index, '(' .. index_member(ARGV[1]), '+',
  'LIMIT', 0, tonumber(ARGV[2]))
local reply = { string.format('%d', now_ms()), redis.call('HGET', key, '_rev') or '0',
  redis.call('GET', mark) or '' }
local ids = {}
for i, member in ipairs(members) do
  ids[i] = string.match(member, '^0*(%d+)$') or member
  reply[#reply + 1] = ids[i]
end
if #ids > 0 then
  local raws = redis.call('HMGET', key, unpack(ids))
  for i = 1, #ids do
    reply[#reply + 1] = raws[i] or ''
  end
end
return reply
