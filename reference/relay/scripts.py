"""Lua run inside Redis, so each step that must be atomic is one round trip."""

# Append one event. Each entry records `p`, the id of the scope's previous entry: a resume
# (REP-4) then proves that nothing between `since` and the oldest retained entry was trimmed,
# and a stream that was deleted or lost in a restart breaks the chain instead of being
# mistaken for a continuation.
#
# Each entry also records `e`, the epoch of the server that wrote it, and `c` = "1" when the
# previous entry was written in another epoch. The epoch lives in a key this script writes with
# replication off: a replica promoted by a failover (or a server restarted from its AOF) never
# had it, so its first append opens a new epoch. An entry acknowledged by the old primary but
# not yet replicated is then gone without a trace in the chain (`p` links the new entry to the
# last replicated one); `c` is that trace, and a resume across it answers recovered false.
# KEYS[1] stream, KEYS[2] per-scope "last id" hash (sharded only, else the stream itself),
# KEYS[3] the epoch key (same hash tag); ARGV: maxlen, min-id or "", ttl ms or "0", hash field
# or "", then the entry's field/value pairs.
APPEND = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  if redis.set_repl then redis.set_repl(redis.REPL_NONE) end  -- (fakeredis has no set_repl: no replicas either)
  redis.call('SET', KEYS[3], epoch)
  if redis.set_repl then redis.set_repl(redis.REPL_ALL) end
end
local prev, prev_epoch = '', ''
if ARGV[4] ~= '' then
  prev = redis.call('HGET', KEYS[2], ARGV[4]) or ''
  prev_epoch = redis.call('HGET', KEYS[2], 'e\\0' .. ARGV[4]) or ''
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    prev = last[1][1]
    local f = last[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'e' then prev_epoch = f[i + 1] end
    end
  else
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then prev = info[i + 1] end
    end
  end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'p'
fields[#fields + 1] = prev
fields[#fields + 1] = 'e'
fields[#fields + 1] = epoch
fields[#fields + 1] = 'c'
fields[#fields + 1] = (prev ~= '' and prev_epoch ~= epoch) and '1' or ''
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', unpack(fields))
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2]) end
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[4], id, 'e\\0' .. ARGV[4], epoch)
  if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
end
return id
"""

# Create (or move) this node's consumer group at the stream's end and return that position,
# so the reader's cursor is known exactly; and list this node in the scope's node set.
# KEYS[1] stream, KEYS[2] node set; ARGV[1] group, ARGV[2] ttl ms or "0", ARGV[3] node
# instance, ARGV[4] its expiry (the sweeper's score).
OPEN_GROUP = """
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'BUSYGROUP') then
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], '$')
  else
    return redis.error_reply(r.err)
  end
end
if ARGV[2] ~= '0' and redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
"""

# Point this node's group at the reader's own cursor, creating it (and the stream) if gone:
# after an outage the store may have lost the group, the stream, or a read reply in flight,
# and the cursor is the last entry this node actually delivered. KEYS[1] stream;
# ARGV[1] group, ARGV[2] cursor.
REPAIR_GROUP = """
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'BUSYGROUP') then
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
  else
    return redis.error_reply(r.err)
  end
end
return 1
"""
