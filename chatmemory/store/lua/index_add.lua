-- Add sessions to one index, which lives as long as they do (Redis Cluster:
-- an index is in another slot than its sessions, so writes, imports and the
-- reindex add to it with this, after the session's own script).
-- KEYS: the index
-- ARGV: ms the sessions live (0: for ever), activity before which an entry is
--       an expired session (0: none; a few such entries leave the index, as
--       the one-server scripts do with every write), then ZADD's arguments
-- include: _index_keep
local left = redis.call('PTTL', KEYS[1])
redis.call('ZADD', KEYS[1], unpack(ARGV, 3))
index_keep(KEYS[1], left, tonumber(ARGV[1]))
if ARGV[2] ~= '0' then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 16)
  if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
end
return 1
