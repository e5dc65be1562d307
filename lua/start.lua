#!lua
-- start: the last step before handlers run, for a batch of leased jobs of one
-- queue, checked in order (two jobs with the same key in one batch behave as
-- if started one after the other). For each job whose lease is still ours:
-- the idempotency guard, if it has a key, then the attempt is charged. An
-- attempt is charged here, when its handler starts, never at lease time: a
-- job leased but never started (prefetch of a killed worker, a replayed
-- dequeue) costs no attempt when it comes back.
--
-- No allow-oom flag: starting work grows memory (the key's state), so at
-- maxmemory Redis refuses the whole call up front and the jobs are deferred.
--
-- KEYS[1] leases     HASH  job id -> lease token
-- KEYS[2] attempts   HASH  job id -> attempts started
-- KEYS[3..] per job with a key flag of 1, in job order: its idempotency
--           state, STRING 'd' (completed within the window) or 'r:<token>'
--           (running under that lease; expires with the lease)
--
-- ARGV[1] ttl (ms) of a running key: the visibility timeout, renewed by
--         every heartbeat, so the key lives exactly as long as the lease
-- ARGV[2] number of jobs n
-- then 3 per job: id, token, key flag (0 or 1)
--
-- Returns: per job, the attempt number (>= 1) = started, run the handler;
-- 0 = lease lost (do not run); -1 = the key already completed (acknowledge
-- without running); -2 = another live attempt holds the key (defer).
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local k = 3
local out = {}
for i = 0, n - 1 do
  local b = 3 + i * 3
  local id, token = ARGV[b], ARGV[b + 1]
  local verdict = 1
  if redis.call('HGET', KEYS[1], id) ~= token then
    verdict = 0
  end
  if ARGV[b + 2] == '1' then
    local key = KEYS[k]
    k = k + 1
    if verdict == 1 then
      local v = redis.call('GET', key)
      if v and string.sub(v, 1, 2) ~= 'r:' then
        verdict = -1
      elseif v and v ~= 'r:' .. token then
        verdict = -2
      else
        redis.call('SET', key, 'r:' .. token, 'PX', ttl)
      end
    end
  end
  if verdict == 1 then
    out[i + 1] = redis.call('HINCRBY', KEYS[2], id, 1)
  else
    out[i + 1] = verdict
  end
end
return out
