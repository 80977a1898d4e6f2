#!lua name=muxchat
-- The cluster's shared state lives in Redis; every change to it is one of
-- these functions, so each runs atomically: a room's seq is assigned, the
-- message stored and published in one step, and every node sees the
-- room's events (MESSAGE, JOINED, LEFT) in one order on the room's channel.
--
-- Every function takes the key prefix as its first argument (nodes of one
-- cluster share it; it names the database, since channels are not per
-- database). Layout under the prefix P:
--   P r:<room>        hash   name, epoch (a decimal string: never a Lua
--                             number, which would round it), seq
--   P r:<room>:m      hash   folded nick -> "nick \t node \t session id"
--   P r:<room>:s      stream the held messages, id "<seq>-0", fields t f x
--   P rooms           set    the folded names of live rooms (LIST_ROOMS)
--   P nick:<nick>     string "node \t session id \t nick \t claimed", with a
--                             TTL the owning node refreshes; claimed is the
--                             store's clock (microseconds) when the session
--                             took the nick: of two live sessions left with
--                             one nick by a fault, the later is renamed
--   P nodes           set    node ids;  P alive:<node>  string with a TTL
--   P quiet           string, with a TTL: no node is reaped while it lives,
--                             (its value: the store's clock when it began;
--                             new sessions wait to join for SETTLE_US)
--   P node:<node>:m   set    "room \t nick" memberships of a node's sessions
--   P node:<node>:nicks set  folded nicks of a node's sessions
--   P gone:<node>     set    "room \t nick" members a reap announced LEFT
--                             ("node lost"): if the node was alive after all,
--                             its restore announces them JOINED again
--   P r:<room>:left:<nick> string, with a TTL: a leave the store had lost
--                             (an empty restart) as its node announced it:
--                             "w|x \t node \t sid \t nick \t reason" then
--                             the nodes told so far (x: a rejoin told the rest)
--   channels: P c:<room> (room events), P nickch (NICK), P n:<node> (WHISPER),
--             P modch (moderation, see moderation.lua)
-- Events are text: a kind letter and fields separated by "\n", the last
-- field (a text or a reason) running to the end.
-- One file over 700 lines on purpose: it is one job (the rooms' and nicks'
-- functions and the helpers they share, whose keys are laid out above);
-- identity and moderation are their own files (accounts.lua,
-- moderation.lua), joined to this one into one library at load.

local function fields(s)
  local out, i = {}, 1
  while true do
    local j = string.find(s, '\t', 1 + (i - 1), true)
    if not j then
      out[#out + 1] = string.sub(s, i)
      return out
    end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

-- Accounts' part of the functions below (version 3: an account's
-- sessions on several nodes share its nick and rooms), filled in by
-- accounts.lua, which is loaded after this file.
local acct = {}

-- The store's clock in microseconds, as a decimal string (a Lua number
-- would print in exponent form).
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.sub('000000' .. t[2], -6)
end

-- Whether claim a (claimed, node, sid) came before claim b: one order
-- every node agrees on, since both claims' times are in the store.
local function earlier(ca, na, sa, cb, nb, sb)
  ca, cb = ca or '', cb or ''
  if #ca ~= #cb then
    return #ca < #cb
  end
  if ca ~= cb then
    return ca < cb
  end
  if na ~= nb then
    return na < nb
  end
  return sa < sb
end

local GONE_TTL = 86400000

-- msg_ids remembered per session key (protocol.md: at least 4,096).
local DEDUP_KEEP = 4096

-- How long new sessions wait to join after the store lost its state: a
-- node whose link went down reconnects within its longest backoff and a
-- tick (2.5 s, src/server/cluster/link.rs and mod.rs), and rebuilds at once.
local SETTLE_US = 3000000

