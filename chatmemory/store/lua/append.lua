-- Append records to one session, atomically; optionally first take off its
-- last records, if they are still the ones the caller read (a replaced turn).
-- KEYS: messages, meta, [sessions, ids, owner index, no-owner index, [owner's
--   usage that day, the day's usage by owner]]
--   With only the two session keys (Redis Cluster: the indexes live in other
--   slots) the caller updates the indexes and the owner's usage itself.
-- ARGV: session id, now ms, ttl ms (0: none), cap (0: none), title,
--       given owner ('' none), owner of KEYS[5] ('' when it is the no-owner
--       index), input, output, total tokens, usage keys' ttl ms,
--       expected length (-1: a plain append), n, the n last entries expected,
--       records...
-- Reply: {count, effective owner} on success;
--        {-1, recorded owner} when the given owner is not the recorded one;
--        {-2, recorded owner} when KEYS[5] is not that owner's index (retry);
--        {-3, ''} when the id is a LangGraph thread's (nothing written);
--        {-4, recorded owner} when the list is not what the caller expected.
local meta = redis.call('HMGET', KEYS[2], 'owner', 'kind')
if meta[2] == 'thread' then return {-3, ''} end
local recorded = meta[1]
local given = ARGV[6]
if recorded and given ~= '' and given ~= recorded then return {-1, recorded} end
local owner = recorded or given
local indexed = #KEYS >= 4
if indexed and owner ~= ARGV[7] then return {-2, owner} end
local expected = tonumber(ARGV[12])
local tail = tonumber(ARGV[13])
if expected >= 0 then
  if redis.call('LLEN', KEYS[1]) ~= expected then return {-4, owner} end
  if tail > 0 then
    local stored = redis.call('LRANGE', KEYS[1], -tail, -1)
    for k = 1, tail do
      if stored[k] ~= ARGV[13 + k] then return {-4, owner} end
    end
    redis.call('LTRIM', KEYS[1], 0, -tail - 1)
  end
end
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local n = #ARGV
-- unpack() has a stack limit: push in slices.
local i = 14 + tail
local count = 0
while i <= n do
  local j = math.min(i + 999, n)
  count = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if cap > 0 and count > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  count = cap
end
redis.call('HSETNX', KEYS[2], 'created', now)
redis.call('HSET', KEYS[2], 'updated', now, 'count', count)
local tokens_in, tokens_out = tonumber(ARGV[8]), tonumber(ARGV[9])
local tokens = tonumber(ARGV[10])
if tokens_in + tokens_out + tokens > 0 then
  redis.call('HINCRBY', KEYS[2], 'input_tokens', tokens_in)
  redis.call('HINCRBY', KEYS[2], 'output_tokens', tokens_out)
  redis.call('HINCRBY', KEYS[2], 'total_tokens', tokens)
  if indexed and owner ~= '' and KEYS[8] then
    redis.call('HINCRBY', KEYS[7], 'input', tokens_in)
    redis.call('HINCRBY', KEYS[7], 'output', tokens_out)
    redis.call('HINCRBY', KEYS[7], 'total', tokens)
    redis.call('PEXPIRE', KEYS[7], ARGV[11])
    redis.call('ZINCRBY', KEYS[8], tokens, owner)
    redis.call('PEXPIRE', KEYS[8], ARGV[11])
  end
end
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[2], 'title', ARGV[5]) end
if given ~= '' and not recorded then redis.call('HSET', KEYS[2], 'owner', given) end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if indexed then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  redis.call('ZADD', KEYS[5], now, ARGV[1])
  if owner ~= '' and not recorded then redis.call('ZREM', KEYS[6], ARGV[1]) end
end
return {count, owner}
