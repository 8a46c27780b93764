-- Replace one list entry if it still holds what the caller read.
-- KEYS: messages
-- ARGV: index (negative counts from the end), expected entry, new entry
-- Reply: 1 when replaced, 0 when the entry changed meanwhile.
if redis.call('LINDEX', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
return 1