-- Whether clock value (now_us) a comes before b.
local function sooner(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end

-- The store lost its state, or this node's (P quiet): for one TTL nobody
-- is reaped (every live node beats again within it), and new sessions
-- wait to join for a while (see mc_join). Extended by each node that
-- finds itself lost; it says when the first did.
local function hold_off(p, ttl)
  local since = redis.call('GET', p .. 'quiet') or now_us()
  redis.call('SET', p .. 'quiet', since, 'PX', ttl)
end

local function room_empty(p, rk, ttl)
  local meta = p .. 'r:' .. rk
  redis.call('SREM', p .. 'rooms', rk)
  -- The room's moderation state (moderation.lua) outlives it for its
  -- own TTL; every node's replica starts the same clock.
  local rs = p .. 'rs:' .. rk
  local sttl = redis.call('HGET', rs, 'ttl')
  if sttl then
    local t = redis.call('TIME')
    local at = tostring(t[1] * 1000 + math.floor(t[2] / 1000))
    redis.call('HSET', rs, 'emptied', at)
    redis.call('PEXPIRE', rs, sttl)
    redis.call('PUBLISH', p .. 'modch', 'X\ne\n' .. rk .. '\n0\n' .. at .. '\n\n0\n\n')
  end
  if tonumber(ttl) > 0 then
    redis.call('PEXPIRE', meta, ttl)
    redis.call('PEXPIRE', meta .. ':s', ttl)
  else
    redis.call('DEL', meta, meta .. ':m', meta .. ':s')
  end
end

-- A member leaves: LEFT on the room's channel, counting the leaver.
-- Returns 0 (and publishes nothing) if it was not a member: the node
-- then completes the leave itself. ttl nil: someone joins right after,
-- so the room stays whatever its count.
local function part(p, rk, nk, node, sid, nick, reason, ttl, kind)
  local meta = p .. 'r:' .. rk
  local before = redis.call('HLEN', meta .. ':m')
  redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
  if redis.call('HDEL', meta .. ':m', nk) == 0 then
    return 0
  end
  redis.call('SREM', p .. 'an:' .. nk, rk)
  local seq = redis.call('HGET', meta, 'seq') or '0'
  -- kind "X": a removal (KICK, BAN) its node follows; "L" otherwise.
  redis.call('PUBLISH', p .. 'c:' .. rk,
    (kind or 'L') .. '\n' .. seq .. '\n' .. before .. '\n' .. node .. '\n' .. sid .. '\n' .. nick .. '\n' .. reason)
  if ttl and redis.call('HLEN', meta .. ':m') == 0 and redis.call('EXISTS', meta) == 1 then
    room_empty(p, rk, ttl)
  end
  return 1
end

-- A leave the store had lost, from its record (see P r:<room>:left:<nick>),
-- told to each registered node not told yet, on the node's own channel:
-- PUBLISH there says whether that node listens, so each node hears it once
-- (a PUBLISH on the room's channel would not say which nodes heard it),
-- and in order with the room's events (one subscriber link per node).
-- Returns the record with the nodes told added, and whether some
-- registered node did not listen yet.
local function tell_left(p, rk, v)
  local f = fields(v)
  local told = {}
  for k = 6, #f do
    told[f[k]] = true
  end
  local meta = p .. 'r:' .. rk
  local ev = 'G\n' .. rk .. '\nL\n' .. (redis.call('HGET', meta, 'seq') or '0') .. '\n'
    .. (redis.call('HLEN', meta .. ':m') + 1) .. '\n' .. f[2] .. '\n' .. f[3] .. '\n' .. f[4] .. '\n' .. f[5]
  local missed = false
  for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
    if not told[n] then
      if redis.call('PUBLISH', p .. 'n:' .. n, ev) > 0 then
        v = v .. '\t' .. n
      else
        missed = true
      end
    end
  end
  return v, missed
end

-- Everything a dead node held: its members leave ("node lost"), its
-- nicks are freed.
local function reap(p, node, ttl, node_ttl)
  -- An account with a session left elsewhere stays in its rooms.
  acct.reap(p, node)
  for _, e in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':m')) do
    local f = fields(e)
    local v = redis.call('HGET', p .. 'r:' .. f[1] .. ':m', f[2])
    if v then
      local m = fields(v)
      if m[2] == node and not acct.reanchor(p, f[1], f[2], m[1]) then
        part(p, f[1], f[2], node, m[3], m[1], 'node lost', ttl)
        redis.call('SADD', p .. 'gone:' .. node, e)
      end
    end
  end
  if redis.call('EXISTS', p .. 'gone:' .. node) == 1 then
    redis.call('PEXPIRE', p .. 'gone:' .. node, GONE_TTL)
  end
  for _, nk in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':nicks')) do
    local v = redis.call('GET', p .. 'nick:' .. nk)
    if v and fields(v)[1] == node and not acct.keep_nick(p, nk, v, node_ttl) then
      redis.call('DEL', p .. 'nick:' .. nk)
    end
  end
  redis.call('DEL', p .. 'node:' .. node .. ':m', p .. 'node:' .. node .. ':nicks')
  redis.call('SREM', p .. 'nodes', node)
