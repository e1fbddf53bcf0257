-- Applies storagesvc's whole list atomically (rules: cache/mod.rs).
-- KEYS[1] the books hash
-- ARGV[1] seen revision    ARGV[2] max age in ms
-- ARGV[3..] one triple per listed book: id, version, body
-- Returns {applied, ignored, removed}.
local key = KEYS[1]
local seen, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local applied, ignored, removed = 0, 0, 0
local listed = {}

for i = 3, #ARGV, 3 do
  local id, version, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  listed[id] = true
  local cur = load(redis.call('HGET', key, id), now, max_age)
  if fill_wins(cur, seen, version) then
    store(key, id, version, now, 'b', body)
    applied = applied + 1
  else
    ignored = ignored + 1
  end
end

-- Books storagesvc no longer lists. Entries unchanged since the read become tombstones (with
-- their last version, so a late older upsert cannot resurrect them); entries written after
-- the read are newer news than this answer and stay. Dead fields are pruned here.
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local id, raw = all[i], all[i + 1]
  if string.sub(id, 1, 1) ~= '_' and not listed[id] then
    local cur = load(raw, now, max_age)
    if cur == nil then
      redis.call('HDEL', key, id)
    elseif cur.kind == 'b' and cur.rev <= seen then
      store(key, id, cur.version, now, 't', '')
      removed = removed + 1
    end
  end
end

redis.call('HSET', key, '_list', string.format('%d', now))
redis.call('PEXPIRE', key, max_age)
return { applied, ignored, removed }
