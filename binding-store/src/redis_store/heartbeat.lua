-- Nexus Edge replica heartbeat, stamped with Redis's clock: liveness (`--wait`, `replicas`)
-- is judged against the same clock, so no host's own clock, behind or ahead, counts.
--
-- KEYS[1] replicas' heartbeats ({prefix}:replicas)
-- ARGV[1] replica id
-- ARGV[2] the heartbeat, a JSON object without `at_ms` (and with another member first)
-- Stores the heartbeat with `at_ms` (Redis TIME, Unix ms) first; returns that time and the
-- heartbeat it replaced (false: none), so that a replica sees another process heartbeating
-- under its id.

-- Before Redis 5, a script that writes after reading the clock must replicate its effects.
if redis.replicate_commands then
  redis.replicate_commands()
end
local now = redis.call('TIME')
local at_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local stamp = string.format('%d', at_ms)
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], '{"at_ms":' .. stamp .. ',' .. string.sub(ARGV[2], 2))
return {stamp, previous}
