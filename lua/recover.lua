#!lua flags=allow-oom
-- @include retain
-- recover: put jobs whose lease expired (dead or partitioned worker) back in
-- pending, or dead-letter them when that lost attempt was their last.
--
-- allow-oom: recovery shrinks memory and must work at maxmemory.
--
-- KEYS[1] inflight   ZSET  job id -> lease deadline (ms)
-- KEYS[2] pending    LIST
-- KEYS[3] leases     HASH
-- KEYS[4] attempts   HASH
-- KEYS[5] jobs       HASH
-- KEYS[6] dead       ZSET
-- KEYS[7] errors     HASH
-- KEYS[8] stats      HASH
-- KEYS[9] signal     LIST
-- KEYS[10] history   HASH  the lost attempt is closed there as `lost`
-- KEYS[11] retention HASH
-- KEYS[12] results   HASH  (trimmed dead jobs only)
--
-- ARGV[1] max jobs moved by this call
--
-- The dead-letter set is trimmed to the queue's retention in the same call.
--
-- Returns: {recovered, dead_lettered, more, trimmed} where more = 1 if
-- expired leases remain.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local recovered, dead = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
  local attempts = tonumber(redis.call('HGET', KEYS[4], id) or '0')
  local h = redis.call('HGET', KEYS[10], id)
  if is_open(h) then
    redis.call('HSET', KEYS[10], id, history_close(h, now, 'lost', 'lease expired (worker lost)'))
  end
  local max_retries = nil
  local body = redis.call('HGET', KEYS[5], id)
  if body then
    -- Bodies open with their retry budget ({"r":N,...}), so it is read
    -- without decoding the whole payload; older bodies are decoded.
    max_retries = tonumber(string.match(body, '^{"r":(%d+)'))
    if max_retries == nil then
      local ok, job = pcall(cjson.decode, body)
      if ok and type(job) == 'table' then max_retries = tonumber(job['r']) end
    end
  end
  -- The lost attempt counts (it was charged when its handler started; a job
  -- leased but never started was not), so a job that kills its worker every
  -- time ends in the dead-letter set instead of looping forever.
  if max_retries ~= nil and attempts > max_retries then
    redis.call('ZADD', KEYS[6], now, id)
    redis.call('HSET', KEYS[7], id, 'lease expired on attempt ' .. attempts .. ' (worker lost); no retries left')
    dead = dead + 1
  else
    redis.call('RPUSH', KEYS[2], id)
    recovered = recovered + 1
  end
end
if recovered > 0 then
  redis.call('HINCRBY', KEYS[8], 'recovered', recovered)
  if redis.call('LLEN', KEYS[9]) == 0 then redis.call('LPUSH', KEYS[9], 1) end
end
local trimmed = 0
if dead > 0 then
  redis.call('HINCRBY', KEYS[8], 'dead_lettered', dead)
  redis.call('HINCRBY', KEYS[8], 'failed', dead)
  local r = retention(KEYS[11])
  trimmed = trim(KEYS[6], r.dead_max, now - r.dead_ttl, dead + 100, { KEYS[5], KEYS[4], KEYS[7], KEYS[12], KEYS[10] })
end
local more = 0
if #ids == limit then more = 1 end
return {recovered, dead, more, trimmed}
