#!lua flags=no-writes,allow-oom
-- find: list jobs of one queue in one state, filtered here, so only
-- matches leave Redis: a ZSET (dead, completed, scheduled, inflight) from
-- its highest score down, or the pending LIST from its head (newest). Reads at most ARGV[6]
-- entries per call and says where it stopped: the caller pages on with the
-- cursor it returns.
--
-- KEYS[1] the state: a ZSET (id -> ms) or the pending LIST
-- KEYS[2] jobs       HASH
-- KEYS[3] errors     HASH
-- KEYS[4] attempts   HASH
-- KEYS[5] results    HASH
--
-- ARGV[1] cursor score: start at entries scored at most this ('+inf' = the newest)
-- ARGV[2] cursor skip: entries at exactly the cursor score already seen
-- ARGV[3] since: only entries finished in the last this many ms (0 = all)
-- ARGV[4] kind ('' = any)
-- ARGV[5] search text, lower case ('' = none): matched in id, error, body
-- ARGV[6] most entries read
-- ARGV[7] most matches returned
-- ARGV[8] 'zset' or 'list' (the type of KEYS[1]); for a list the cursor
--         score is unused and the skip is the index to go on from, and
--         ARGV[3] does not apply
--
-- Returns: {next cursor score ('' = no more), next skip, read, then 6 per
-- match: id, finished at, body or false, error or false, attempts or
-- false, result or false}
local max = ARGV[1]
local skip = tonumber(ARGV[2])
local min = '-inf'
if tonumber(ARGV[3]) > 0 then
  local t = redis.call('TIME')
  min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
end
local kind, search = ARGV[4], ARGV[5]
local budget, want = tonumber(ARGV[6]), tonumber(ARGV[7])
local is_list = ARGV[8] == 'list'
if is_list then min = '-inf' end

-- The kind of a stored body: bodies open {"r":N,"k":"..."; anything else
-- is decoded (and a body that does not decode has no kind).
local function kind_of(body)
  local raw = string.match(body, '^{"r":%d+,"k":("[^"\\]*")')
  if raw then return cjson.decode(raw) end
  local ok, job = pcall(cjson.decode, body)
  if ok and type(job) == 'table' then return job['k'] end
  return nil
end

local function has(text, needle)
  return text and string.find(string.lower(text), needle, 1, true) ~= nil
end

local out = {'', 0, 0}
local read, found = 0, 0
local done = false
while read < budget and found < want do
  local chunk = math.min(200, budget - read)
  local page
  if is_list then
    -- Shaped like a WITHSCORES reply, with no scores.
    page = {}
    for _, id in ipairs(redis.call('LRANGE', KEYS[1], skip, skip + chunk - 1)) do
      page[#page + 1] = id
      page[#page + 1] = false
    end
  else
    page = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, min, 'WITHSCORES', 'LIMIT', skip, chunk)
  end
  local taken = 0
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    read = read + 1
    taken = taken + 1
    -- The cursor moves past this entry: entries at the cursor score come
    -- first, so (score, how many at it were seen) says where to go on.
    if is_list then
      max, skip = '0', skip + 1
    elseif score == max then
      skip = skip + 1
    else
      max, skip = score, 1
    end
    local body = redis.call('HGET', KEYS[2], id)
    local err = redis.call('HGET', KEYS[3], id)
    local ok = true
    if kind ~= '' then ok = body and kind_of(body) == kind end
    if ok and search ~= '' then ok = has(id, search) or has(err, search) or has(body, search) end
    if ok then
      found = found + 1
      out[#out + 1] = id
      out[#out + 1] = score
      out[#out + 1] = body
      out[#out + 1] = err
      out[#out + 1] = redis.call('HGET', KEYS[4], id)
      out[#out + 1] = redis.call('HGET', KEYS[5], id)
      if found >= want then break end
    end
  end
  if taken == #page / 2 and taken < chunk then
    -- A short page read to its end: nothing is left.
    done = true
    break
  end
end
if not done then
  out[1] = max
  out[2] = skip
end
out[3] = read
return out
