-- Writes one book entry if the who-wins rule lets it (rules: cache/mod.rs).
-- KEYS[1] the books hash   KEYS[2] the id index
-- ARGV[1] book id          ARGV[2] writer: "fill" or "event"
-- ARGV[3] seen revision (fills only)
-- ARGV[4] version ("" for a fill that found the book gone: the tombstone keeps the entry's)
-- ARGV[5] kind "b" or "t"  ARGV[6] body   ARGV[7] max age in ms
-- ARGV[8] events: when the event occurred, in ms since the epoch; "" to trust the version
--         alone (an event without occurred_at, or a writer with nothing to check against)
-- Returns 1 written, 0 ignored (stale), -1 nothing to write (404 for a book never cached),
-- -2 unproven: the upsert event is older than what the cache has proven (see `proven`), so a
-- delete that followed it may have left a tombstone the cache no longer has; not written.
local key, index, id, writer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local seen, version, kind, body = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local max_age, occurred = tonumber(ARGV[7]), ARGV[8]
local now = now_ms()
local cur = load(redis.call('HGET', key, id), now, max_age)

if writer == 'event' then
  if cur ~= nil and not newer(version, cur.version) then return 0 end
  -- A delete needs no proof: it is a book's last event (storagesvc never reuses an id), so no
  -- tombstone can be missing after it. Written at once, its tombstone also stops a fill that
  -- read the book before the delete (a rebuild's page, a read); settled by storagesvc's 404
  -- instead, it would leave nothing for an uncached id, and that fill would bring it back.
  -- `proven` runs for deletes too: any event starts the cache's memory.
  local unproven = occurred ~= '' and not proven(key, now, max_age, tonumber(occurred))
  if unproven and kind == 'b' then
    keep_alive(key, index, max_age)
    return -2
  end
elseif version == '' then
  -- Unknown ids are not cached: a scan of random ids must not fill Redis with tombstones.
  if cur == nil then return -1 end
  if cur.rev > seen then return 0 end
  version = cur.version
elseif not fill_wins(cur, seen, version) then
  return 0
end

store(key, index, id, version, now, kind, body)
keep_alive(key, index, max_age)
return 1
