-- Index a batch of sessions from their metadata (chatmemory_reindex, live).
-- KEYS: sessions, ids, then per session: meta, the index of the owner read
--       with it (the no-owner index when it had none)
-- ARGV: per session: session id, owner read with the metadata ('' none)
-- Reply: the number of sessions indexed.
-- A session deleted since its metadata was read is skipped, so the reindex
-- never brings back a ghost; scores only move forward (GT), so a write made
-- meanwhile keeps its newer activity. Each index is kept as long as the
-- sessions added to it (_index_ttl.lua).
-- include: _index_ttl
local left, need = {}, {}
local function add(key, ttl, ...)
  if not left[key] then left[key] = redis.call('PTTL', key) end
  need[key] = index_longer(need[key], ttl)
  redis.call('ZADD', key, ...)
end
local indexed = 0
for i = 1, #ARGV, 2 do
  local meta, okey = KEYS[i + 2], KEYS[i + 3]
  local sid, owner = ARGV[i], ARGV[i + 1]
  local found = redis.call('HMGET', meta, 'updated', 'owner')
  if found[1] and (found[2] or '') == owner then
    -- Its TTL left (0: none; a key in its last millisecond still has one).
    local ttl = redis.call('PTTL', meta)
    if ttl < 0 then ttl = 0 elseif ttl == 0 then ttl = 1 end
    add(KEYS[1], ttl, 'GT', found[1], sid)
    add(KEYS[2], ttl, 'NX', 0, sid)
    add(okey, ttl, 'GT', found[1], sid)
    indexed = indexed + 1
  end
end
for key, ttl in pairs(need) do index_keep(key, left[key], ttl) end
return indexed
