#!lua
-- dequeue: lease up to n jobs of one queue to a worker. Safe to replay: fred
-- resends a command whose reply was lost to a reconnect, and the same token
-- prefix then returns the same batch (from its receipt) instead of leasing a
-- second one. No attempt is charged here (see start.lua).
--
-- No allow-oom flag: leasing grows memory, so at maxmemory Redis refuses the
-- call up front and jobs stay pending.
--
-- KEYS[1] pending    LIST  job ids ready to run
-- KEYS[2] inflight   ZSET  job id -> lease deadline (ms)
-- KEYS[3] jobs       HASH  job id -> body
-- KEYS[4] attempts   HASH  job id -> attempts started
-- KEYS[5] leases     HASH  job id -> lease token of the current attempt
-- KEYS[6] paused     STRING present while the queue is paused
-- KEYS[7] scheduled  ZSET  job id -> run-at (ms)
-- KEYS[8] signal     LIST  wake-up marker
-- KEYS[9] receipt    STRING the ids this call leased, newline-separated
-- KEYS[10..] receipts of earlier calls whose replies arrived: deleted
--
-- ARGV[1] max jobs n
-- ARGV[2] visibility timeout (ms)
-- ARGV[3] lease token prefix; the i-th job (1-based) gets token prefix .. i
-- ARGV[4] receipt ttl (ms)
-- ARGV[5] most body bytes to return: jobs past it (never the first) go back
--         to the head of the queue, in order
--
-- Due scheduled jobs (at most n) are promoted first, so a busy queue runs its
-- retries on time without waiting for the reaper. Every write is one command
-- for the whole batch.
--
-- Returns: a flat array id, body (nil if the body is missing), attempt (the
-- number this attempt gets if it starts), i (token suffix), ... for every job
-- leased; empty when the queue is paused or empty.
if #KEYS > 9 then redis.call('DEL', unpack(KEYS, 10)) end
local prefix = ARGV[3]

local replay = redis.call('GET', KEYS[9])
if replay then
  local out = {}
  local i = 0
  for id in string.gmatch(replay, '[^\n]+') do
    i = i + 1
    if redis.call('HGET', KEYS[5], id) == prefix .. i then
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGET', KEYS[3], id)
      out[#out + 1] = tonumber(redis.call('HGET', KEYS[4], id) or '0') + 1
      out[#out + 1] = i
    end
  end
  return out
end

if redis.call('EXISTS', KEYS[6]) == 1 then return {} end
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local due = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, n)
if #due > 0 then
  redis.call('ZREM', KEYS[7], unpack(due))
  redis.call('LPUSH', KEYS[1], unpack(due))
end

local ids = redis.call('RPOP', KEYS[1], n)
if not ids then return {} end

local deadline = now + tonumber(ARGV[2])
local bodies = redis.call('HMGET', KEYS[3], unpack(ids))
local budget = tonumber(ARGV[5])
local keep = #ids
for i, body in ipairs(bodies) do
  if body then budget = budget - #body end
  if budget < 0 and i > 1 then
    keep = i - 1
    break
  end
end
if keep < #ids then
  local back = {}
  for i = #ids, keep + 1, -1 do back[#back + 1] = ids[i] end
  redis.call('RPUSH', KEYS[1], unpack(back))
  for i = #ids, keep + 1, -1 do ids[i] = nil end
end
local before = redis.call('HMGET', KEYS[4], unpack(ids))
local zargs, largs, out = {}, {}, {}
for i, id in ipairs(ids) do
  zargs[2 * i - 1] = deadline
  zargs[2 * i] = id
  largs[2 * i - 1] = id
  largs[2 * i] = prefix .. i
  out[4 * i - 3] = id
  out[4 * i - 2] = bodies[i]
  out[4 * i - 1] = tonumber(before[i] or '0') + 1
  out[4 * i] = i
end
redis.call('ZADD', KEYS[2], unpack(zargs))
redis.call('HSET', KEYS[5], unpack(largs))
redis.call('SET', KEYS[9], table.concat(ids, '\n'), 'PX', ARGV[4])
-- Chain the wake-up: more work is left, so let another idle worker know.
if redis.call('LLEN', KEYS[1]) > 0 and redis.call('LLEN', KEYS[8]) == 0 then
  redis.call('LPUSH', KEYS[8], 1)
end
return out
