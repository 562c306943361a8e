-- Nexus Edge: start a new history after a restore import (restore.lua wrote the records).
-- One atomic step: the history's id, the revision counter, one `reset` entry in the change
-- feed (which tells every replica to reload the whole table), and the restore lock released.
--
-- KEYS[1] revision counter   KEYS[2] change stream   KEYS[3] restore lock
-- KEYS[4] the history's id ({prefix}:history, a hash; see write.lua)
-- KEYS[5] replicas' heartbeats ({prefix}:replicas)
-- ARGV[1] the new history's revision (the highest record revision)
-- ARGV[2] approximate stream length cap   ARGV[3] lock token   ARGV[4] the new history's id
-- ARGV[5] "new-history" when the admin said so (the history is then never marked)
-- Errors: "HISTORY" (a counter exists), "LOCK" (the lock is not ours any more).

-- A script that writes after `XADD *` (an id from the clock) must replicate its effects, or
-- a Redis 5 or 6 set to `lua-replicate-commands no` refuses the writes after it (Redis 7
-- always replicates effects).
if redis.replicate_commands then
  redis.replicate_commands()
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('HISTORY')
end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return redis.error_reply('LOCK')
end
-- A key of another type would fail a command after the counter is set (replicas would then
-- follow a history whose reset they never saw), or after the history's id is deleted.
local function check_type(key, want)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= want then
    return redis.error_reply('KEYTYPE ' .. key .. ' ' .. found .. ' ' .. want)
  end
end
local bad = check_type(KEYS[2], 'stream') or check_type(KEYS[4], 'hash')
  or check_type(KEYS[5], 'hash')
if bad then
  return bad
end
-- The feed entry first: the one command here that can fail on a key of the right type (a
-- stream whose last id was set to the highest there is, by hand), and Redis keeps what a
-- script wrote before an error.
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'rev', ARGV[1], 'op', 'reset')
-- A restore over heard replicas was checked against what they serve (restore.rs), and they
-- take it. One made while no replica heartbeat is kept could not be (an old export, while
-- the fleet was down, would unbind every tenant written since): replicas serving another
-- history's bindings wait for an admin's confirmation, as after a write (write.lua).
redis.call('DEL', KEYS[4])
if ARGV[5] == 'new-history' or redis.call('HLEN', KEYS[5]) > 0 then
  redis.call('HSET', KEYS[4], 'id', ARGV[4], 'began', 'restore')
else
  redis.call('HSET', KEYS[4], 'id', ARGV[4], 'began', 'restore', 'unconfirmed', '1')
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return tonumber(ARGV[1])
