#!lua flags=allow-oom
-- @include retain
-- fail: record failed attempts (fenced by lease token); each job is retried
-- later or dead-lettered.
--
-- allow-oom: a failure must be recorded even at maxmemory, or the job
-- would run again beside a retry.
--
-- KEYS[1] inflight   ZSET
-- KEYS[2] scheduled  ZSET  job id -> run-at (ms)
-- KEYS[3] dead       ZSET  job id -> died-at (ms)
-- KEYS[4] leases     HASH
-- KEYS[5] errors     HASH  job id -> last error
-- KEYS[6] stats      HASH
-- KEYS[7] attempts   HASH  job id -> attempts started
-- KEYS[8] history    HASH  job id -> attempt history (see retain)
-- KEYS[9] retention  HASH
-- KEYS[10] jobs      HASH  (trimmed dead jobs only)
-- KEYS[11] results   HASH  (trimmed dead jobs only)
-- KEYS[12..] per job with a lock count of 1, in job order: its idempotency key (released if this attempt holds it)
--
-- ARGV[1] number of jobs n
-- then 7 per job: id, token, retry delay in ms (-1 = dead-letter now), error,
-- lock count (0 or 1), the attempt's number (the count is raised to it:
-- defence in depth, the charge is in before the handler runs), and the
-- attempt's outcome for its history (retry, dead or timeout)
--
-- The dead-letter set is trimmed to the queue's retention in the same call
-- (at most the jobs dead-lettered here + 100).
--
-- Returns: n integers, 1 = recorded, 0 = stale lease; then the number of
-- dead jobs trimmed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local k = 12
local out = {}
local failed, retried, dead = 0, 0, 0
for i = 0, n - 1 do
  local b = 2 + i * 7
  local id = ARGV[b]
  local token = ARGV[b + 1]
  if ARGV[b + 4] == '1' then
    if redis.call('GET', KEYS[k]) == 'r:' .. token then redis.call('DEL', KEYS[k]) end
    k = k + 1
  end
  if redis.call('HGET', KEYS[4], id) == token then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HSET', KEYS[5], id, ARGV[b + 3])
    local attempt = tonumber(ARGV[b + 5])
    if tonumber(redis.call('HGET', KEYS[7], id) or '0') < attempt then redis.call('HSET', KEYS[7], id, attempt) end
    local h = redis.call('HGET', KEYS[8], id)
    -- A job failed before its handler started (its body is corrupt) gets
    -- an attempt opened and closed at once.
    if not is_open(h) then h = history_open(h, attempt, now) end
    redis.call('HSET', KEYS[8], id, history_close(h, now, ARGV[b + 6], ARGV[b + 3]))
    local delay = tonumber(ARGV[b + 2])
    if delay < 0 then
      redis.call('ZADD', KEYS[3], now, id)
      dead = dead + 1
    else
      redis.call('ZADD', KEYS[2], now + delay, id)
      retried = retried + 1
    end
    failed = failed + 1
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
if failed > 0 then redis.call('HINCRBY', KEYS[6], 'failed', failed) end
if retried > 0 then redis.call('HINCRBY', KEYS[6], 'retried', retried) end
local trimmed = 0
if dead > 0 then
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', dead)
  local r = retention(KEYS[9])
  trimmed = trim(KEYS[3], r.dead_max, now - r.dead_ttl, dead + 100, { KEYS[10], KEYS[7], KEYS[5], KEYS[11], KEYS[8] })
end
out[n + 1] = trimmed
return out
