#!lua flags=allow-oom
-- purge: delete up to a bounded number of jobs from one state of a queue
-- (pending, scheduled, dead or completed), with everything stored for them.
-- The caller loops until 0.
--
-- KEYS[1] the state: pending LIST, or scheduled / dead / completed ZSET
-- KEYS[2] jobs       HASH
-- KEYS[3] attempts   HASH
-- KEYS[4] errors     HASH
-- KEYS[5] history    HASH
-- KEYS[6] results    HASH
--
-- ARGV[1] 'list' or 'zset' (the type of KEYS[1])
-- ARGV[2] max jobs deleted by this call
--
-- Returns: the number of jobs deleted.
local limit = tonumber(ARGV[2])
local ids
if ARGV[1] == 'list' then
  ids = redis.call('RPOP', KEYS[1], limit)
  if not ids then return 0 end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
  if #ids == 0 then return 0 end
  redis.call('ZREM', KEYS[1], unpack(ids))
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
redis.call('HDEL', KEYS[4], unpack(ids))
redis.call('HDEL', KEYS[5], unpack(ids))
redis.call('HDEL', KEYS[6], unpack(ids))
return #ids
