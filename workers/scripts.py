"""Every Lua script of the protocol, in one place. Each runs atomically inside Redis.

Exactly one answer per job: ``ANSWER`` XACKs the entry and pushes the reply only when the XACK
removed it from the pending list, so a job processed twice (a reclaimed job whose first worker
was only slow) is still answered once. Needs Redis >= 7.

The scripts that write start with ``#!lua`` (Redis 7 script flags): at ``maxmemory`` Redis refuses
them before they run (OOM), so none is ever cut in half (say an XACK without its reply). The
scripts that answer a job (``ANSWER``, ``DEAD_LETTER``) and renew liveness (``LIVENESS``) are
``allow-oom``: an answer is small and its inbox popped at once, a liveness key is a few bytes renewed
in place; without them a full Redis would make callers wait out their deadlines for a 504, and make
every worker look dead and every API process gone.
"""

# KEYS: stream, the model's liveness key, the caller's inbox liveness key
# ARGV: group, max_backlog, maxlen, n_jobs, n_fields, inbox liveness ttl ms, fields...
# -> {"ok", id...} | {"full", backlog} | {"no_worker"}. The references a job names are not looked at:
# the API resolved them once already (a reference gone meanwhile is the worker's answer).
ENQUEUE = """#!lua
if redis.call('EXISTS', KEYS[2]) == 0 then return {'no_worker'} end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
local backlog, found = 0, false
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    if info['name'] == ARGV[1] then
      found = true
      local length = redis.call('XLEN', KEYS[1])
      backlog = info['lag'] or length
      if backlog > length then backlog = length end
    end
  end
end
if not found then redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM') end
local n, per = tonumber(ARGV[4]), tonumber(ARGV[5])
if backlog + n > tonumber(ARGV[2]) then return {'full', backlog} end
local ids, pos = {'ok'}, 7
for i = 1, n do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, pos, pos + per - 1))
  pos = pos + per
end
return ids
"""

# KEYS: stream, inbox of job 1, inbox of job 2...   ARGV: group, inbox ttl ms, id 1, reply 1, id 2, reply 2...
# -> per job: 1 answered, 0 already answered (acknowledged before)
ANSWER = """#!lua flags=allow-oom
local done = {}
for i = 2, #KEYS do
  local id, reply = ARGV[2 * i - 1], ARGV[2 * i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    redis.call('RPUSH', KEYS[i], reply)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    done[#done + 1] = 1
  else
    done[#done + 1] = 0
  end
end
return done
"""

# KEYS: liveness keys..., the set of served models   ARGV: ttl ms, a member for that set ('': none), the
# liveness keys' values...   -> the Redis clock {seconds, microseconds}
LIVENESS = """#!lua flags=allow-oom
local n = #ARGV - 2
for i = 1, n do redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('SADD', KEYS[n + 1], ARGV[2]) end
return redis.call('TIME')
"""

# KEYS: stream, dead, inbox   ARGV: group, entry id, reply, inbox ttl ms, dead maxlen, fields...
DEAD_LETTER = """#!lua flags=allow-oom
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: stream   ARGV: group, entry id, maxlen, fields...   -> the new entry id, or false
REQUEUE = """#!lua
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
"""

# KEYS: stream   ARGV: group   -> entries removed. Drops the entries every consumer is done with:
# those older than both the oldest pending entry and the group's last delivered entry.
TRIM_ACKED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
if not last then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local ms, seq = string.match(last, '(%d+)-(%d+)')
local minid = ms .. '-' .. (tonumber(seq) + 1)
if pending[1] > 0 then minid = pending[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""


# KEYS: stream   ARGV: group, min idle ms   -> names of the deleted consumers. Atomic, so a consumer
# that reads meanwhile cannot lose its new pending entries with it.
PRUNE_CONSUMERS = """
local pruned = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    pruned[#pruned + 1] = info['name']
  end
end
return pruned
"""

# prune(created, expiry, bytes): drops from a listing (and from the byte count, when ``bytes`` is
# given) the ids whose expiry time has passed (Redis clock); returns how many.
_PRUNE = """
local function prune(created, expiry, bytes)
  local now = redis.call('TIME')
  local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now[1] + now[2] / 1000000)
  for _, id in ipairs(expired) do
    redis.call('ZREM', created, id)
    redis.call('ZREM', expiry, id)
    local size = bytes and redis.call('HGET', bytes, id)
    if size then
      redis.call('HDEL', bytes, id)
      redis.call('HINCRBY', bytes, 'total', -tonumber(size))
    end
  end
  return #expired
