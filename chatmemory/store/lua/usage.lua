-- Add one write's tokens to its owner's day, at most once per write id (Redis
-- Cluster's second step of a write: the owner's keys are in another slot than
-- the session's, so append.lua cannot add them; a retry of the step, or of the
-- whole write, must not count them twice).
-- KEYS: the owner's usage that day (hash), the owner's applied write ids
--       (zset: write id -> ms); both under the owner's hash tag, one slot.
-- ARGV: write id, input, output, total tokens, usage keys' ttl ms, now ms
-- Reply: the owner's total tokens that day, after this write (for the day's
--        ranking, which lives in yet another slot: ZADD GT with it).
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'input', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'output', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'total', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
  -- A retry comes within seconds: an hour of ids, at most 1,000, is plenty.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[6]) - 3600000)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1001)
  redis.call('PEXPIRE', KEYS[2], 3600000)
end
return tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
