-- Nexus Edge binding write: the ONLY way a binding may change in Redis.
-- One atomic step: check the expected revision, take the next store revision, append the
-- change event, write or delete the record, keep the domain index, push the audit entry.
--
-- KEYS[1] binding key ({prefix}:binding:{tenant})   KEYS[2] revision counter ({prefix}:revision)
-- KEYS[3] change stream ({prefix}:changes)          KEYS[4] audit list ({prefix}:audit:{tenant})
-- KEYS[5] domain index hash ({prefix}:domains)  KEYS[6] restore lock ({prefix}:restoring)
-- KEYS[7] replicas' heartbeats ({prefix}:replicas)   KEYS[8] the history's id ({prefix}:history)
-- ARGV[1] tenant id
-- ARGV[2] expected current revision ("" = no check; "0" = must not exist)
-- ARGV[3] new record JSON with "revision":0 as placeholder ("" = delete)
-- ARGV[4] audit entry JSON with "revision":0 placeholders for the new revision
-- ARGV[5] approximate stream length cap   ARGV[6] audit entries kept per tenant
-- ARGV[7] "new-history" to write even where the store looks wiped ("" = refuse)
-- ARGV[8] an id for the history, used only when this write begins one (random, new each write)
-- ARGV[9..] custom domains of the new record
-- Returns the new revision; errors: "CONFLICT <actual>", "NOTFOUND", "DOMAIN <domain> <owner>",
-- "RESTORING" (a restore import holds the store; see restore.lua), "WIPED <revision>" (no
-- counter while a replica serves that revision), "KEYTYPE <key> <found> <expected>" (a key of
-- the schema holds another type, or a counter that is no number or at 2^52, the highest
-- revision replicas take: nothing written), "EXHAUSTED <binding key>" (the record carries
-- revision 2^52, set by hand: no revision is left after it; nothing written),
-- "PLACEHOLDER ..." (the record lacks the exact `"revision":0` the script fills in).

-- A script that writes after `XADD *` (an id from the clock) must replicate its effects, or
-- a Redis 5 or 6 set to `lua-replicate-commands no` refuses the writes after it (Redis 7
-- always replicates effects).
if redis.replicate_commands then
  redis.replicate_commands()
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  return redis.error_reply('RESTORING')
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
local bad = check_type(KEYS[1], 'string') or check_type(KEYS[2], 'string')
  or check_type(KEYS[3], 'stream') or check_type(KEYS[4], 'list') or check_type(KEYS[5], 'hash')
  or check_type(KEYS[7], 'hash') or check_type(KEYS[8], 'hash')
if bad then
  return bad
end
local counter = redis.call('GET', KEYS[2])
-- Digits only, without a leading zero: Redis's INCR takes no other number.
if counter and not (string.match(counter, '^[1-9]%d*$') or counter == '0') then
  return redis.error_reply('KEYTYPE ' .. KEYS[2] .. ' text integer')
end
-- No counter, yet replicas heartbeat a revision they serve: Redis lost its data under them.
-- The first write would start a new history holding this one tenant, and every replica
-- would unbind all the others.
if ARGV[7] ~= 'new-history' and not redis.call('GET', KEYS[2]) then
  local served = 0
  for _, beat in ipairs(redis.call('HVALS', KEYS[7])) do
    local ok, hb = pcall(cjson.decode, beat)
    if ok and type(hb) == 'table' and tonumber(hb.applied_revision) then
      served = math.max(served, tonumber(hb.applied_revision))
    end
  end
  if served > 0 then
    return redis.error_reply('WIPED ' .. string.format('%.0f', served))
  end
end
local cur = redis.call('GET', KEYS[1])
-- The current record's revision: its "revision" member when the record is a JSON object (a
-- record written by hand may space its members) and the member a whole number from 0 to
-- 2^52 (half of what Lua's doubles hold exactly: the counter is moved up to such a record's
-- revision below, and must keep room). Any other record, damaged or written by hand, reads
-- as revision 0, as the admin CLI reads it, so the CLI can replace or delete it.
local actual = 0
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and type(old.revision) == 'number'
    and old.revision >= 0 and old.revision <= 4503599627370496
    and old.revision == math.floor(old.revision) then
    actual = old.revision
  end