end
"""

# KEYS: by created, by expiry, bytes, ref, tenant's by created, tenant's by expiry
# ARGV: id, features, info, ttl ms (0: never), created, expires, budget bytes (0: none)
# -> {'ok'} when stored, {'exists', info} when a reference with this id exists (nothing written),
# {'full', used bytes} when it does not fit in the reference budget (nothing written).
SAVE_REFERENCE = "#!lua\n" + _PRUNE + """
prune(KEYS[1], KEYS[2], KEYS[3])
local existing = redis.call('HGET', KEYS[4], 'info')
if existing then return {'exists', existing} end
local size = string.len(ARGV[2])
local used = tonumber(redis.call('HGET', KEYS[3], 'total') or '0')
if tonumber(ARGV[7]) > 0 and used + size > tonumber(ARGV[7]) then return {'full', tostring(used)} end
redis.call('HSET', KEYS[4], 'features', ARGV[2], 'info', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[4]) end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], size)
redis.call('HINCRBY', KEYS[3], 'total', size)
return {'ok'}
"""

# decoded(raw) -> the table a record's JSON holds, or nil when it is not one (a corrupt record)
_DECODED = """
local function decoded(raw)
  if not raw then return nil end
  local ok, info = pcall(cjson.decode, raw)
  if ok and type(info) == 'table' then return info end
  return nil
end
"""

# KEYS: by created, by expiry, bytes, ref   ARGV: id, version ('': any), and the owner's listing keys
# as (prefix, by created suffix, by expiry suffix) around the owner's id
# -> 1 when the reference was deleted; 0 when there was none, or its record has another version.
# A corrupt record (no owner to read) leaves its id in its owner's listing, which drops it when read.
DELETE_REFERENCE = _DECODED + """
local info = decoded(redis.call('HGET', KEYS[4], 'info'))
if ARGV[2] ~= '' and (not info or (info['version'] or '') ~= ARGV[2]) then return 0 end
local deleted = redis.call('DEL', KEYS[4])
local listings = {KEYS[1], KEYS[2]}
if info and type(info['owner']) == 'string' then
  listings[3] = ARGV[3] .. info['owner'] .. ARGV[4]
  listings[4] = ARGV[3] .. info['owner'] .. ARGV[5]
end
for _, listing in ipairs(listings) do redis.call('ZREM', listing, ARGV[1]) end
local size = redis.call('HGET', KEYS[3], ARGV[1])
if size then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'total', -tonumber(size))
end
return deleted
"""

# KEYS: ref, by expiry, owner's by expiry   ARGV: id, version, info, ttl ms (0: never), expiry score
# -> 1 when ``info`` replaced the record (which had ``version``), else 0 (gone, or another version).
REPLACE_REFERENCE = "#!lua\n" + _DECODED + """
local info = decoded(redis.call('HGET', KEYS[1], 'info'))
if not info or (info['version'] or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'info', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
"""

# KEYS: by created, by expiry [, bytes]   -> drops the ids whose expiry time has passed
PRUNE_REFERENCES = _PRUNE + "return prune(KEYS[1], KEYS[2], KEYS[3])"

# KEYS: stream   ARGV: group, me, worker key prefix, count   -> the entries claimed (XCLAIM replies).
# Takes over the pending entries of consumers whose worker heartbeat key is gone (crashed, killed,
# paused or cut off for longer than the heartbeat TTL).
RECLAIM_ORPHANS = """
local claimed, want = {}, tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return claimed end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
  if info['pending'] > 0 and info['name'] ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. info['name']) == 0 then
    local ids = {}
    for _, row in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', want - #claimed, info['name'])) do
      ids[#ids + 1] = row[1]
    end
    if #ids > 0 then
      for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
        claimed[#claimed + 1] = entry
      end
    end
    if #claimed >= want then return claimed end
  end
end
return claimed
"""
