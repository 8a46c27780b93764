-- Create an empty session (no-op when it exists).
-- KEYS: meta, [sessions, ids, owner index (the no-owner one for ''), no-owner]
-- ARGV: session id, now ms, ttl ms (0: none), title, owner ('' none)
-- Reply: 1 created, 0 existed.
-- include: _index_ttl
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'created', now, 'updated', now, 'count', 0)
-- No title field for an untitled session: the first human message names it.
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'title', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[5]) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
if #KEYS >= 3 then
  index_session(KEYS[2], KEYS[3], KEYS[4], ARGV[1], now, ttl)
end
return 1
