-- Release a turn lock if it is still ours; with a second key, also give back
-- the turn's stream slot (one server only: on Redis Cluster the owner's
-- streams are in another slot, and the slot goes back in the same pipeline).
-- KEYS: lock[, the owner's open streams].  ARGV: token[, turn id].
-- Reply: 1 when released, 0 when it had expired or was taken by another turn.
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  released = redis.call('DEL', KEYS[1])
end
if KEYS[2] then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return released
