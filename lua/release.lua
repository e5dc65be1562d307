#!lua flags=allow-oom
-- @include retain
-- release: give leased jobs back without spending an attempt (fenced by lease
-- token). Used for jobs deferred by the rate limiter, the circuit breaker or
-- the idempotency guard, and for jobs handed back at shutdown.
--
-- allow-oom: handing back at maxmemory keeps the job safe.
--
-- KEYS[1] inflight   ZSET
-- KEYS[2] scheduled  ZSET
-- KEYS[3] pending    LIST
-- KEYS[4] leases     HASH
-- KEYS[5] attempts   HASH  job id -> attempts started
-- KEYS[6] signal     LIST
-- KEYS[7] history    HASH  a refunded attempt is dropped from it
-- KEYS[8..] per job with a lock count of 1, in job order: its idempotency key (released if this attempt holds it)
--
-- ARGV[1] number of jobs n
-- then 5 per job: id, token, delay in ms (0 = visible again at once, at the
-- head of the queue), lock count (0 or 1), refund: 0, or the number of the
-- attempt whose handler started and is given back (handed back at shutdown,
-- or the worker could not run it at all): the count is set to one less,
-- whether or not that attempt's charge has arrived yet (a late charge finds
-- the lease gone and changes nothing)
--
-- Returns: an array of n integers, 1 = released, 0 = stale lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local k = 8
local out = {}
local now_ready = 0
for i = 0, n - 1 do
  local b = 2 + i * 5
  local id = ARGV[b]
  local token = ARGV[b + 1]
  if ARGV[b + 3] == '1' then
    if redis.call('GET', KEYS[k]) == 'r:' .. token then redis.call('DEL', KEYS[k]) end
    k = k + 1
  end
  if redis.call('HGET', KEYS[4], id) == token then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[4], id)
    local refund = tonumber(ARGV[b + 4])
    if refund > 1 then
      redis.call('HSET', KEYS[5], id, refund - 1)
    elseif refund == 1 then
      redis.call('HDEL', KEYS[5], id)
    end
    if refund > 0 then
      local h = history_drop(redis.call('HGET', KEYS[7], id))
      if h then redis.call('HSET', KEYS[7], id, h) else redis.call('HDEL', KEYS[7], id) end
    end
    local delay = tonumber(ARGV[b + 2])
    if delay > 0 then
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      redis.call('RPUSH', KEYS[3], id)
      now_ready = now_ready + 1
    end
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
if now_ready > 0 and redis.call('LLEN', KEYS[6]) == 0 then redis.call('LPUSH', KEYS[6], 1) end
return out
