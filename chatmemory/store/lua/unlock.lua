-- Release a turn lock if it is still ours. KEYS: lock.  ARGV: token.
-- Reply: 1 when released, 0 when it had expired or was taken by another turn.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
