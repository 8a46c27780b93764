-- Give one session a new owner, if it still has the old one.
-- KEYS: meta.  ARGV: old owner, new owner.  Reply: 1 moved, 0 not.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
