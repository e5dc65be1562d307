-- guard: the idempotency guard, run before the handler of each job that has
-- an idempotency key (its explicit key, or its client-chosen id); a batch of
-- jobs of one queue per call, checked in order (so two jobs with the same key
-- in one batch behave as if checked one after the other).
--
-- KEYS[2i-1] done    STRING completion marker of job i's key
-- KEYS[2i]   lock    STRING execution lock of job i's key (value = lease token)
--
-- ARGV[2i-1] lease token of job i's attempt
-- ARGV[2i]   lock ttl (ms): the job's timeout plus a margin, the longest the
--            handler can run, so a copy redelivered while it still runs waits
--
-- Returns: per job, 2 = the key already completed (acknowledge without
-- running), 1 = lock taken (run the handler), 0 = another live execution
-- holds the lock (defer).
local out = {}
for i = 1, #KEYS / 2 do
  local done, lock, token = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i - 1]
  if redis.call('EXISTS', done) == 1 then
    out[i] = 2
  else
    local holder = redis.call('GET', lock)
    if holder and holder ~= token then
      out[i] = 0
    else
      redis.call('SET', lock, token, 'PX', ARGV[2 * i])
      out[i] = 1
    end
  end
end
return out