end
-- The revision this write takes: the counter's next, or past a record written by hand ahead of
-- the counter (below). It must stay at 2^52 or below, the highest replicas take (and well
-- within what Lua's doubles hold exactly): a counter, or a record's revision, set by hand at
-- that edge leaves no room, and every write after it would be refused by every replica.
-- Refused here, before anything is written, naming which.
local counted = tonumber(counter or '0')
local rev = math.max(counted, actual) + 1
if rev > 4503599627370496 then
  if actual > counted then
    return redis.error_reply('EXHAUSTED ' .. KEYS[1])
  end
  return redis.error_reply('KEYTYPE ' .. KEYS[2] .. ' huge integer')
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= actual then
  return redis.error_reply('CONFLICT ' .. string.format('%.0f', actual))
end
if ARGV[3] == '' and not cur then
  return redis.error_reply('NOTFOUND')
end
-- Checked before anything is written: a record without the exact placeholder would be
-- stored with a revision its feed entry does not carry, and replicas would skip it.
if ARGV[3] ~= '' and not string.find(ARGV[3], '"revision":0', 1, true) then
  return redis.error_reply('PLACEHOLDER the record must carry "revision":0 for the revision')
end
-- The custom domains a stored record claims, or nil when it cannot say: not JSON, no JSON
-- object (cjson reads an array as a table too, `[]` included), or a `domains` member that is
-- no list of names. A record without `domains` claims none: the admin CLI leaves an empty
-- list out, so this is most tenants' record. (restore.lua carries a copy.)
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

-- Whether the record of `owner` still claims `domain`: the index can outlive a claim made
-- outside this script (a record deleted, or edited, by hand). A record that cannot say keeps
-- its claims.
local key_head = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
local function still_claims(owner, domain)
  local raw = redis.pcall('GET', key_head .. owner)
  if type(raw) == 'table' and raw.err then
    -- A key of another type: it cannot say either.
    return true
  end
  if not raw then
    return false
  end
  local held = claims_of(raw)
  if not held then
    return true
  end
  for _, d in ipairs(held) do
    if d == domain then
      return true
    end
  end
  return false
end
for i = 9, #ARGV do
  local owner = redis.call('HGET', KEYS[5], ARGV[i])
  if owner and owner ~= ARGV[1] and still_claims(owner, ARGV[i]) then
    return redis.error_reply('DOMAIN ' .. ARGV[i] .. ' ' .. owner)
  end
end

local op = 'upsert'
if ARGV[3] == '' then
  op = 'delete'
end
-- Written out whole: Lua's own number format turns 10^14 and above into "1e+14", which no
-- reader takes for a revision.
local rev_text = string.format('%.0f', rev)
-- The feed entry first: the one command here that can fail on a key of the right type (a
-- stream whose last id was set to the highest there is, by hand), and Redis keeps what a
-- script wrote before an error: the record, counter and index would change with no entry
-- and no audit.
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'rev', rev_text, 'tenant', ARGV[1], 'op', op)

-- Which history this is (KEYS[8]): replicas compare its id with the one their table (or
-- snapshot) was loaded from. A write into a store with no counter begins a new one. Begun with
-- no replica heard at all (a wipe while the whole fleet was down, which no heartbeat can show,
-- or a first write made before any replica ran), it is `unconfirmed`: a replica serving another history's bindings
-- does not take it until an admin confirms it (`tenant confirm-history`: confirm.lua), since
-- it would unbind every tenant the write did not name. Only that command confirms: a later
-- write with --start-new-history (one of an import, say) would let replicas load a table
-- still being written.
-- Replicas heard with empty tables (a first deployment) have nothing to keep: only a write
-- that no replica hears at all needs the mark.
if not counter then
  redis.call('DEL', KEYS[8])
  if ARGV[7] == 'new-history' then
    redis.call('HSET', KEYS[8], 'id', ARGV[8], 'began', 'new-history')
  elseif redis.call('HLEN', KEYS[7]) > 0 then
    redis.call('HSET', KEYS[8], 'id', ARGV[8], 'began', 'write')
  else
    redis.call('HSET', KEYS[8], 'id', ARGV[8], 'began', 'write', 'unconfirmed', '1')
  end
elseif redis.call('HEXISTS', KEYS[8], 'id') == 0 then
  -- A history begun before ids were kept gets one now (so does a hash whose id was deleted
  -- by hand; a mark it keeps stays, so its replicas still wait for a confirmation).
  redis.call('HSET', KEYS[8], 'id', ARGV[8], 'began', 'before-ids')
end

-- A record written outside this script may carry a revision ahead of the counter. The next
-- revision taken from the counter would then be older than the record it replaces, and every
-- replica, serving that record, would refuse the change as going backwards: `rev` is past the
-- record's revision, and the counter moves up to it.
redis.call('SET', KEYS[2], rev_text)
local placeholder = '"revision":0'
local stamped = '"revision":' .. rev_text

-- Drop the tenant's old domains from the index, then add the new ones.
if cur then
  local held = claims_of(cur)
  if held then
    for _, d in ipairs(held) do
      if redis.call('HGET', KEYS[5], d) == ARGV[1] then
        redis.call('HDEL', KEYS[5], d)
      end
    end
  else
    -- A damaged record that cannot say which domains it held: the index is searched for the
    -- tenant's instead (a scan, but only when such a record is replaced or deleted), so none
    -- stays claimed by a record that is gone.
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', KEYS[5], cursor, 'COUNT', 1000)
      cursor = page[1]
      for i = 1, #page[2], 2 do
        if page[2][i + 1] == ARGV[1] then
          redis.call('HDEL', KEYS[5], page[2][i])
        end
      end
    until cursor == '0'
  end
end

if op == 'delete' then
  redis.call('DEL', KEYS[1])
else
  local record = string.gsub(ARGV[3], placeholder, stamped, 1)
  redis.call('SET', KEYS[1], record)
  for i = 9, #ARGV do
    redis.call('HSET', KEYS[5], ARGV[i], ARGV[1])
  end
end

local audit = string.gsub(ARGV[4], placeholder, stamped)
redis.call('LPUSH', KEYS[4], audit)
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
return rev
