-- Delete one session and its index entries.
-- KEYS: messages, meta, [sessions, ids, [owner index]]
-- ARGV: session id, owner of KEYS[5] ('' when absent)
-- Reply: {existed (0/1), recorded owner or ''};
--        {-2, recorded owner} when KEYS[5] is not that owner's index (retry).
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
local indexed = #KEYS >= 4
if indexed and owner ~= '' and owner ~= ARGV[2] then return {-2, owner} end
local existed = redis.call('DEL', KEYS[1], KEYS[2])
if existed > 1 then existed = 1 end
if indexed then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  if owner ~= '' then redis.call('ZREM', KEYS[5], ARGV[1]) end
end
return {existed, owner}
