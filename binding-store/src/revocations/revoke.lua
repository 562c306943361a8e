-- Changes one revocation in one atomic step: the change counter, the feed entry, the hash
-- field and the audit entry (see docs/redis-schema.md, "Revocations").
--
-- KEYS[1] {prefix}:revocations           hash: revocation key -> revocation JSON
-- KEYS[2] {prefix}:revocations:seq       the change counter
-- KEYS[3] {prefix}:revocations:changes   stream: seq, key, op, entry
-- KEYS[4] {prefix}:revocations:audit     list, newest first
-- ARGV[1] op: put | delete
-- ARGV[2] the revocation key
-- ARGV[3] the revocation JSON (put), or "" (delete)
-- ARGV[4] actor
-- ARGV[5] reason ("" for none)
-- ARGV[6] the feed's MAXLEN (approximate trim)
-- ARGV[7] the audit list's cap
-- ARGV[8] what the field must hold for the change to be made: "any", "absent", or "equals"
--         ARGV[9] (what the admin read before merging or pruning, byte for byte)
-- ARGV[9] the record expected with "equals", else ""
--
-- Returns the change's seq. A delete of a key not held fails with NOTFOUND, and a field that
-- does not hold ARGV[8] with CHANGED; both write nothing. The counter is taken first and the feed written before the hash: a command that
-- fails after the counter leaves a gap in seq, which makes every follower reload in full.
local op, key, entry = ARGV[1], ARGV[2], ARGV[3]
if op ~= 'put' and op ~= 'delete' then
  return redis.error_reply('BADOP ' .. op)
end
local old = redis.call('HGET', KEYS[1], key)
if op == 'delete' and not old then
  return redis.error_reply('NOTFOUND ' .. key)
end
local mode = ARGV[8]
if (mode == 'absent' and old) or (mode == 'equals' and old ~= ARGV[9])
    or (mode ~= 'any' and mode ~= 'absent' and mode ~= 'equals') then
  return redis.error_reply('CHANGED ' .. key)
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
  'seq', seq, 'key', key, 'op', op, 'entry', entry)
if op == 'put' then
  redis.call('HSET', KEYS[1], key, entry)
else
  redis.call('HDEL', KEYS[1], key)
end
local t = redis.call('TIME')
local audit = {
  seq = seq,
  at_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
  actor = ARGV[4],
  op = op,
  key = key,
  old = old or cjson.null,
  new = (op == 'put') and entry or cjson.null,
}
if ARGV[5] ~= '' then audit.reason = ARGV[5] end
redis.call('LPUSH', KEYS[4], cjson.encode(audit))
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
return seq
