-- Puts a whole list of revocations into a store that holds none, in one atomic step (`revoke
-- import` after Redis lost its data): routers keep the revocations they hold over a store with
-- no change counter, and a list written one revocation at a time would replace theirs with
-- its first part.
--
-- KEYS[1] {prefix}:revocations           hash: revocation key -> revocation JSON
-- KEYS[2] {prefix}:revocations:seq       the change counter
-- KEYS[3] {prefix}:revocations:changes   stream: seq, key, op, entry
-- KEYS[4] {prefix}:revocations:audit     list, newest first
-- ARGV[1] actor
-- ARGV[2] reason ("" for none)
-- ARGV[3] the feed's MAXLEN (approximate trim)
-- ARGV[4] the audit list's cap
-- ARGV[5], ARGV[6], ... key, JSON pairs
--
-- Returns the change's seq. A store holding a counter or any revocation fails with NOTEMPTY
-- and is left as it is. The feed entry's op is `reset`: every follower loads the whole list.
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HLEN', KEYS[1]) > 0 then
  return redis.error_reply('NOTEMPTY ' .. KEYS[1])
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
  'seq', seq, 'key', '', 'op', 'reset', 'entry', '')
local n = 0
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  n = n + 1
end
local t = redis.call('TIME')
local audit = {
  seq = seq,
  at_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
  actor = ARGV[1],
  op = 'import',
  count = n,
}
if ARGV[2] ~= '' then audit.reason = ARGV[2] end
redis.call('LPUSH', KEYS[4], cjson.encode(audit))
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
return seq
