-- Append records to one session, atomically, at most once per write id;
-- optionally first take off its last records, if they are still the ones the
-- caller read (a replaced turn).
-- KEYS: messages, meta, write ids, [sessions, ids, owner index (the no-owner
--   index for no owner), no-owner index, [owner's usage that day, the day's
--   usage by owner]]
--   With only the three session keys (Redis Cluster: the indexes live in other
--   slots) the caller updates the indexes and the owner's usage itself, from
--   the reply.
-- ARGV: session id, now ms, ttl ms (0: none), cap (0: none), title,
--       given owner ('' none), owner of KEYS[6] ('' when it is the no-owner
--       index), input, output, total tokens, usage keys' ttl ms,
--       write id ('' none), must exist ('1': only append to a live session),
--       expected length (-1: a plain append), n, the n last entries expected,
--       records...
-- Reply: {count, effective owner, applied (1, or 0 for a repeated write id)};
--        {-1, recorded owner} when the given owner is not the recorded one;
--        {-2, recorded owner} when KEYS[6] is not that owner's index (retry);
--        {-3, ''} when the id is a LangGraph thread's (nothing written);
--        {-4, recorded owner} when the list is not what the caller expected;
--        {-5, ''} when the session must exist and does not (deleted).
-- The indexes live as long as their longest-lived session (_index_ttl.lua).
-- include: _index_ttl
local meta = redis.call('HMGET', KEYS[2], 'owner', 'kind')
if meta[2] == 'thread' then return {-3, ''} end
local recorded = meta[1]
local given = ARGV[6]
if recorded and given ~= '' and given ~= recorded then return {-1, recorded} end
local owner = recorded or given
local wid = ARGV[12]
-- A retry of a write that was applied (its reply was lost): report, do not redo.
if wid ~= '' and redis.call('ZSCORE', KEYS[3], wid) then
  return {tonumber(redis.call('HGET', KEYS[2], 'count') or '0'), owner, 0}
end
if ARGV[13] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return {-5, ''} end
local indexed = #KEYS >= 5
if indexed and owner ~= ARGV[7] then return {-2, owner} end
local expected = tonumber(ARGV[14])
local tail = tonumber(ARGV[15])
if expected >= 0 then
  if redis.call('LLEN', KEYS[1]) ~= expected then return {-4, owner} end
  if tail > 0 then
    local stored = redis.call('LRANGE', KEYS[1], -tail, -1)
    for k = 1, tail do
      if stored[k] ~= ARGV[15 + k] then return {-4, owner} end
    end
    redis.call('LTRIM', KEYS[1], 0, -tail - 1)
  end
end
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local n = #ARGV
-- unpack() has a stack limit: push in slices.
local i = 16 + tail
local count = 0
while i <= n do
  local j = math.min(i + 999, n)
  count = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if cap > 0 and count > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  count = cap
  -- Keep whole turns: start at the first human message (looking at most 64
  -- records in, so the call stays short; without one there, keep them all).
  local head = redis.call('LRANGE', KEYS[1], 0, math.min(count, 64) - 1)
  for k = 1, #head do
    if string.sub(head[k], 1, 16) == '{"type":"human"' .. ',' then
      if k > 1 then
        redis.call('LTRIM', KEYS[1], k - 1, -1)
        count = count - (k - 1)
      end
      break
    end
  end
end
redis.call('HSETNX', KEYS[2], 'created', now)
redis.call('HSET', KEYS[2], 'updated', now, 'count', count)
local tokens_in, tokens_out = tonumber(ARGV[8]), tonumber(ARGV[9])
local tokens = tonumber(ARGV[10])
if tokens_in + tokens_out + tokens > 0 then
  redis.call('HINCRBY', KEYS[2], 'input_tokens', tokens_in)
  redis.call('HINCRBY', KEYS[2], 'output_tokens', tokens_out)
  redis.call('HINCRBY', KEYS[2], 'total_tokens', tokens)
  if indexed and owner ~= '' and KEYS[9] then
    redis.call('HINCRBY', KEYS[8], 'input', tokens_in)
    redis.call('HINCRBY', KEYS[8], 'output', tokens_out)
    redis.call('HINCRBY', KEYS[8], 'total', tokens)
    redis.call('PEXPIRE', KEYS[8], ARGV[11])
    redis.call('ZINCRBY', KEYS[9], tokens, owner)
    redis.call('PEXPIRE', KEYS[9], ARGV[11])
  end
end
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[2], 'title', ARGV[5]) end
if given ~= '' and not recorded then redis.call('HSET', KEYS[2], 'owner', given) end
if wid ~= '' then
  redis.call('ZADD', KEYS[3], now, wid)
  -- The ids of the last 64 writes: a retry comes within seconds.
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -65)
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  if wid ~= '' then redis.call('PEXPIRE', KEYS[3], ttl) end
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
if indexed then
  index_session(KEYS[4], KEYS[5], KEYS[6], ARGV[1], now, ttl)
  if owner ~= '' and not recorded then redis.call('ZREM', KEYS[7], ARGV[1]) end
  if ttl > 0 then
    -- Entries older than the TTL are expired sessions: a few leave the
    -- indexes with every write, so the indexes do not outgrow the sessions.
    local cutoff = '(' .. (tonumber(now) - ttl)
    local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff, 'LIMIT', 0, 16)
    if #gone > 0 then
      redis.call('ZREM', KEYS[5], unpack(gone))
      redis.call('ZREM', KEYS[7], unpack(gone))
      redis.call('ZREM', KEYS[4], unpack(gone))
    end
    local stale = redis.call('ZCOUNT', KEYS[6], '-inf', cutoff)
    if stale > 0 then
      redis.call('ZREMRANGEBYRANK', KEYS[6], 0, math.min(stale, 16) - 1)
    end
  end
end
return {count, owner, 1}
