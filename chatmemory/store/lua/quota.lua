-- Admit one turn of one owner, or say which limit refuses it and until when.
-- KEYS: the owner's turns (zset), open streams (zset), usage today (hash);
--       all three share the owner's hash tag, so one slot on Redis Cluster.
-- ARGV: now ms, turn id, turns per minute (0: none), concurrent streams (0:
--       none), tokens per day (0: none), stream lease ms, ms to next UTC midnight
-- Reply: {0, ''} admitted (the turn holds a stream slot until released);
--        {ms to wait, 'turns' | 'streams' | 'tokens'} refused, nothing changed.
-- include: _quota
return admit(KEYS[1], KEYS[2], KEYS[3], ARGV)
