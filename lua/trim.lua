#!lua flags=allow-oom
-- @include retain
-- trim: apply a queue's retention to its dead-letter set and its completed
-- history, at most ARGV[1] jobs of each per call (the reaper runs it
-- regularly for the age limits; `admin retention` runs it until done).
--
-- allow-oom: trimming frees memory.
--
-- KEYS[1] dead       ZSET
-- KEYS[2] completed  ZSET
-- KEYS[3] jobs       HASH
-- KEYS[4] attempts   HASH
-- KEYS[5] errors     HASH
-- KEYS[6] results    HASH
-- KEYS[7] history    HASH
-- KEYS[8] retention  HASH
--
-- ARGV[1] most jobs trimmed from each set
--
-- Returns: {dead trimmed, completed trimmed}; a count equal to ARGV[1]
-- means more may be left.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local budget = tonumber(ARGV[1])
local r = retention(KEYS[8])
local hashes = { KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7] }
local dead = trim(KEYS[1], r.dead_max, now - r.dead_ttl, budget, hashes)
local completed = trim(KEYS[2], r.completed_max, now - r.completed_ttl, budget, hashes)
return {dead, completed}
