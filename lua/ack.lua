#!lua flags=allow-oom
-- @include retain
-- ack: complete a batch of leased jobs (fenced by lease token).
--
-- KEYS[1] inflight   ZSET
-- KEYS[2] jobs       HASH
-- KEYS[3] attempts   HASH
-- KEYS[4] leases     HASH
-- KEYS[5] errors     HASH  job id -> last error
-- KEYS[6] stats      HASH
-- KEYS[7] completed  ZSET  job id -> finished at (ms): the retained history
-- KEYS[8] results    HASH  job id -> the handler's result
-- KEYS[9] history    HASH  job id -> attempt history (see retain)
-- KEYS[10] retention HASH
-- KEYS[11..] per job, in job order: its idempotency keys (idem:<id or key>),
--           as counted in ARGV; each is set to 'd' (completed) for the
--           window. The key a running attempt held is among them, so the
--           same write that marks it done releases it.
--
-- ARGV[1] idempotency window (ms)
-- ARGV[2] number of jobs n
-- then 4 per job: id, token, key count, result ('' = none)
--
-- allow-oom: an acknowledgement frees memory or keeps it bounded (the
-- completed history is trimmed in the same call), and refusing it at
-- maxmemory would make the job run again.
--
-- A completed job is kept (body, attempts, history, result) while the
-- queue's completed retention allows, else deleted now; the oldest kept
-- beyond the retention are trimmed here, at most n + 100 per call.
--
-- A stale lease (the attempt's lease expired and the job moved on) changes
-- nothing of the job's state, but its completion markers are still written:
-- the handler did succeed, so a redelivered copy must not run it again.
-- The job-state writes are one command per key for the whole batch.
--
-- Returns: n integers, 1 = acknowledged, 0 = stale lease; then the number
-- of completed jobs trimmed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = ARGV[1]
local n = tonumber(ARGV[2])
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[3 + i * 4] end
local tokens = redis.call('HMGET', KEYS[4], unpack(ids))
local k = 11
local out = {}
local acked, results = {}, {}
for i = 0, n - 1 do
  local b = 3 + i * 4
  local token = ARGV[b + 1]
  local markers = tonumber(ARGV[b + 2])
  for m = 0, markers - 1 do
    redis.call('SET', KEYS[k + m], 'd', 'PX', window)
  end
  k = k + markers
  if tokens[i + 1] == token then
    acked[#acked + 1] = ids[i + 1]
    if ARGV[b + 3] ~= '' then
      results[#results + 1] = ids[i + 1]
      results[#results + 1] = ARGV[b + 3]
    end
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
local trimmed = 0
if #acked > 0 then
  redis.call('ZREM', KEYS[1], unpack(acked))
  redis.call('HDEL', KEYS[4], unpack(acked))
  -- Errors exist only for jobs that failed before: skip the batch-wide HDEL
  -- (one argument per job) when there are none.
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('HDEL', KEYS[5], unpack(acked)) end
  redis.call('HINCRBY', KEYS[6], 'processed', #acked)
  local r = retention(KEYS[10])
  if r.completed_max > 0 and r.completed_ttl > 0 then
    local histories = redis.call('HMGET', KEYS[9], unpack(acked))
    local zargs, hargs = {}, {}
    for i, id in ipairs(acked) do
      zargs[2 * i - 1] = now
      zargs[2 * i] = id
      hargs[2 * i - 1] = id
      local h = histories[i]
      if is_open(h) then
        h = history_close(h, now, 'ok', nil)
      else
        -- Acknowledged without running: its idempotency key had completed.
        h = history_append(h, string.format('[0,%d,%d,"skipped",null]', now, now))
      end
      hargs[2 * i] = h
    end
    redis.call('ZADD', KEYS[7], unpack(zargs))
    redis.call('HSET', KEYS[9], unpack(hargs))
    if #results > 0 then redis.call('HSET', KEYS[8], unpack(results)) end
    trimmed = trim(KEYS[7], r.completed_max, now - r.completed_ttl, #acked + 100, { KEYS[2], KEYS[3], KEYS[5], KEYS[8], KEYS[9] })
  else
    redis.call('HDEL', KEYS[2], unpack(acked))
    redis.call('HDEL', KEYS[3], unpack(acked))
    redis.call('HDEL', KEYS[9], unpack(acked))
  end
end
out[n + 1] = trimmed
return out
