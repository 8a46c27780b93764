-- A session's metadata and its owner's turn admitted (quota.lua), in one
-- script: one server only (on Redis Cluster the owner's keys are in another
-- slot: the two go in one pipeline instead).
-- KEYS: the session's meta (hash), then quota.lua's three keys.
-- ARGV: quota.lua's.
-- Reply: {HGETALL of the meta (flat), PTTL of the meta, quota.lua's reply}.
-- include: _quota
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  admit(KEYS[2], KEYS[3], KEYS[4], ARGV),
}
