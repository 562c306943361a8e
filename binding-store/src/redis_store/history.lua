-- Nexus Edge: start a new history after a restore import (restore.lua wrote the records).
-- One atomic step: the revision counter and one `reset` entry in the change feed, which
-- tells every replica to reload the whole table.
--
-- KEYS[1] revision counter   KEYS[2] change stream
-- ARGV[1] the new history's revision (records written)   ARGV[2] approximate stream length cap
-- Errors: "HISTORY <counter>" when a write started a history meanwhile.

local now = redis.call('GET', KEYS[1])
if now then
  return redis.error_reply('HISTORY ' .. now)
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'rev', ARGV[1], 'op', 'reset')
return tonumber(ARGV[1])
