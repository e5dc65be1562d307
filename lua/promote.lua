#!lua
-- promote: move due scheduled jobs (delayed, retrying, deferred) to pending.
--
-- KEYS[1] scheduled  ZSET  job id -> run-at (ms)
-- KEYS[2] pending    LIST
-- KEYS[3] signal     LIST
--
-- ARGV[1] max jobs moved by this call
--
-- Returns: {moved, wait} where wait is the ms until the next scheduled job is
-- due (0 if more are due now, -1 if none is scheduled).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('LPUSH', KEYS[2], unpack(due))
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], 1) end
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #next > 0 then
  wait = tonumber(next[2]) - now
  if wait < 0 then wait = 0 end
end
return {#due, wait}
