#!lua flags=allow-oom
-- ack: complete a batch of leased jobs (fenced by lease token).
--
-- KEYS[1] inflight   ZSET
-- KEYS[2] jobs       HASH
-- KEYS[3] attempts   HASH
-- KEYS[4] leases     HASH
-- KEYS[5] errors     HASH  job id -> last error
-- KEYS[6] stats      HASH
-- KEYS[7..] per job, in job order: its idempotency keys (idem:<id or key>),
--           as counted in ARGV; each is set to 'd' (completed) for the
--           window. The key a running attempt held is among them, so the
--           same write that marks it done releases it.
--
-- ARGV[1] idempotency window (ms)
-- ARGV[2] number of jobs n
-- then 3 per job: id, token, key count
--
-- allow-oom: an acknowledgement frees the body, and refusing it at
-- maxmemory would make the job run again.
--
-- A stale lease (the attempt's lease expired and the job moved on) changes
-- nothing of the job's state, but its completion markers are still written:
-- the handler did succeed, so a redelivered copy must not run it again.
-- The job-state writes are one command per key for the whole batch.
--
-- Returns: an array of n integers, 1 = acknowledged, 0 = stale lease.
local window = ARGV[1]
local n = tonumber(ARGV[2])
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[3 + i * 3] end
local tokens = redis.call('HMGET', KEYS[4], unpack(ids))
local k = 7
local out = {}
local acked = {}
for i = 0, n - 1 do
  local b = 3 + i * 3
  local token = ARGV[b + 1]
  local markers = tonumber(ARGV[b + 2])
  for m = 0, markers - 1 do
    redis.call('SET', KEYS[k + m], 'd', 'PX', window)
  end
  k = k + markers
  if tokens[i + 1] == token then
    acked[#acked + 1] = ids[i + 1]
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
if #acked > 0 then
  redis.call('ZREM', KEYS[1], unpack(acked))
  redis.call('HDEL', KEYS[2], unpack(acked))
  redis.call('HDEL', KEYS[3], unpack(acked))
  redis.call('HDEL', KEYS[4], unpack(acked))
  -- Errors exist only for jobs that failed before: skip the batch-wide HDEL
  -- (one argument per job) when there are none.
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('HDEL', KEYS[5], unpack(acked)) end
  redis.call('HINCRBY', KEYS[6], 'processed', #acked)
end
return out
