-- Nexus Edge restore write: one tenant of an import into a Redis that holds no revision
-- counter (wiped, or never written). Like write.lua without the counter and the change feed:
-- replicas keep serving their table while a history is only half written, and history.lua
-- starts it once every record is in. The importer checked the domains beforehand and holds
-- the restore lock, which keeps every other writer (write.lua, another restore) out.
--
-- KEYS[1] binding key   KEYS[2] domain index hash   KEYS[3] audit list
-- KEYS[4] revision counter   KEYS[5] restore lock
-- ARGV[1] tenant id     ARGV[2] record JSON (revision stamped)   ARGV[3] audit entry JSON
-- ARGV[4] audit entries kept per tenant   ARGV[5] lock token   ARGV[6] lock lifetime (ms)
-- ARGV[7..] custom domains of the record
-- Errors: "HISTORY" (a counter exists), "LOCK" (the lock is not ours any more), "KEYTYPE <key>
-- <found> <expected>" (a key of the schema holds another type: nothing written).

if redis.call('EXISTS', KEYS[4]) == 1 then
  return redis.error_reply('HISTORY')
end
if redis.call('GET', KEYS[5]) ~= ARGV[5] then
  return redis.error_reply('LOCK')
end

-- Every key written here must be absent or of the type the schema gives it. One that another
-- program wrote would fail a command half way, and Redis keeps what a script wrote before its
-- error: the change would be half made. Error: "KEYTYPE <key> <found> <expected>". (Each
-- script carries its own copy: other writers run them as shipped.)
local function check_type(key, want)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= want then
    return redis.error_reply('KEYTYPE ' .. key .. ' ' .. found .. ' ' .. want)
  end
end
local bad = check_type(KEYS[1], 'string') or check_type(KEYS[2], 'hash')
  or check_type(KEYS[3], 'list')
if bad then
  return bad
end
redis.call('PEXPIRE', KEYS[5], ARGV[6])
-- The custom domains a stored record claims, or nil when it cannot say (a copy of write.lua's).
local function claims_of(raw)
  if string.match(raw, '^%s*%[') then
    return nil
  end
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then
    return nil
  end
  local domains = rec.domains
  if domains == nil then
    return {}
  end
  if type(domains) ~= 'table' or (next(domains) ~= nil and domains[1] == nil) then
    return nil
  end
  for _, d in ipairs(domains) do
    if type(d) ~= 'string' then
      return nil
    end
  end
  return domains
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local held = claims_of(cur)
  if held then
    for _, d in ipairs(held) do
      if redis.call('HGET', KEYS[2], d) == ARGV[1] then
        redis.call('HDEL', KEYS[2], d)
      end
    end
  else
    -- A damaged record does not say which domains it held: the index is searched for the
    -- tenant's (as write.lua does), so none stays claimed for a record that no longer has it.
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 1000)
      cursor = page[1]
      for i = 1, #page[2], 2 do
        if page[2][i + 1] == ARGV[1] then
          redis.call('HDEL', KEYS[2], page[2][i])
        end
      end
    until cursor == '0'
  end
end
redis.call('SET', KEYS[1], ARGV[2])
for i = 7, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
end
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return 1
