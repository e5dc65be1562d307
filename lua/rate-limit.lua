-- rate-limit: a sliding-window log. Allows at most N starts in any window of
-- PERIOD, shared by every worker on this Redis and namespace.
--
-- KEYS[1] the limit  ZSET  start member -> start time (ms)
--
-- ARGV[1] N (starts allowed per window)
-- ARGV[2] PERIOD (ms)
-- ARGV[3] a member unique to this start (the lease token)
--
-- Returns: 0 = allowed (the start is recorded), else the ms to wait until a
-- start would be allowed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + period - now
if wait < 1 then wait = 1 end
return wait
