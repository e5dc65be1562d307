#!lua flags=allow-oom
-- heartbeat: extend the leases of running jobs, fenced by lease token, and
-- the idempotency keys they hold with them (a key lives as long as its lease).
--
-- allow-oom: renewing shrinks nothing and grows nothing, and a full Redis
-- must never make a running job lose its lease (and run twice).
--
-- KEYS[1] inflight   ZSET  job id -> lease deadline (ms)
-- KEYS[2] leases     HASH
-- KEYS[3..] per job with a key flag of 1, in job order: its idempotency key
--
-- ARGV[1] visibility timeout (ms)
-- ARGV[2] number of jobs n
-- then 3 per job: id, token, key flag (0 or 1)
--
-- Returns: an array of n integers, 1 = extended, 0 = lease lost.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local vt = tonumber(ARGV[1])
local deadline = now + vt
local n = tonumber(ARGV[2])
local k = 3
local out = {}
for i = 0, n - 1 do
  local b = 3 + i * 3
  local id, token = ARGV[b], ARGV[b + 1]
  local alive = redis.call('HGET', KEYS[2], id) == token
  if alive then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
  if ARGV[b + 2] == '1' then
    if alive and redis.call('GET', KEYS[k]) == 'r:' .. token then
      redis.call('PEXPIRE', KEYS[k], vt)
    end
    k = k + 1
  end
end
return out
