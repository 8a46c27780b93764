-- Rename a session. KEYS: meta.  ARGV: title.  Reply: 1, or 0 when absent.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