end

-- HELLO: claim a nick cluster-wide. The claim's time (a decimal string),
-- or 0 if the nick is taken.
redis.register_function('mc_hello', function(_, a)
  local p, nk, nick, node, sid, ttl = a[1], a[2], a[3], a[4], a[5], a[6]
  local at = now_us()
  if not redis.call('SET', p .. 'nick:' .. nk, node .. '\t' .. sid .. '\t' .. nick .. '\t' .. at, 'NX', 'PX', ttl) then
    return 0
  end
  redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
  return at
end)

-- A session ended: its nick is free (if it still holds it).
redis.register_function('mc_bye', function(_, a)
  local p, nk, node, sid = a[1], a[2], a[3], a[4]
  local v = redis.call('GET', p .. 'nick:' .. nk)
  if v then
    local f = fields(v)
    if f[1] == node and f[2] == sid then
      redis.call('DEL', p .. 'nick:' .. nk)
    end
  end
  redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
  return 1
end)

-- JOIN: creates the room (with the epoch the node picked) or revives a
-- lingering one, adds the member, and publishes JOINED with the room's
-- position: every MESSAGE before it has seq <= the seq it carries.
redis.register_function('mc_join', function(_, a)
  -- sub: an account's JOIN (absent for a guest).
  local p, rk, name, epoch, nk, nick, node, sid, sub = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]
  local meta = p .. 'r:' .. rk
  -- For SETTLE_US after the store lost its state (P quiet says when), a
  -- session that claimed its nick since waits (the node asks again at its
  -- next tick): a node that has not reconnected yet may remember a leave
  -- of that nick (mc_gone), which must be announced before the nick joins
  -- again.
  local since = redis.call('GET', p .. 'quiet')
  if since and tonumber(now_us()) - tonumber(since) < SETTLE_US then
    local claim = redis.call('GET', p .. 'nick:' .. nk)
    if claim and not sooner(fields(claim)[4] or '', since) then
      return redis.error_reply('RECOVERING the cluster store is being rebuilt')
    end
  end
  local ep = redis.call('HGET', meta, 'epoch')
  if not ep then
    redis.call('DEL', meta .. ':s', meta .. ':m')
    redis.call('HSET', meta, 'name', name, 'epoch', epoch, 'seq', '0')
    ep = epoch
  else
    redis.call('PERSIST', meta)
    redis.call('PERSIST', meta .. ':s')
  end
  redis.call('SADD', p .. 'rooms', rk)
  -- A moderation state on its TTL is kept again (moderation.lua).
  if redis.call('HDEL', p .. 'rs:' .. rk, 'emptied') == 1 then
    redis.call('PERSIST', p .. 'rs:' .. rk)
    redis.call('PUBLISH', p .. 'modch', 'X\nf\n' .. rk .. '\n0\n0\n\n0\n\n')
  end
  -- The nick's entry may still be a dead node's, not reaped yet (its
  -- session came back through this node): that member is announced LEFT
  -- first, so the reap cannot miss it and nobody sees two JOINED.
  local old = redis.call('HGET', meta .. ':m', nk)
  if old then
    local o = fields(old)
    -- (Even while reaping is held off: if that node lives after all, it
    -- sees its member parted, puts it back and JOINED follows.)
    if o[2] ~= node and redis.call('EXISTS', p .. 'alive:' .. o[2]) == 0 then
      part(p, rk, nk, o[2], o[3], o[1], 'node lost', nil)
      redis.call('SADD', p .. 'gone:' .. o[2], rk .. '\t' .. nk)
      redis.call('PEXPIRE', p .. 'gone:' .. o[2], GONE_TTL)
    end
  end
  -- A leave of this nick the store had lost, still being announced (some
  -- node did not listen yet): the nodes not told hear it now, before this
  -- JOINED, so nobody sees the nick join while it is still present.
  local lk = meta .. ':left:' .. nk
  local lv = redis.call('GET', lk)
  if lv and string.sub(lv, 1, 1) == 'w' then
    lv = tell_left(p, rk, lv)
    redis.call('SET', lk, 'x' .. string.sub(lv, 2), 'KEEPTTL')
  end
  -- The account is a member already (another of its sessions joined
  -- meanwhile): this session attaches, nobody else is told.
  if sub and redis.call('HEXISTS', meta .. ':m', nk) == 1 then
    return acct.attached(p, rk, ep, node, sid, nick)
  end
  redis.call('HSET', meta .. ':m', nk, nick .. '\t' .. node .. '\t' .. sid)
  redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
  local seq = redis.call('HGET', meta, 'seq')
  local count = redis.call('HLEN', meta .. ':m')
  local first = '0'
  local e = redis.call('XRANGE', meta .. ':s', '-', '+', 'COUNT', 1)
  if e[1] then
    first = string.match(e[1][1], '^(%d+)')
  end
  redis.call('PUBLISH', p .. 'c:' .. rk,
    'J\n' .. ep .. '\n' .. seq .. '\n' .. first .. '\n' .. count .. '\n' .. node .. '\n' .. sid .. '\n' .. nick)
  if sub then
    acct.joined(p, sub, nk, rk, name)
  end
  return 1
