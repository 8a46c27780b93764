-- Store one LangGraph checkpoint, its new channel blobs and the thread's metadata.
-- KEYS: 1 meta, 2 checkpoints, 3 blobs, 4 writes, 5 messages (a history
--       session's list: only read), then, off Cluster, 6 sessions, 7 ids,
--       8 the owner index (the no-owner index for ''), 9 the no-owner index
-- ARGV: 1 thread id, 2 now ms, 3 ttl ms (0: none), 4 the checkpoint's member
--       prefix (ns \0 id \0; '' to only write the metadata), 5 the member, 6 title ('' none), 7 owner given
--       ('' none), 8 owner indexed, 9 message count ('' unchanged),
--       10 must exist ('1': refuse to write a thread that is gone),
--       then blob field, value pairs
-- Returns {status, owner}: 1 done, -1 the thread has another owner, -2 call
-- again with that owner's index key, -3 the id is a chat history session,
-- -4 the thread must exist and does not (deleted meanwhile): nothing written.
-- include: _index_ttl
local info = redis.call('HMGET', KEYS[1], 'kind', 'owner', 'created')
local kind, owner, created = info[1], info[2], info[3]
if created and kind ~= 'thread' and redis.call('EXISTS', KEYS[5]) == 1 then
  return {-3, ''}
end
if not created and ARGV[10] == '1' then return {-4, ''} end
local given = ARGV[7]
if owner and given ~= '' and owner ~= given then return {-1, owner} end
local effective = owner or given
if #KEYS > 5 and effective ~= ARGV[8] then return {-2, effective} end
local now, ttl = ARGV[2], tonumber(ARGV[3])
local head = ARGV[4]
if head ~= '' then
  -- A checkpoint stored again replaces the first copy (puts are idempotent).
  redis.call('ZREMRANGEBYLEX', KEYS[2], '[' .. head,
             '(' .. string.sub(head, 1, -2) .. '\1')
  redis.call('ZADD', KEYS[2], 0, ARGV[5])
end
local n = #ARGV
local i = 11
while i <= n do
  local j = math.min(i + 999, n)
  redis.call('HSET', KEYS[3], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', KEYS[1], 'kind', 'thread', 'updated', now)
if not created then redis.call('HSET', KEYS[1], 'created', now) end
if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[1], 'title', ARGV[6]) end
if given ~= '' then redis.call('HSETNX', KEYS[1], 'owner', given) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'count', ARGV[9]) end
for k = 1, 4 do
  if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl)
  else redis.call('PERSIST', KEYS[k]) end
end
if #KEYS > 5 then
  index_session(KEYS[6], KEYS[7], KEYS[8], ARGV[1], now, ttl)
  if effective ~= '' and not owner then redis.call('ZREM', KEYS[9], ARGV[1]) end
end
return {1, effective}
