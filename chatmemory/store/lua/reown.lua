-- Give one session a new owner, if it still has the old one.
-- KEYS: meta.  ARGV: old owner, new owner.
-- Reply: -1 not moved; when moved, the session's TTL left in ms (0: none),
-- which its new owner's index must outlive.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
return math.max(ttl, 1)
