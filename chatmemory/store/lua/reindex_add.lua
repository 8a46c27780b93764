-- Index a batch of sessions from their metadata (chatmemory_reindex, live).
-- KEYS: sessions, ids, then per session: meta, the index of the owner read
--       with it (the no-owner index when it had none)
-- ARGV: per session: session id, owner read with the metadata ('' none)
-- Reply: the number of sessions indexed.
-- A session deleted since its metadata was read is skipped, so the reindex
-- never brings back a ghost; scores only move forward (GT), so a write made
-- meanwhile keeps its newer activity.
local indexed = 0
for i = 1, #ARGV, 2 do
  local meta, okey = KEYS[i + 2], KEYS[i + 3]
  local sid, owner = ARGV[i], ARGV[i + 1]
  local found = redis.call('HMGET', meta, 'updated', 'owner')
  if found[1] and (found[2] or '') == owner then
    redis.call('ZADD', KEYS[1], 'GT', found[1], sid)
    redis.call('ZADD', KEYS[2], 'NX', 0, sid)
    redis.call('ZADD', okey, 'GT', found[1], sid)
    indexed = indexed + 1
  end
end
return indexed
