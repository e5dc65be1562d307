#!lua
-- requeue: move dead-lettered jobs back to pending with a fresh retry budget.
--
-- KEYS[1] dead       ZSET
-- KEYS[2] pending    LIST
-- KEYS[3] attempts   HASH
-- KEYS[4] errors     HASH
-- KEYS[5] signal     LIST
--
-- ARGV[1] mode: 'ids' (ARGV[2..] are job ids) or 'oldest' (ARGV[2] = max jobs)
--
-- Returns: the number of jobs moved.
local ids
if ARGV[1] == 'oldest' then
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
else
  ids = {}
  for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then ids[#ids + 1] = ARGV[i] end
  end
end
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
redis.call('HDEL', KEYS[4], unpack(ids))
redis.call('LPUSH', KEYS[2], unpack(ids))
if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], 1) end
return #ids
