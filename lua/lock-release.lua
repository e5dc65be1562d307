#!lua flags=allow-oom
-- lock-release: delete a lock only if we still hold it (fenced by token).
--
-- KEYS[1] the lock   STRING
-- ARGV[1] token
--
-- Returns: 1 = released, 0 = not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
