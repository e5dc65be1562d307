#!lua
-- @include retain
-- start: for a batch of leased jobs of one queue, checked in order (two jobs
-- with the same key in one batch behave as if started one after the other),
-- each job's lease is checked, then, as its flags ask:
-- - check (flag 1): its idempotency key must not be completed, nor held by
--   another lease; with take (flag 4) it is then taken for this lease. Both
--   run ahead of the handler, with no attempt charged. A job whose key is
--   its own client id needs no take: its id is unique in the queue and its
--   lease already keeps other workers off it;
-- - charge (flag 2): its attempt is charged, sent as its handler starts.
-- An attempt is charged when its handler starts, never at lease time: a job
-- leased but never started (prefetch of a killed worker, a replayed dequeue)
-- costs no attempt when it comes back.
--
-- No allow-oom flag: starting work grows memory (the key's state), so at
-- maxmemory Redis refuses the whole call up front and the jobs are deferred.
--
-- KEYS[1] leases     HASH  job id -> lease token
-- KEYS[2] attempts   HASH  job id -> attempts started
-- KEYS[3] history    HASH  job id -> attempt history: a charged attempt is
--           opened there with its start time (see retain)
-- KEYS[4..] per job with the check flag, in job order: its idempotency
--           state, STRING 'd' (completed within the window) or 'r:<token>'
--           (running under that lease; expires with the lease)
--
-- ARGV[1] ttl (ms) of a running key: the visibility timeout, renewed by
--         every heartbeat, so the key lives exactly as long as the lease
-- ARGV[2] number of jobs n
-- ARGV[3] the worker's registry id, recorded with each charged attempt
-- then 3 per job: id, token, flags (the sum of 1 = check, 4 = take, 2 =
-- charge)
--
-- Returns: per job, the attempt number (>= 1; charged if the charge flag was
-- set) = go on; 0 = lease lost (do not run); -1 = the key already completed
-- (acknowledge without running); -2 = another live attempt holds the key
-- (defer).
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 3] end
local tokens = redis.call('HMGET', KEYS[1], unpack(ids))
local counts = redis.call('HMGET', KEYS[2], unpack(ids))
local function bit(flags, b) return math.floor(flags / b) % 2 == 1 end
-- Attempts per job after this call's charges, written in one HSET.
local charged, charged_ids = {}, {}
local k = 4
local out = {}
for i = 1, n do
  local b = i * 3 + 1
  local id, token, flags = ids[i], ARGV[b + 1], tonumber(ARGV[b + 2])
  local verdict = 1
  if tokens[i] ~= token then verdict = 0 end
  if bit(flags, 1) then
    local key = KEYS[k]
    k = k + 1
    if verdict == 1 then
      local v
      if bit(flags, 4) then
        -- Taken if free, else its state (one command).
        v = redis.call('SET', key, 'r:' .. token, 'NX', 'PX', ttl, 'GET')
      else
        v = redis.call('GET', key)
      end
      if v and string.sub(v, 1, 2) ~= 'r:' then
        verdict = -1
      elseif v and v ~= 'r:' .. token then
        verdict = -2
      end
    end
  end
  if verdict ~= 1 then
    out[i] = verdict
  else
    local count = charged[id] or tonumber(counts[i] or '0')
    if bit(flags, 2) then
      count = count + 1
      if not charged[id] then charged_ids[#charged_ids + 1] = id end
      charged[id] = count
      out[i] = count
    else
      out[i] = count + 1
    end
  end
end
if #charged_ids > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local histories = redis.call('HMGET', KEYS[3], unpack(charged_ids))
  local args, hargs = {}, {}
  for j, id in ipairs(charged_ids) do
    args[2 * j - 1] = id
    args[2 * j] = charged[id]
    hargs[2 * j - 1] = id
    hargs[2 * j] = history_open(histories[j], charged[id], now, ARGV[3])
  end
  redis.call('HSET', KEYS[2], unpack(args))
  redis.call('HSET', KEYS[3], unpack(hargs))
end
return out
