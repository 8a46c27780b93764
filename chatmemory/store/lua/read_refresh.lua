-- Read the messages from ARGV[5] (0: all; -n: the last n) and restart the TTL.
-- KEYS: messages, meta, [sessions, owner index, ids]
-- ARGV: session id, now ms, ttl ms, owner of KEYS[4] ('' for the no-owner
--       index), start
-- Reply: {items, recorded owner or '', list length}; {-2, owner} when KEYS[4] is
-- not that owner's index (retry).
-- include: _index_ttl
local owner = ''
if redis.call('EXISTS', KEYS[2]) == 1 then
  owner = redis.call('HGET', KEYS[2], 'owner') or ''
  local indexed = #KEYS >= 3
  if indexed and owner ~= ARGV[4] then return {-2, owner} end
  local ttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  if indexed then
    -- The session's new activity, and indexes that outlive its new TTL.
    local left3, left4 = redis.call('PTTL', KEYS[3]), redis.call('PTTL', KEYS[4])
    redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
    redis.call('ZADD', KEYS[4], 'XX', ARGV[2], ARGV[1])
    index_keep(KEYS[3], left3, ttl)
    index_keep(KEYS[4], left4, ttl)
    index_keep(KEYS[5], redis.call('PTTL', KEYS[5]), ttl)
  end
end
return {redis.call('LRANGE', KEYS[1], ARGV[5], -1), owner, redis.call('LLEN', KEYS[1])}
