-- heartbeat: extend the leases of running jobs, fenced by lease token.
--
-- KEYS[1] inflight   ZSET  job id -> lease deadline (ms)
-- KEYS[2] leases     HASH
--
-- ARGV[1] visibility timeout (ms)
-- ARGV[2] number of jobs n
-- then 2 per job: id, token
--
-- Returns: an array of n integers, 1 = extended, 0 = lease lost.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local id = ARGV[3 + i * 2]
  if redis.call('HGET', KEYS[2], id) == ARGV[4 + i * 2] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
return out
