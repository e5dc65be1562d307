#!lua
-- rate-limit: at most N starts in any window of PERIOD, shared by every
-- worker on this Redis and namespace, in O(1) memory: starts are counted in
-- 64 buckets of PERIOD/64, and a start is allowed only while the buckets
-- that touch the last PERIOD hold fewer than N (a bucket counts whole until
-- it has wholly left the window, so no window ever sees more than N, and a
-- start may wait up to one bucket longer than a log of every start would
-- make it). A burst of up to N is allowed. Takes a batch of starts of one
-- kind, granted in order while there is room.
--
-- Denied starts are staggered, not sent back as a herd: they are given
-- return times one PERIOD/N apart (the pace at which the limit lets starts
-- through), from when the oldest counted start leaves the window, and after
-- those given to earlier calls (field "next"), so denied starts of every
-- worker come back spread out and mostly find room.
--
-- KEYS[1] the limit  HASH  bucket number (ms / width) -> starts counted;
--                           "next" -> the earliest return time not yet given
--
-- ARGV[1] N (starts allowed per window)
-- ARGV[2] PERIOD (ms)
-- ARGV[3] number of starts asked for, n
--
-- Returns: per start, 0 = allowed (counted), else the ms to wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local width = math.max(1, math.ceil(period / 64))
local current = math.floor(now / width)
-- The oldest bucket that still touches (now - PERIOD, now].
local lo = math.floor((now - period) / width)

local counts, stale = {}, {}
local used, next_free = 0, 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local b, c = tonumber(flat[i]), tonumber(flat[i + 1])
  if not b then
    next_free = c
  elseif b < lo then
    stale[#stale + 1] = flat[i]
  else
    counts[b] = c
    used = used + c
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end

local granted = math.max(0, math.min(n, limit - used))
local out = {}
for i = 1, granted do out[i] = 0 end
if granted > 0 then
  counts[current] = (counts[current] or 0) + granted
  redis.call('HINCRBY', KEYS[1], current, granted)
end
if granted < n then
  local oldest = current
  for b = lo, current do
    if counts[b] then oldest = b break end
  end
  local pace = period / limit
  local at = math.max(next_free, (oldest + 1) * width + period)
  for j = granted + 1, n do
    out[j] = math.max(1, math.floor(at - now))
    at = at + pace
  end
  next_free = math.floor(at)
  redis.call('HSET', KEYS[1], 'next', next_free)
end
-- Kept while its counts matter, and until the last return time given.
redis.call('PEXPIRE', KEYS[1], math.max(period + width, next_free - now + period))
return out
