-- Admit one turn of one owner, or say which limit refuses it and until when.
-- KEYS: the owner's turns (zset), open streams (zset), usage today (hash);
--       all three share the owner's hash tag, so one slot on Redis Cluster.
-- ARGV: now ms, turn id, turns per minute (0: none), concurrent streams (0:
--       none), tokens per day (0: none), stream lease ms, ms to next UTC midnight
-- Reply: {0, ''} admitted (the turn holds a stream slot until released);
--        {ms to wait, 'turns' | 'streams' | 'tokens'} refused, nothing changed.
local now = tonumber(ARGV[1])
local per_minute = tonumber(ARGV[3])
local streams = tonumber(ARGV[4])
local per_day = tonumber(ARGV[5])
if per_day > 0 then
  local spent = tonumber(redis.call('HGET', KEYS[3], 'total') or '0')
  if spent >= per_day then return {tonumber(ARGV[7]), 'tokens'} end
end
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[1]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {math.max(tonumber(oldest[2]) + 60000 - now, 1), 'turns'}
  end
end
if streams > 0 then
  -- A stream whose worker died never releases its slot: it lapses at its lease.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= streams then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {math.max(tonumber(first[2]) - now, 1), 'streams'}
  end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
if per_minute > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 60000)
end
return {0, ''}
