-- Store a task's pending writes on a checkpoint.
-- KEYS: 1 writes, 2 meta, 3 checkpoints, 4 blobs (the last three: TTL only)
-- ARGV: 1 ttl ms (0: none), then per write: its prefix (ns \0 checkpoint id
--       \0 task id \0 idx \0), '1' to replace an earlier write of the same
--       task and idx (special channels) or '0' to keep it, the member
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local head = ARGV[i]
  local low, high = '[' .. head, '(' .. string.sub(head, 1, -2) .. '\1'
  if ARGV[i + 1] == '1' then
    redis.call('ZREMRANGEBYLEX', KEYS[1], low, high)
    redis.call('ZADD', KEYS[1], 0, ARGV[i + 2])
  elseif #redis.call('ZRANGEBYLEX', KEYS[1], low, high, 'LIMIT', 0, 1) == 0 then
    redis.call('ZADD', KEYS[1], 0, ARGV[i + 2])
  end
end
if ttl > 0 then
  for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ttl) end
end
return 1
