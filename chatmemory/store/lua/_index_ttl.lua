-- Index TTLs: index_keep (_index_keep.lua, which says how index TTLs work)
-- and the helpers of the scripts that add sessions to indexes.
-- include: _index_keep

-- What an index needs for sessions of TTLs `need` (nil: none yet) and `ttl`.
local function index_longer(need, ttl)
  if need == nil then return ttl end
  if need == 0 or ttl == 0 then return 0 end
  return math.max(need, ttl)
end

-- Add a session active at `now` that lives `ttl` ms more (0: for ever) to the
-- activity, id and owner indexes (a write's three).
local function index_session(sessions, ids, owned, sid, now, ttl)
  local left1, left2 = redis.call('PTTL', sessions), redis.call('PTTL', ids)
  local left3 = redis.call('PTTL', owned)
  redis.call('ZADD', sessions, now, sid)
  redis.call('ZADD', ids, 0, sid)
  redis.call('ZADD', owned, now, sid)
  index_keep(sessions, left1, ttl)
  index_keep(ids, left2, ttl)
  index_keep(owned, left3, ttl)
end