end)

-- LEAVE (or a session's end): LEFT to the room; the room goes (or
-- lingers) when its last member leaves.
redis.register_function('mc_leave', function(_, a)
  -- a[9]: an account's LEAVE, from any of its sessions: the member's
  -- entry may be another session's (the one that joined).
  if a[9] then
    local v = redis.call('HGET', a[1] .. 'r:' .. a[2] .. ':m', a[3])
    if v then
      redis.call('SREM', a[1] .. 'node:' .. fields(v)[2] .. ':m', a[2] .. '\t' .. a[3])
    end
  end
  return part(a[1], a[2], a[3], a[5], a[6], a[4], a[7], a[8])
end)

-- SAY: the seq, the stream entry and the MESSAGE in one step. An error if
-- the room is not the incarnation the node knows, or if the sender is not
-- a member of it at this moment (only members speak: nobody gets a
-- MESSAGE from a sender announced LEFT).
redis.register_function('mc_say', function(_, a)
  -- nk and member: the sender's folded nick and its entry in the room's
  -- members as it must read ("nick \t node \t session id"), built by the
  -- node, so the check is one HGET and one comparison.
  -- key, msg_id, kttl: a version-3 SAY's session key, msg_id and the
  -- key lifetime (absent for version 2, which pays nothing for them).
  local p, rk, epoch, nick, text, time, maxlen, nk, member, key, msg_id, kttl =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]
  local meta = p .. 'r:' .. rk
  -- A msg_id this key already sent: its original epoch and seq, nothing
  -- delivered (on whichever node the first one came through).
  local d
  if key then
    d = p .. 'd:' .. key
    local was = redis.call('HGET', d, msg_id)
    if was then
      local f = fields(was)
      return { 1, f[1], f[2] }
    end
  end
  if redis.call('HGET', meta, 'epoch') ~= epoch then
    return redis.error_reply('NOROOM the room is not known to the cluster store')
  end
  if nk then
    -- member '*': an account's session (any of them speaks for it).
    local m = redis.call('HGET', meta .. ':m', nk)
    if m ~= member and not (m and member == '*') then
      return redis.error_reply('NOTMEMBER the sender is not a member of the room')
    end
  end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  if tonumber(maxlen) > 0 then
    redis.call('XADD', meta .. ':s', 'MAXLEN', maxlen, seq .. '-0', 't', time, 'f', nick, 'x', text)
  end
  redis.call('PUBLISH', p .. 'c:' .. rk,
    'M\n' .. epoch .. '\n' .. seq .. '\n' .. time .. '\n' .. nick .. '\n' .. text)
  if d then
    -- Recorded in the same step as the seq: a resend after an unknown
    -- outcome (UNAVAILABLE) finds it. The newest DEDUP_KEEP per key.
    redis.call('HSET', d, msg_id, epoch .. '\t' .. seq)
    if redis.call('RPUSH', d .. ':o', msg_id) > DEDUP_KEEP then
      redis.call('HDEL', d, redis.call('LPOP', d .. ':o'))
    end
    redis.call('PEXPIRE', d, kttl)
    redis.call('PEXPIRE', d .. ':o', kttl)
    redis.call('PEXPIRE', p .. 'key:' .. key, kttl)
    return { 0, epoch, tostring(seq) }
  end
  return seq
