#!lua
-- enqueue: add a batch of jobs to one queue.
--
-- No allow-oom flag: at maxmemory the call is refused up front.
--
-- KEYS[1] pending    LIST  job ids ready to run (LPUSH in, RPOP out)
-- KEYS[2] scheduled  ZSET  job id -> run-at (ms, Redis clock)
-- KEYS[3] jobs       HASH  job id -> body
-- KEYS[4] stats      HASH  lifetime counters
-- KEYS[5] signal     LIST  wake-up marker for idle workers (at most one element)
-- KEYS[6..] idem     STRING idempotency state of the client-chosen id, one per job whose
--                    ARGV flag is 1, in job order ('d' = completed within the window)
--
-- ARGV[1] number of jobs n
-- then 5 per job: id, body, delay_ms (relative to now), run_at_ms (absolute, 0 = none), has_marker (0|1)
--
-- Returns: an array of n integers, 1 = enqueued, 0 = duplicate (the id is still
-- somewhere in the queue's lifecycle, or completed within the idempotency window).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local out = {}
local ready = {}
local marker = 6
local enqueued = 0
for i = 0, n - 1 do
  local b = 2 + i * 5
  local id = ARGV[b]
  local dup = false
  if ARGV[b + 4] == '1' then
    local v = redis.call('GET', KEYS[marker])
    dup = v ~= false and string.sub(v, 1, 2) ~= 'r:'
    marker = marker + 1
  end
  if not dup and redis.call('HSETNX', KEYS[3], id, ARGV[b + 1]) == 1 then
    local run_at = tonumber(ARGV[b + 3])
    if run_at == 0 then run_at = now + tonumber(ARGV[b + 2]) end
    if run_at > now then
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      ready[#ready + 1] = id
    end
    enqueued = enqueued + 1
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
if #ready > 0 then
  redis.call('LPUSH', KEYS[1], unpack(ready))
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], 1) end
end
if enqueued > 0 then redis.call('HINCRBY', KEYS[4], 'enqueued', enqueued) end
return out
