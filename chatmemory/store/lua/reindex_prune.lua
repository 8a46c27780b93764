-- Drop index entries whose session is gone (chatmemory_reindex, live).
-- KEYS: index, second index (or the first again), then per id: meta
-- ARGV: '' (any owner will do) or '=' .. owner (the meta's owner must be it;
--       '=' alone: no owner, for the no-owner index), ids...
-- Reply: {entries removed, the longest TTL left of the sessions kept (ms;
--        0: one has none; -1: none kept)}.
local removed, longest = 0, -1
local want = nil
if ARGV[1] ~= '' then want = string.sub(ARGV[1], 2) end
for i = 2, #ARGV do
  local meta = KEYS[i + 1]
  local left = redis.call('PTTL', meta)
  local keep = left ~= -2
  if keep and want then
    keep = (redis.call('HGET', meta, 'owner') or '') == want
  end
  if not keep then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    removed = removed + 1
  elseif left == -1 then
    longest = 0
  elseif longest ~= 0 then
    longest = math.max(longest, left, 1)
  end
end
return {removed, longest}
