-- Read checkpoints with their channel blobs and pending writes.
-- KEYS: 1 checkpoints, 2 blobs, 3 writes
-- ARGV: 1 mode: 'range' (checkpoints in a lex range, newest first) or 'exact'
--       (the checkpoints of the given prefixes, in that order)
--   range: 2 max, 3 min, 4 limit (-1: all), 5 '1' with blobs and writes, '0'
--          the checkpoint members only
--   exact: 2.. member prefixes (ns \0 checkpoint id \0)
-- Returns a flat list: per checkpoint, its member, then (unless members only)
-- the number of blob values and the values (nil when missing, in the order of
-- the member's manifest), then the number of writes and the writes.
local function bump(head) return string.sub(head, 1, -2) .. '\1' end
local members = {}
local full = true
if ARGV[1] == 'range' then
  members = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3],
                       'LIMIT', 0, tonumber(ARGV[4]))
  full = ARGV[5] == '1'
else
  for i = 2, #ARGV do
    local found = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[i],
                             '(' .. bump(ARGV[i]), 'LIMIT', 0, 1)
    if found[1] then table.insert(members, found[1]) end
  end
end
local out = {}
for _, member in ipairs(members) do
  table.insert(out, member)
  if full then
    -- member: ns \0 id \0 manifest \n\n payload; the manifest lists
    -- "channel \0 version" items separated by \n.
    local a = string.find(member, '\0', 1, true)
    local b = string.find(member, '\0', a + 1, true)
    local head = string.sub(member, 1, b)
    local ns = string.sub(member, 1, a)
    local e = string.find(member, '\n\n', b + 1, true)
    local fields = {}
    for item in string.gmatch(string.sub(member, b + 1, e - 1), '[^\n]+') do
      table.insert(fields, ns .. item)
    end
    table.insert(out, #fields)
    if #fields > 0 then
      local values = redis.call('HMGET', KEYS[2], unpack(fields))
      for k = 1, #fields do table.insert(out, values[k]) end
    end
    local writes = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. head,
                              '(' .. bump(head))
    table.insert(out, #writes)
    for _, w in ipairs(writes) do table.insert(out, w) end
  end
end
return out
