#!lua flags=allow-oom
-- cancel: remove a job that has not started yet; with ARGV[3] = '1'
-- (delete), a dead or completed one too.
--
-- KEYS[1] pending    LIST
-- KEYS[2] scheduled  ZSET
-- KEYS[3] inflight   ZSET
-- KEYS[4] dead       ZSET
-- KEYS[5] jobs       HASH
-- KEYS[6] attempts   HASH
-- KEYS[7] errors     HASH
-- KEYS[8] history    HASH
-- KEYS[9] completed  ZSET
-- KEYS[10] results   HASH
--
-- ARGV[1] job id
-- ARGV[2] most pending entries looked at from each end of the list
-- ARGV[3] '1' to delete a finished (dead or completed) job as well
--
-- Returns: 1 = cancelled, 2 = running (nothing changed), 3 = dead-lettered
-- (nothing changed), 5 = completed (nothing changed), 4 = pending but deeper in the list than looked
-- (nothing changed), 0 = no such job. A pending job is searched from both
-- ends, at most ARGV[2] entries each (LPOS ... MAXLEN, then an LREM that
-- stops where it is): the call's cost is bounded whatever the queue holds.
local id = ARGV[1]
local reach = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[3], id) then return 2 end
local finished = ARGV[3] == '1'
if redis.call('ZSCORE', KEYS[4], id) and not finished then return 3 end
if redis.call('ZSCORE', KEYS[9], id) and not finished then return 5 end
local removed = redis.call('ZREM', KEYS[2], id)
if finished then removed = removed + redis.call('ZREM', KEYS[4], id) + redis.call('ZREM', KEYS[9], id) end
if removed == 0 then
  if redis.call('LPOS', KEYS[1], id, 'MAXLEN', reach) then
    removed = redis.call('LREM', KEYS[1], 1, id)
  elseif redis.call('LPOS', KEYS[1], id, 'RANK', -1, 'MAXLEN', reach) then
    removed = redis.call('LREM', KEYS[1], -1, id)
  elseif redis.call('HEXISTS', KEYS[5], id) == 1 then
    return 4
  end
end
if removed == 0 then return 0 end
redis.call('HDEL', KEYS[5], id)
redis.call('HDEL', KEYS[6], id)
redis.call('HDEL', KEYS[7], id)
redis.call('HDEL', KEYS[8], id)
redis.call('HDEL', KEYS[10], id)
return 1