end)

-- WHISPER: to the node holding the nick. 1, or 0 if nobody has it.
redis.register_function('mc_whisper', function(_, a)
  -- sub, node: the sender's account and node, when it is an account's
  -- session (its sessions on other nodes are told: WHISPER_SENT).
  local p, nk, from, text, sub, node = a[1], a[2], a[3], a[4], a[5], a[6]
  local v = redis.call('GET', p .. 'nick:' .. nk)
  if not v then
    return 0
  end
  local f = fields(v)
  if f[5] then
    acct.whisper(p, f[5], from, text)
  else
    redis.call('PUBLISH', p .. 'n:' .. f[1], 'W\n' .. f[2] .. '\n' .. from .. '\n' .. text)
  end
  if sub then
    acct.whisper_sent(p, sub, node, f[3], text)
  end
  return 1
end)

-- NICK (or a rename after a clash): claim the new nick, free the old
-- one, rename the memberships and tell every node which rooms the session
-- is in. The claim's time, or 0 if taken. a[9] is the old claim's time
-- (kept by a change of case).
redis.register_function('mc_nick', function(_, a)
  local p, onk, nnk, old, new, node, sid, ttl, was = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]
  local at = now_us()
  if onk == nnk and was and was ~= '' and was ~= '0' then
    at = was
  end
  local val = node .. '\t' .. sid .. '\t' .. new .. '\t' .. at
  if onk == nnk then
    local v = redis.call('GET', p .. 'nick:' .. nnk)
    if v then
      local f = fields(v)
      if f[1] ~= node or f[2] ~= sid then
        return 0
      end
    end
    redis.call('SET', p .. 'nick:' .. nnk, val, 'PX', ttl)
    redis.call('SADD', p .. 'node:' .. node .. ':nicks', nnk)
  else
    if not redis.call('SET', p .. 'nick:' .. nnk, val, 'NX', 'PX', ttl) then
      return 0
    end
    local v = redis.call('GET', p .. 'nick:' .. onk)
    if v then
      local f = fields(v)
      if f[1] == node and f[2] == sid then
        redis.call('DEL', p .. 'nick:' .. onk)
      end
    end
    redis.call('SREM', p .. 'node:' .. node .. ':nicks', onk)
    redis.call('SADD', p .. 'node:' .. node .. ':nicks', nnk)
  end
  local rooms = {}
  for i = 10, #a do
    local rk = a[i]
    local m = p .. 'r:' .. rk .. ':m'
    -- Only this session's entry: after a clash the old nick's entry may
    -- be the other session's.
    local cur = redis.call('HGET', m, onk)
    if cur then
      local f = fields(cur)
      if f[2] == node and f[3] == sid then
        redis.call('HDEL', m, onk)
      end
    end
    redis.call('HSET', m, nnk, new .. '\t' .. node .. '\t' .. sid)
    redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. onk)
    redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. nnk)
    rooms[#rooms + 1] = rk
  end
  redis.call('PUBLISH', p .. 'nickch',
    'N\n' .. node .. '\n' .. sid .. '\n' .. table.concat(rooms, ' ') .. '\n' .. old .. '\n' .. new)
  return at
end)

