#!lua flags=allow-oom
-- lock-renew: extend a lock only if we still hold it (fenced by token).
--
-- KEYS[1] the lock   STRING  token of the holder
-- ARGV[1] token
-- ARGV[2] ttl (ms)
--
-- Returns: 1 = renewed, 0 = not ours any more.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
