-- guard: the idempotency guard, run before the handler of a job that has an
-- idempotency key (its explicit key, or its client-chosen id).
--
-- KEYS[1] done       STRING completion marker of the key
-- KEYS[2] lock       STRING execution lock of the key (value = lease token)
--
-- ARGV[1] lease token of this attempt
-- ARGV[2] lock ttl (ms): the job's timeout plus a margin, the longest the
--         handler can run, so a copy redelivered while it still runs waits
--
-- Returns: 2 = the key already completed (acknowledge without running),
-- 1 = lock taken (run the handler), 0 = another live execution holds the lock
-- (defer).
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
