-- Delete a LangGraph thread: its checkpoints, blobs and writes, and, when the
-- metadata is a thread's, the metadata and the index entries.
-- KEYS: 1 meta, 2 checkpoints, 3 blobs, 4 writes, then, off Cluster,
--       5 sessions, 6 ids, 7 the owner index (the no-owner index for ''),
--       8 the no-owner index
-- ARGV: 1 thread id, 2 owner indexed
-- Returns {status, owner}: 1 deleted, 0 nothing there, -2 call again with
-- that owner's index key.
local info = redis.call('HMGET', KEYS[1], 'kind', 'owner')
local owner = info[2] or ''
if info[1] == 'thread' then
  if #KEYS > 4 and owner ~= ARGV[2] then return {-2, owner} end
  redis.call('DEL', KEYS[1])
  if #KEYS > 4 then
    redis.call('ZREM', KEYS[5], ARGV[1])
    redis.call('ZREM', KEYS[6], ARGV[1])
    redis.call('ZREM', KEYS[7], ARGV[1])
  end
else
  owner = ''
end
local n = redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if n > 0 or info[1] == 'thread' then return {1, owner} end
return {0, owner}
