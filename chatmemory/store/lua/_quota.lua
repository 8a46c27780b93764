-- admit(turns_key, streams_key, usage_key, argv): admit one turn of one owner,
-- or say which limit refuses it and until when (quota.lua says what the keys
-- and argv hold, and the reply).
local function admit(turns_key, streams_key, usage_key, argv)
  local now = tonumber(argv[1])
  local per_minute = tonumber(argv[3])
  local streams = tonumber(argv[4])
  local per_day = tonumber(argv[5])
  if per_day > 0 then
    local spent = tonumber(redis.call('HGET', usage_key, 'total') or '0')
    if spent >= per_day then return {tonumber(argv[7]), 'tokens'} end
  end
  if per_minute > 0 then
    redis.call('ZREMRANGEBYSCORE', turns_key, '-inf', now - 60000)
    if redis.call('ZCARD', turns_key) >= per_minute then
      local oldest = redis.call('ZRANGE', turns_key, 0, 0, 'WITHSCORES')
      return {math.max(tonumber(oldest[2]) + 60000 - now, 1), 'turns'}
    end
  end
  if streams > 0 then
    -- A stream whose worker died never releases its slot: it lapses at its lease.
    redis.call('ZREMRANGEBYSCORE', streams_key, '-inf', now)
    if redis.call('ZCARD', streams_key) >= streams then
      local first = redis.call('ZRANGE', streams_key, 0, 0, 'WITHSCORES')
      return {math.max(tonumber(first[2]) - now, 1), 'streams'}
    end
    redis.call('ZADD', streams_key, now + tonumber(argv[6]), argv[2])
    redis.call('PEXPIRE', streams_key, argv[6])
  end
  if per_minute > 0 then
    redis.call('ZADD', turns_key, now, argv[2])
    redis.call('PEXPIRE', turns_key, 60000)
  end
  return {0, ''}
end
