-- Write whole sessions (see maintenance.import_sessions).
-- KEYS: sessions, ids, then per session: messages, meta, owner index (the
--       no-owner index when the session has no owner)
-- ARGV: 'replace' or 'skip' (leave existing sessions alone), then per session:
--       session id, created, updated, title, owner ('' none), ttl ms left
--       (0 none), input, output, total tokens, record count n, n records
-- Reply: {sessions written, records written}
-- Each index is kept as long as the sessions added to it (_index_ttl.lua).
-- include: _index_ttl
local function zadd_all(key, pairs, ttl)
  local left = redis.call('PTTL', key)
  -- unpack() has a stack limit: add in slices of 500 members.
  for j = 1, #pairs, 1000 do
    redis.call('ZADD', key, unpack(pairs, j, math.min(j + 999, #pairs)))
  end
  if ttl ~= nil then index_keep(key, left, ttl) end
end
local replace = ARGV[1] == 'replace'
-- The indexes' entries, and the TTL each index needs (the longest of its
-- sessions', 0 when one has none).
local activity, ids, owners = {}, {}, {}
local need, owner_need = nil, {}
local written, records = 0, 0
local i = 2
local k = 3
while i <= #ARGV do
  local mkey, hkey, okey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local sid, updated, owner = ARGV[i], ARGV[i + 2], ARGV[i + 4]
  local ttl, n = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 9])
  local first = i + 10
  if replace or redis.call('EXISTS', hkey) == 0 then
    redis.call('DEL', mkey, hkey)
    local j = first
    while j < first + n do
      local last = math.min(j + 999, first + n - 1)
      redis.call('RPUSH', mkey, unpack(ARGV, j, last))
      j = last + 1
    end
    redis.call('HSET', hkey, 'created', ARGV[i + 1], 'updated', updated,
               'count', n, 'title', ARGV[i + 3])
    if owner ~= '' then redis.call('HSET', hkey, 'owner', owner) end
    local scores = owners[okey]
    if not scores then scores = {}; owners[okey] = scores end
    table.insert(scores, updated); table.insert(scores, sid)
    need = index_longer(need, ttl)
    owner_need[okey] = index_longer(owner_need[okey], ttl)
    local tin, tout, tall = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
    if tin ~= '0' or tout ~= '0' or tall ~= '0' then
      redis.call('HSET', hkey, 'input_tokens', tin, 'output_tokens', tout,
                 'total_tokens', tall)
    end
    if ttl > 0 then
      if n > 0 then redis.call('PEXPIRE', mkey, ttl) end
      redis.call('PEXPIRE', hkey, ttl)
    end
    table.insert(activity, updated); table.insert(activity, sid)
    table.insert(ids, 0); table.insert(ids, sid)
    written = written + 1
    records = records + n
  end
  i = first + n
  k = k + 3
end
zadd_all(KEYS[1], activity, need)
zadd_all(KEYS[2], ids, need)
for okey, scores in pairs(owners) do zadd_all(okey, scores, owner_need[okey]) end
return {written, records}
