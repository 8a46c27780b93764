-- Add sessions to one index, which lives as long as they do (Redis Cluster:
-- an index is in another slot than its sessions, so writes, imports and the
-- reindex add to it with this, after the session's own script).
-- KEYS: the index
-- ARGV: ms the sessions live (0: for ever), then ZADD's arguments
-- include: _index_keep
local left = redis.call('PTTL', KEYS[1])
redis.call('ZADD', KEYS[1], unpack(ARGV, 2))
index_keep(KEYS[1], left, tonumber(ARGV[1]))
return 1
