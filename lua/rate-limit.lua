#!lua
-- rate-limit: a sliding-window log. Allows at most N starts in any window of
-- PERIOD, shared by every worker on this Redis and namespace. Takes a batch
-- of starts of one kind, granted in order while the window has room.
--
-- KEYS[1] the limit  ZSET  start member -> start time (ms)
--
-- ARGV[1] N (starts allowed per window)
-- ARGV[2] PERIOD (ms)
-- ARGV[3..] one member per start asked for, unique to it (its lease token)
--
-- Returns: per start, 0 = allowed (recorded), else the ms to wait until a
-- start would be allowed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = #ARGV - 2
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local room = limit - redis.call('ZCARD', KEYS[1])
local granted = math.max(0, math.min(n, room))
local out = {}
if granted > 0 then
  local zargs = {}
  for i = 1, granted do
    zargs[2 * i - 1] = now
    zargs[2 * i] = ARGV[2 + i]
    out[i] = 0
  end
  redis.call('ZADD', KEYS[1], unpack(zargs))
  redis.call('PEXPIRE', KEYS[1], period)
end
if granted < n then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + period - now
  if wait < 1 then wait = 1 end
  for i = granted + 1, n do out[i] = wait end
end
return out
