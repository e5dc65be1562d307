#!lua flags=allow-oom
-- cancel: remove a job that has not started yet.
--
-- KEYS[1] pending    LIST
-- KEYS[2] scheduled  ZSET
-- KEYS[3] inflight   ZSET
-- KEYS[4] dead       ZSET
-- KEYS[5] jobs       HASH
-- KEYS[6] attempts   HASH
-- KEYS[7] errors     HASH
--
-- ARGV[1] job id
--
-- Returns: 1 = cancelled, 2 = running (nothing changed), 3 = dead-lettered
-- (nothing changed), 0 = no such job. A pending job is found with LREM, which
-- is O(pending): an operator's command, never on the hot path.
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[3], id) then return 2 end
if redis.call('ZSCORE', KEYS[4], id) then return 3 end
local removed = redis.call('ZREM', KEYS[2], id)
if removed == 0 then removed = redis.call('LREM', KEYS[1], 1, id) end
if removed == 0 then return 0 end
redis.call('HDEL', KEYS[5], id)
redis.call('HDEL', KEYS[6], id)
redis.call('HDEL', KEYS[7], id)
return 1
