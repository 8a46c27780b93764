-- Index TTLs (included by every script that adds sessions to an index): an
-- index key lives at least as long as every session added to it, so it goes
-- once they have all expired, and never before one of them. A session without
-- a TTL (ttl 0) keeps its indexes for ever. An index's TTL is only ever
-- lengthened here (a shorter CHATMEMORY_TTL must not drop older sessions),
-- and an index without one is kept for ever.

-- Keep the index `key` for a session that lives `ttl` ms more (0: for ever);
-- `left` is the index's PTTL from before the script added to it (-2: the key
-- was new, so its TTL is set whatever the ZADD made of it).
local function index_keep(key, left, ttl)
  if ttl == 0 then
    if left >= 0 then redis.call('PERSIST', key) end
  elseif left ~= -1 and left < ttl then
    -- A 64th longer than needed: the writes that follow for a while find the
    -- index long enough already and leave it alone.
    redis.call('PEXPIRE', key, ttl + math.floor(ttl / 64))
  end
end
