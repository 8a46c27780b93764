-- Keep the latest N checkpoints of each namespace of a thread; drop the rest,
-- their writes, and the blobs no kept checkpoint refers to.
-- KEYS: 1 checkpoints, 2 blobs, 3 writes
-- ARGV: 1 N (>= 1)
-- Returns the number of checkpoints dropped.
local keep = tonumber(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
-- Members sort by namespace, then by id: walk them newest first.
local kept_in_ns, dropped, wanted = {}, 0, {}
for i = #members, 1, -1 do
  local member = members[i]
  local a = string.find(member, '\0', 1, true)
  local b = string.find(member, '\0', a + 1, true)
  local ns = string.sub(member, 1, a)
  local count = (kept_in_ns[ns] or 0) + 1
  kept_in_ns[ns] = count
  if count <= keep then
    local e = string.find(member, '\n\n', b + 1, true)
    for item in string.gmatch(string.sub(member, b + 1, e - 1), '[^\n]+') do
      wanted[ns .. item] = true
    end
  else
    local head = string.sub(member, 1, b)
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREMRANGEBYLEX', KEYS[3], '[' .. head,
               '(' .. string.sub(head, 1, -2) .. '\1')
    dropped = dropped + 1
  end
end
if dropped > 0 then
  local stale = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not wanted[field] then table.insert(stale, field) end
  end
  for j = 1, #stale, 1000 do
    redis.call('HDEL', KEYS[2], unpack(stale, j, math.min(j + 999, #stale)))
  end
end
return dropped
