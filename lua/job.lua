#!lua flags=no-writes,allow-oom
-- job: everything stored for one job, read at one instant (a job that
-- moves between two reads could otherwise look completed without its
-- result, or in two states).
--
-- KEYS[1] jobs       HASH
-- KEYS[2] attempts   HASH
-- KEYS[3] errors     HASH
-- KEYS[4] history    HASH
-- KEYS[5] results    HASH
-- KEYS[6] inflight   ZSET
-- KEYS[7] scheduled  ZSET
-- KEYS[8] dead       ZSET
-- KEYS[9] completed  ZSET
-- KEYS[10] its completion marker (idem:<id>)
--
-- ARGV[1] job id
--
-- Returns: {body, attempts, error, history, result, inflight score,
-- scheduled score, dead score, completed score, marker}, each false when
-- absent.
local id = ARGV[1]
local out = {}
for i = 1, 5 do out[i] = redis.call('HGET', KEYS[i], id) end
for i = 6, 9 do out[i] = redis.call('ZSCORE', KEYS[i], id) end
out[10] = redis.call('GET', KEYS[10])
return out
