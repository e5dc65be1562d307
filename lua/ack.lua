-- ack: complete a batch of leased jobs (fenced by lease token).
--
-- KEYS[1] inflight   ZSET
-- KEYS[2] jobs       HASH
-- KEYS[3] attempts   HASH
-- KEYS[4] leases     HASH
-- KEYS[5] errors     HASH  job id -> last error
-- KEYS[6] stats      HASH
-- KEYS[7..] per job, in job order: its completion markers (done:<id or key>),
--           then its idempotency lock (lock:<key>), as counted in ARGV
--
-- ARGV[1] idempotency window (ms)
-- ARGV[2] number of jobs n
-- then 4 per job: id, token, marker count, lock count (0 or 1)
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
for i = 0, n - 1 do ids[i + 1] = ARGV[3 + i * 4] end
local tokens = redis.call('HMGET', KEYS[4], unpack(ids))
local k = 7
local out = {}
local acked = {}
for i = 0, n - 1 do
  local b = 3 + i * 4
  local token = ARGV[b + 1]
  local markers = tonumber(ARGV[b + 2])
  local locks = tonumber(ARGV[b + 3])
  for m = 0, markers - 1 do
    redis.call('SET', KEYS[k + m], 1, 'PX', window)
  end
  for l = 0, locks - 1 do
    local lock = KEYS[k + markers + l]
    if redis.call('GET', lock) == token then redis.call('DEL', lock) end
  end
  k = k + markers + locks
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
