-- Set an index's TTL from its sessions' (chatmemory_reindex, once it has
-- checked every entry): none when one of them has none, else the longest TTL
-- left among them. With CHATMEMORY_TTL, never less than that TTL: a write
-- made since an entry was checked needs no more (the index may be shortened:
-- a key left without a TTL, or with a longer one, by sessions now gone).
-- Without it writers make the indexes they add to persistent, which cannot be
-- told from an index left so: the TTL is only lengthened.
-- KEYS: the index
-- ARGV: the longest TTL left (ms; 0: a session has none; -1: none checked),
--       CHATMEMORY_TTL in ms (0: none)
local longest, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
if longest == 0 then
  redis.call('PERSIST', KEYS[1])
elseif ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], math.max(longest, ttl))
elseif longest > 0 then
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < longest then redis.call('PEXPIRE', KEYS[1], longest) end
end
return 1
