-- retain (shared by the scripts that finish jobs; inserted where a script
-- says `-- @include retain`): retention settings, attempt history, trimming.
--
-- Retention of a queue lives in its `retention` HASH (dead_max, dead_ttl,
-- completed_max, completed_ttl; ttl in ms); a field not set takes the
-- default below, filled in from the Rust constants at load time.
local function retention(key)
  local r = redis.call('HMGET', key, 'dead_max', 'dead_ttl', 'completed_max', 'completed_ttl')
  return {
    dead_max = tonumber(r[1] or '@DEAD_MAX@'),
    dead_ttl = tonumber(r[2] or '@DEAD_TTL@'),
    completed_max = tonumber(r[3] or '@COMPLETED_MAX@'),
    completed_ttl = tonumber(r[4] or '@COMPLETED_TTL@'),
  }
end

-- Attempt history: one line per attempt, oldest first,
-- `[attempt,started_ms,"worker",finished_ms,"outcome",error-or-null]`
-- ("worker" is the registry id of the worker that ran it; absent when no
-- worker started it, and in lines written before it was recorded); the
-- attempt running now is an open last line `[attempt,started_ms,"worker"`. At most
-- @HISTORY_MAX@ lines are kept (the oldest go).
local function history_append(old, line)
  if not old then return line end
  local h = old .. '\n' .. line
  local _, lines = string.gsub(h, '\n', '\n')
  if lines >= @HISTORY_MAX@ then h = string.sub(h, string.find(h, '\n', 1, true) + 1) end
  return h
end

local function is_open(h)
  return h and string.sub(h, -1) ~= ']'
end

local function history_open(old, attempt, now, worker)
  if is_open(old) then
    -- An attempt left open (never settled): it was lost with its worker.
    old = old .. string.format(',%d,"lost",null]', now)
  end
  local line = string.format('[%d,%d', attempt, now)
  if worker then line = line .. ',' .. cjson.encode(worker) end
  return history_append(old, line)
end

-- Closes the open attempt with its outcome and error (nil = none); a
-- history without an open attempt is returned unchanged.
local function history_close(old, now, outcome, err)
  if not is_open(old) then return old end
  local e = 'null'
  if err then e = cjson.encode(err) end
  return old .. string.format(',%d,"%s",%s]', now, outcome, e)
end

-- Drops the open attempt (handed back: it does not count).
local function history_drop(old)
  if not is_open(old) then return old end
  return string.match(old, '^(.*)\n[^\n]*$')
end

-- Removes from `zset` the oldest entries beyond `max` and those scored
-- before `cutoff`, at most `budget` of them, with everything stored for
-- them in `hashes`. Returns how many went.
local function trim(zset, max, cutoff, budget, hashes)
  local ids = {}
  local over = redis.call('ZCARD', zset) - max
  if over > 0 then ids = redis.call('ZRANGE', zset, 0, math.min(over, budget) - 1) end
  if #ids < budget then
    -- Scores ascend, so the old entries not taken yet start at #ids.
    local old = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. cutoff, 'LIMIT', #ids, budget - #ids)
    for _, id in ipairs(old) do ids[#ids + 1] = id end
  end
  if #ids == 0 then return 0 end
  redis.call('ZREM', zset, unpack(ids))
  for _, h in ipairs(hashes) do redis.call('HDEL', h, unpack(ids)) end
  return #ids
end
