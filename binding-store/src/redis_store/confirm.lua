-- Nexus Edge: confirm the history Redis holds (`nexus-edge tenant confirm-history`), one that a
-- write began while no replica was heard serving (write.lua marks it `unconfirmed`). Replicas
-- serving another history's bindings keep them until then.
--
-- KEYS[1] the history's id ({prefix}:history)   KEYS[2] revision counter
-- ARGV[1] the id the admin means ("" = whichever Redis holds)   ARGV[2] who confirms
-- ARGV[3] why ("" = not said). A confirmation is recorded in the hash (`confirmed_by`,
-- `confirmed_at`: Redis's clock in ms, `confirmed_reason`): it unbinds what the replicas kept.
-- Returns {id, began, confirmed now (1) or not (0), counter or ""}; the id is "" when the
-- history names none (a hash whose id was deleted by hand: its mark is taken off too, when
-- no id is expected). Errors: "OTHER <id>" (Redis holds another history than ARGV[1]),
-- "KEYTYPE <key> <found> hash" (nothing changed).

-- Before Redis 5, a script that writes after reading the clock must replicate its effects.
if redis.replicate_commands then
  redis.replicate_commands()
end
local found = redis.call('TYPE', KEYS[1]).ok
if found ~= 'none' and found ~= 'hash' then
  return redis.error_reply('KEYTYPE ' .. KEYS[1] .. ' ' .. found .. ' hash')
end
local counter = redis.pcall('GET', KEYS[2])
if type(counter) ~= 'string' then
  counter = ''
end
local id = redis.call('HGET', KEYS[1], 'id') or ''
if ARGV[1] ~= '' and ARGV[1] ~= id then
  return redis.error_reply('OTHER ' .. id)
end
local began = redis.call('HGET', KEYS[1], 'began') or ''
local removed = redis.call('HDEL', KEYS[1], 'unconfirmed')
if removed == 1 then
  local t = redis.call('TIME')
  local at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[1], 'confirmed_by', ARGV[2], 'confirmed_at', at)
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[1], 'confirmed_reason', ARGV[3])
  else
    redis.call('HDEL', KEYS[1], 'confirmed_reason')
  end
end
return {id, began, removed, counter}