-- LIST_ROOMS in one call: name, members, ... (at most max rooms). Kept
-- for nodes of an older version sharing this library; see mc_rooms_page.
redis.register_function('mc_rooms', function(_, a)
  local p, max = a[1], tonumber(a[2])
  local out = {}
  for _, rk in ipairs(redis.call('SMEMBERS', p .. 'rooms')) do
    if #out >= 2 * max then
      break
    end
    local name = redis.call('HGET', p .. 'r:' .. rk, 'name')
    if name then
      out[#out + 1] = name
      out[#out + 1] = redis.call('HLEN', p .. 'r:' .. rk .. ':m')
    end
  end
  return out
end)

-- LIST_ROOMS a page at a time: SSCAN's next cursor, then name, members,
-- ... for about count rooms. A page keeps each call short however many
-- rooms there are, so other calls (a SAY) never wait behind a whole
-- listing; the node asks for pages until the cursor is 0 or its reply is
-- full (a room may come twice: the node drops repeats).
redis.register_function('mc_rooms_page', function(_, a)
  local p, cursor, count = a[1], a[2], a[3]
  local r = redis.call('SSCAN', p .. 'rooms', cursor, 'COUNT', count)
  local out = { r[1] }
  for _, rk in ipairs(r[2]) do
    local name = redis.call('HGET', p .. 'r:' .. rk, 'name')
    if name then
      out[#out + 1] = name
      out[#out + 1] = redis.call('HLEN', p .. 'r:' .. rk .. ':m')
    end
  end
  return out
end)

-- LIST_USERS: the room's name then its nicks (at most max); nil if the
-- room does not exist (a lingering room has a name and no nicks).
redis.register_function('mc_users', function(_, a)
  local p, rk, max = a[1], a[2], tonumber(a[3])
  local meta = p .. 'r:' .. rk
  local name = redis.call('HGET', meta, 'name')
  if not name then
    return false
  end
  -- Scanned, not HVALS: a huge room costs what one reply can carry, not
  -- every member (HSCAN may return a member twice: dropped).
  -- Each member as three entries: its nick, and for an account its sub
  -- and operator record (accounts.lua's aops), else '' and '' (the
  -- node marks version 3's operators with them).
  local out, seen, cursor, n = { name }, {}, '0', 0
  repeat
    local r = redis.call('HSCAN', meta .. ':m', cursor, 'COUNT', 512)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      if n >= max then
        return out
      end
      if not seen[kv[i]] then
        seen[kv[i]] = true
        n = n + 1
        local sub, ops = acct.ops_of(p, kv[i])
        out[#out + 1] = fields(kv[i + 1])[1]
        out[#out + 1] = sub
        out[#out + 1] = ops
      end
    end
  until cursor == '0'
  return out
end)

-- A node's heartbeat: its liveness key and its nicks' TTLs refreshed, and
-- every node whose liveness key expired reaped. Returns how many were,
-- whether the store still knew this node (0: it lost it, by a flush,
-- an eviction, or a stall longer than the TTL: the node rebuilds), then
-- the folded nicks of this node's sessions the store no longer has as
-- theirs (expired, flushed, or taken meanwhile): the node claims them
-- again (mc_claim), and one of two sessions left with one nick is renamed.
redis.register_function('mc_alive', function(_, a)
  local p, node, ttl, room_ttl = a[1], a[2], a[3], a[4]
  local known = redis.call('EXISTS', p .. 'alive:' .. node)
  redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
  redis.call('SADD', p .. 'nodes', node)
  local out = { 0, known }
  acct.alive(p, node, ttl)
  for _, nk in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':nicks')) do
    local v = redis.call('GET', p .. 'nick:' .. nk)
    if v and fields(v)[1] == node then
      redis.call('PEXPIRE', p .. 'nick:' .. nk, ttl)
    else
      redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
      out[#out + 1] = nk
    end
  end
  -- This node's own key lapsed: the store refused or lost heartbeats (an
  -- OOM spell refuses every write, a restart or flush loses the keys) or
  -- this node could not reach it. Every other node's key may have lapsed
  -- the same way although it lives: nobody is reaped for one TTL, by
  -- when every live node has beaten again (every third of it).
  if known == 0 then
    hold_off(p, ttl)
  end
  if redis.call('EXISTS', p .. 'quiet') == 1 then
    return out
  end
  for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
    if redis.call('EXISTS', p .. 'alive:' .. n) == 0 then
      reap(p, n, room_ttl, ttl)
      out[1] = out[1] + 1
    end
  end
  return out
end)

-- A node registers (again): at start (fresh = 1), and first thing when it
-- rebuilds its state, so no heartbeat reaps it between the calls of its
-- rebuild. A node the store had forgotten holds reaping off for one TTL,
-- as mc_alive does: the others' keys may have gone the same way.
redis.register_function('mc_register', function(_, a)
  local p, node, ttl, fresh = a[1], a[2], a[3], a[4]
  local known = redis.call('EXISTS', p .. 'alive:' .. node)
  redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
  redis.call('SADD', p .. 'nodes', node)
  if known == 0 and fresh ~= '1' then
    hold_off(p, ttl)
  end
  return known
end)

-- Members of this node's sessions that ended while the store was out of
-- reach (rk, nk, nick, sid, reason: five fields each): each is announced
-- LEFT now. If the store still has it, it is parted (LEFT on the room's
-- channel); if the store lost it (an empty restart), its record (P
-- r:<room>:left:<nick>, kept window ms) is made and every registered node
-- is told on its own channel (tell_left). Returns the indexes (from 0) of
-- the ones to try again at the next heartbeat: some node did not listen
-- yet, or nodes may still register (P quiet). A try again tells only the
-- nodes not told yet, and nothing once a rejoin told them (x).
redis.register_function('mc_gone', function(_, a)
  local p, node, room_ttl, window = a[1], a[2], a[3], a[4]
  local again = {}
  local quiet = redis.call('EXISTS', p .. 'quiet') == 1
  for i = 5, #a - 4, 5 do
    local rk, nk, nick, sid, reason = a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4]
    local meta = p .. 'r:' .. rk
    local lk = meta .. ':left:' .. nk
    local lv = redis.call('GET', lk)
    local lf = lv and fields(lv)
    local missed = false
    if lf and lf[2] == node and lf[3] == sid then
      if lf[1] == 'w' then
        lv, missed = tell_left(p, rk, lv)
        redis.call('SET', lk, lv, 'KEEPTTL')
        missed = missed or quiet
      end
    else
      local cur = redis.call('HGET', meta .. ':m', nk)
      if cur then
        local f = fields(cur)
        if f[2] == node and f[3] == sid then
          part(p, rk, nk, node, sid, nick, reason, room_ttl)
        end
      else
        redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
        lv, missed = tell_left(p, rk, 'w\t' .. node .. '\t' .. sid .. '\t' .. nick .. '\t' .. reason)
        redis.call('SET', lk, lv, 'PX', window)
        missed = missed or quiet
      end
    end
    if missed then
      again[#again + 1] = (i - 5) / 5
    end
  end
  return again
end)

-- After the link came back (Redis may have restarted empty): one room as
-- the node knows it. Keeps the room's epoch, moves its seq up to what the
-- node delivered, puts the node's members back. Returns the epoch in the
-- store (another one if the room was re-created meanwhile).
redis.register_function('mc_restore', function(_, a)
  local p, node, rk, name, epoch, seq = a[1], a[2], a[3], a[4], a[5], a[6]
  local meta = p .. 'r:' .. rk
  local ep = redis.call('HGET', meta, 'epoch')
  if not ep then
    redis.call('HSET', meta, 'name', name, 'epoch', epoch, 'seq', seq)
    ep = epoch
  elseif ep ~= epoch then
    -- Another incarnation: its seqs are not this one's, so this node's
    -- members are not put into it (the node makes them leave).
    return ep
  elseif tonumber(redis.call('HGET', meta, 'seq') or '0') < tonumber(seq) then
    redis.call('HSET', meta, 'seq', seq)
  end
  redis.call('PERSIST', meta)
  redis.call('PERSIST', meta .. ':s')
  redis.call('SADD', p .. 'rooms', rk)
  local gone = p .. 'gone:' .. node
  for i = 7, #a - 2, 3 do
    local nk, nick, sid = a[i], a[i + 1], a[i + 2]
    local cur = redis.call('HGET', meta .. ':m', nk)
    local o = cur and fields(cur)
    -- A live session elsewhere holds the entry: a clash of nicks, which
    -- the claims settle (one is renamed); this one waits for that.
    if not (o and o[2] ~= node and redis.call('EXISTS', p .. 'alive:' .. o[2]) == 1) then
      redis.call('HSET', meta .. ':m', nk, nick .. '\t' .. node .. '\t' .. sid)
      redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
      -- A reap announced it LEFT although its node lived on: JOINED again.
      if redis.call('SREM', gone, rk .. '\t' .. nk) == 1 then
        local first = '0'
        local e = redis.call('XRANGE', meta .. ':s', '-', '+', 'COUNT', 1)
        if e[1] then
          first = string.match(e[1][1], '^(%d+)')
        end
        redis.call('PUBLISH', p .. 'c:' .. rk,
          'J\n' .. ep .. '\n' .. redis.call('HGET', meta, 'seq') .. '\n' .. first .. '\n'
          .. redis.call('HLEN', meta .. ':m') .. '\n' .. node .. '\n' .. sid .. '\n' .. nick)
      end
    end
  end
  return ep
end)

-- After the restore: the node's memberships and nicks are exactly its
-- sessions' (given as "room \t nick" entries, then "" then folded nicks);
-- members that left while the store was unreachable leave now.
redis.register_function('mc_sync', function(_, a)
  local p, node, ttl, room_ttl = a[1], a[2], a[3], a[4]
  local keep, nicks, i = {}, {}, 5
  while i <= #a and a[i] ~= '' do
    keep[a[i]] = true
    i = i + 1
  end
  for j = i + 1, #a do
    nicks[a[j]] = true
  end
  for _, e in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':m')) do
    if not keep[e] then
      local f = fields(e)
      local v = redis.call('HGET', p .. 'r:' .. f[1] .. ':m', f[2])
      if v and fields(v)[2] == node then
        local m = fields(v)
        part(p, f[1], f[2], node, m[3], m[1], 'connection lost', room_ttl)
      else
        redis.call('SREM', p .. 'node:' .. node .. ':m', e)
      end
    end
  end
  for _, nk in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':nicks')) do
    if not nicks[nk] then
      local v = redis.call('GET', p .. 'nick:' .. nk)
      if v and fields(v)[1] == node then
        redis.call('DEL', p .. 'nick:' .. nk)
      end
      redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
    end
  end
  redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
  redis.call('SADD', p .. 'nodes', node)
  return 1
end)

-- The node's sessions claim their nicks again (nk, sid, nick, claimed,
-- four fields each), after the store lost them or a heartbeat found them
-- gone. A nick another live session took meanwhile goes to the session
-- that claimed it first: if that is this node's, the other's node is told
-- to rename it (and finds out at its next heartbeat anyway); if not, the
-- session id is returned: this node renames it.
redis.register_function('mc_claim', function(_, a)
  local p, node, ttl = a[1], a[2], a[3]
  local lose = {}
  for i = 4, #a - 3, 4 do
    local nk, sid, nick, at = a[i], a[i + 1], a[i + 2], a[i + 3]
    local key = p .. 'nick:' .. nk
    local v = redis.call('GET', key)
    local win = true
    local f = v and fields(v)
    -- Another session of this node is a stale entry (it ended while the
    -- store was out of reach): this node's live sessions have unique nicks.
    if f and acct.shares(p, f, node, sid, nk) then
      -- Another session of the same account holds it: no clash, and not
      -- this node's to renew.
      win = nil
    elseif f then
      if f[1] ~= node then
        if earlier(f[4], f[1], f[2], at, node, sid) then
          win = false
        else
          redis.call('PUBLISH', p .. 'n:' .. f[1], 'R\n' .. f[2] .. '\n' .. f[3])
        end
      end
    end
    if win == nil then
      redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
    elseif win then
      redis.call('SET', key, node .. '\t' .. sid .. '\t' .. nick .. '\t' .. at .. acct.claim_tail(p, nk, node, sid), 'PX', ttl)
      redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
    else
      -- Kept in the node's set, so its heartbeat reports it again until
      -- the session is renamed (mc_nick) or ends (mc_bye).
      redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
      lose[#lose + 1] = sid
    end
  end
  return lose
end)
