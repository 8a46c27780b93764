-- Delete one conversation (a chat session, or a LangGraph thread: its data
-- keys are deleted too) and its index entries.
-- KEYS: messages, meta, checkpoints, blobs, writes, write ids,
--       [sessions, ids, owner index, no-owner index]
-- ARGV: session id, owner of KEYS[9] ('' when it is the no-owner index)
-- Reply: {existed (0/1), recorded owner or ''};
--        {-2, recorded owner} when KEYS[9] is not that owner's index (retry).
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
local indexed = #KEYS >= 8
if indexed and owner ~= ARGV[2] then return {-2, owner} end
local existed = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
if existed > 1 then existed = 1 end
if indexed then
  redis.call('ZREM', KEYS[7], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('ZREM', KEYS[9], ARGV[1])
  redis.call('ZREM', KEYS[10], ARGV[1])
end
return {existed, owner}
