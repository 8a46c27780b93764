-- One page of an activity index, after dropping entries older than the TTL
-- (their keys have expired; at most 1000 per call, so a call stays short).
-- KEYS: the activity index, [ids]
-- ARGV: cutoff ms (0: no TTL), lowest score, offset, limit
-- Reply: {total, id...}
local cutoff = tonumber(ARGV[1])
if cutoff > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff,
                          'LIMIT', 0, 1000)
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    if KEYS[2] then redis.call('ZREM', KEYS[2], unpack(gone)) end
  end
end
-- Entries older than the cutoff that are left (more than 1000 expired) are
-- never counted nor shown.
local low = ARGV[2]
if cutoff > 0 and (low == '-inf' or tonumber(low) < cutoff) then low = cutoff end
local total = redis.call('ZCOUNT', KEYS[1], low, '+inf')
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', low,
                       'LIMIT', ARGV[3], ARGV[4])
table.insert(ids, 1, total)
return ids
