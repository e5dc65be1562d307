-- heartbeat: extend the leases (and idempotency locks) of running jobs,
-- fenced by lease token.
--
-- KEYS[1] inflight   ZSET  job id -> lease deadline (ms)
-- KEYS[2] leases     HASH
-- KEYS[3..] per job with a lock count of 1, in job order: its idempotency lock
--
-- ARGV[1] visibility timeout (ms), also the new lock ttl
-- ARGV[2] number of jobs n
-- then 3 per job: id, token, lock count (0 or 1)
--
-- Returns: an array of n integers, 1 = extended, 0 = lease lost.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local k = 3
local out = {}
for i = 0, n - 1 do
  local b = 3 + i * 3
  local id = ARGV[b]
  local token = ARGV[b + 1]
  if ARGV[b + 2] == '1' then
    if redis.call('GET', KEYS[k]) == token then redis.call('PEXPIRE', KEYS[k], ttl) end
    k = k + 1
  end
  if redis.call('HGET', KEYS[2], id) == token then
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, id)
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
return out
