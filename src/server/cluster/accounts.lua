
-- Protocol version 3 in a cluster (appended to muxchat.lua's library: it
-- shares its helpers, fields and now_us). Layout under the prefix P, in
-- addition to muxchat.lua's:
--   P nick:<nick>     as in muxchat.lua; an account's claim has a fifth
--                             field, its sub, so a HELLO of the same
--                             account is told apart from another's
--   P key:<key>       string "owner \t node \t session id", with a TTL
--                             (the key lifetime, counted again from each
--                             SAY and from the session's end): owner is
--                             "g:" and the guest's folded nick as shown, or
--                             "a:" and the account's sub
--   P d:<key>         hash   msg_id -> "epoch \t seq": the key's accepted
--                             SAYs (mc_say), same TTL as the key
--   P d:<key>:o       list   the same msg_ids, oldest first (the bound)
--   P acct:<sub>      hash   "node \t session id" -> nick: the account's
--                             live sessions, on every node
--   P an:<nick>       set    the rooms (folded) the account holding the
--                             folded nick is a member of
--   P node:<node>:accts set  "sub \t session id \t nick" (folded) of a
--                             node's account sessions
--   P acctn:<nick>    string the sub of the account holding the folded
--                             nick (a claim put back after a fault has
--                             no sub of its own yet)
--   P aops:<sub>      string the account's operator record, as its
--                             latest token (HELLO or REFRESH) says: "a" or
--                             "-" (admin or not), then "\n" and each ops
--                             pattern (cut at 1 KB by the node); absent if
--                             neither; TTL: that token's life
--
-- An account is one member of each of its rooms, whichever of its
-- sessions joined: the room's entry names one of its sessions (the one
-- that joined, or another when that one ends), and so does its nick
-- claim; the other sessions attach (event K: JOINED and ROOM_STATE to that
-- session alone). A node with sessions of an account hears of the
-- account's joins on its own channel (event A) and attaches them.

-- A live session of account sub (node, sid), on a node that lives, or nil.
local function acct_any(p, sub)
  for _, k in ipairs(redis.call('HKEYS', p .. 'acct:' .. sub)) do
    local f = fields(k)
    if redis.call('EXISTS', p .. 'alive:' .. f[1]) == 1 then
      return f[1], f[2]
    end
  end
  return nil
end

-- A session of a member account attaches to room rk: K on the room's
-- channel with the room's position, for that session's node alone.
function acct.attached(p, rk, ep, node, sid, nick)
  local meta = p .. 'r:' .. rk
  local first = '0'
  local e = redis.call('XRANGE', meta .. ':s', '-', '+', 'COUNT', 1)
  if e[1] then
    first = string.match(e[1][1], '^(%d+)')
  end
  redis.call('PUBLISH', p .. 'c:' .. rk,
    'K\n' .. ep .. '\n' .. redis.call('HGET', meta, 'seq') .. '\n' .. first .. '\n'
    .. redis.call('HLEN', meta .. ':m') .. '\n' .. node .. '\n' .. sid .. '\n' .. nick)
  return 1
end

-- Account sub (nick nk) joined room rk (named name): every node holding
-- one of its sessions attaches them.
function acct.joined(p, sub, nk, rk, name)
  redis.call('SADD', p .. 'an:' .. nk, rk)
  local told = {}
  for _, k in ipairs(redis.call('HKEYS', p .. 'acct:' .. sub)) do
    local n = fields(k)[1]
    if not told[n] then
      told[n] = true
      redis.call('PUBLISH', p .. 'n:' .. n, 'A\n' .. name .. '\n' .. nk)
    end
  end
end

-- A reaped node's account sessions end (their accounts may live on).
function acct.reap(p, node)
  local set = p .. 'node:' .. node .. ':accts'
  for _, e in ipairs(redis.call('SMEMBERS', set)) do
    local f = fields(e)
    redis.call('HDEL', p .. 'acct:' .. f[1], node .. '\t' .. f[2])
  end
  redis.call('DEL', set)
end

-- Account sub's operator record (see the layout), for every node's
-- LIST_USERS: '' means none.
function acct.set_ops(p, sub, rec, ttl)
  if not rec or rec == '' then
    redis.call('DEL', p .. 'aops:' .. sub)
  else
    redis.call('SET', p .. 'aops:' .. sub, rec, 'PX', ttl)
  end
end

-- The sub and operator record of the account holding folded nick nk
-- ('' for a guest, or none).
function acct.ops_of(p, nk)
  local sub = redis.call('GET', p .. 'acctn:' .. nk)
  if not sub then
    return '', ''
  end
  return sub, redis.call('GET', p .. 'aops:' .. sub) or ''
end

-- The sub of the account holding folded nick nk, or nil.
local function sub_of(p, nk)
  local v = redis.call('GET', p .. 'nick:' .. nk)
  return v and fields(v)[5]
end

-- A reaped node's member entry for nk in rk: if nk is an account's with a
-- session left elsewhere, the entry is that session's now (true).
function acct.reanchor(p, rk, nk, nick)
  local sub = sub_of(p, nk)
  if not sub then
    return false
  end
  local n, s = acct_any(p, sub)
  if not n then
    return false
  end
  redis.call('HSET', p .. 'r:' .. rk .. ':m', nk, nick .. '\t' .. n .. '\t' .. s)
  redis.call('SADD', p .. 'node:' .. n .. ':m', rk .. '\t' .. nk)
  return true
end

-- A nick claim v of a session that ended (or a reaped node's): if it is an
-- account's with a session left, that session holds it now (true).
function acct.keep_nick(p, nk, v, ttl)
  local f = fields(v)
  if not f[5] then
    return false
  end
  local n, s = acct_any(p, f[5])
  if not n then
    return false
  end
  redis.call('SET', p .. 'nick:' .. nk, n .. '\t' .. s .. '\t' .. f[3] .. '\t' .. f[4] .. '\t' .. f[5], 'PX', ttl)
  redis.call('SADD', p .. 'node:' .. n .. ':nicks', nk)
  return true
end

-- A WHISPER from a session of account sub on node `node` to `to` (as
-- shown): its sessions on the other nodes see it (S).
function acct.whisper_sent(p, sub, node, to, text)
  local told = { [node] = true }
  for _, k in ipairs(redis.call('HKEYS', p .. 'acct:' .. sub)) do
    local n = fields(k)[1]
    if not told[n] then
      told[n] = true
      redis.call('PUBLISH', p .. 'n:' .. n, 'S\n' .. sub .. '\n' .. to .. '\n' .. text)
    end
  end
end

-- A node's heartbeat: the nick claims of its accounts' sessions live as
-- long as any of them does, whichever session holds the claim (its node
-- may be dead and not reaped yet); a claim that lapsed is taken again.
function acct.alive(p, node, ttl)
  for _, e in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':accts')) do
    local f = fields(e)
    local key = p .. 'nick:' .. f[3]
    local v = redis.call('GET', key)
    if v and fields(v)[5] == f[1] then
      redis.call('PEXPIRE', key, ttl)
    elseif not v then
      local nick = redis.call('HGET', p .. 'acct:' .. f[1], node .. '\t' .. f[2]) or f[3]
      redis.call('SET', key, node .. '\t' .. f[2] .. '\t' .. nick .. '\t' .. now_us() .. '\t' .. f[1], 'PX', ttl)
      redis.call('SADD', p .. 'node:' .. node .. ':nicks', f[3])
    end
  end
end

-- Whether claim f (its fields) is held by the account of session (node,
-- sid): the account's sessions share one claim.
function acct.shares(p, f, node, sid, nk)
  local sub = f[5] or redis.call('GET', p .. 'acctn:' .. nk)
  if not sub then
    return false
  end
  local ak = p .. 'acct:' .. sub
  return redis.call('HEXISTS', ak, node .. '\t' .. sid) == 1
    and (f[5] ~= nil or redis.call('HEXISTS', ak, f[1] .. '\t' .. f[2]) == 1)
end

-- The sub field of a claim session (node, sid) puts back for folded
-- nick nk ('\t' and the sub if it is an account's session, else '').
function acct.claim_tail(p, nk, node, sid)
  local sub = redis.call('GET', p .. 'acctn:' .. nk)
  if sub and redis.call('HEXISTS', p .. 'acct:' .. sub, node .. '\t' .. sid) == 1 then
    return '\t' .. sub
  end
  return ''
end

-- WHISPER to an account: once to each node holding one of its sessions
-- (which delivers it to all of them there). 0 if it has none.
function acct.whisper(p, sub, from, text)
  local told, any = {}, 0
  for _, k in ipairs(redis.call('HKEYS', p .. 'acct:' .. sub)) do
    local f = fields(k)
    if not told[f[1]] then
      told[f[1]] = true
      any = 1
      redis.call('PUBLISH', p .. 'n:' .. f[1], 'W\n' .. f[2] .. '\n' .. from .. '\n' .. text)
    end
  end
  return any
end

-- A takeover (see mc_hello3): the session (node, sid) replaces (on, os),
-- a live session of the same owner, in every place the store names it;
-- on's node is told to close it without a word to anyone (T). Returns
-- the names of the rooms the new session is in.
local function take_over(p, nk, nick, node, sid, ttl, sub, on, os)
  local nkey = p .. 'nick:' .. nk
  local v = redis.call('GET', nkey)
  local f = v and fields(v)
  if f and f[1] == on and f[2] == os then
    local val = node .. '\t' .. sid .. '\t' .. nick .. '\t' .. f[4]
    if sub ~= '' then
      val = val .. '\t' .. sub
    end
    redis.call('SET', nkey, val, 'PX', ttl)
    redis.call('SREM', p .. 'node:' .. on .. ':nicks', nk)
    redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
  end
  local rooms = {}
  if sub ~= '' then
    local ak = p .. 'acct:' .. sub
    redis.call('HDEL', ak, on .. '\t' .. os)
    redis.call('HSET', ak, node .. '\t' .. sid, nick)
    redis.call('SREM', p .. 'node:' .. on .. ':accts', sub .. '\t' .. os .. '\t' .. nk)
    redis.call('SADD', p .. 'node:' .. node .. ':accts', sub .. '\t' .. sid .. '\t' .. nk)
    rooms = redis.call('SMEMBERS', p .. 'an:' .. nk)
  else
    for _, e in ipairs(redis.call('SMEMBERS', p .. 'node:' .. on .. ':m')) do
      local rf = fields(e)
      if rf[2] == nk then
        rooms[#rooms + 1] = rf[1]
      end
    end
  end
  local names = {}
  for _, rk in ipairs(rooms) do
    local m = p .. 'r:' .. rk .. ':m'
    local e = redis.call('HGET', m, nk)
    local ef = e and fields(e)
    if ef and ef[2] == on and ef[3] == os then
      redis.call('HSET', m, nk, ef[1] .. '\t' .. node .. '\t' .. sid)
      redis.call('SREM', p .. 'node:' .. on .. ':m', rk .. '\t' .. nk)
      redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
    end
    local name = redis.call('HGET', p .. 'r:' .. rk, 'name')
    if ef and name then
      names[#names + 1] = name
    end
  end
  redis.call('PUBLISH', p .. 'n:' .. on, 'T\n' .. os .. '\n' .. node .. '\n' .. sid)
  return names, f and f[4] or now_us()
end

-- Version 3's HELLO: the nick claim (as mc_hello) and the session key in
-- one step. An account's HELLO whose nick another of its sessions holds
-- joins the claim (up to max sessions cluster-wide). The key presented is
-- kept if the store has it for the same owner; otherwise the fresh one
-- the node drew is taken (SET NX: unique in the cluster). A key of a
-- session still open (its nick claim or its account's sessions name it,
-- on a live node) for the same owner is a takeover: the new session takes
-- its place (take_over). Returns { 'ok', claimed, key, kept (1 kept, 2
-- taken over, 0 fresh), then the names of the rooms to attach }, or { 'taken' } (another session holds the nick), { 'limit' }
-- (the account has max sessions), { 'again' } (the fresh key exists:
-- draw another).
redis.register_function('mc_hello3', function(_, a)
  local p, nk, nick, node, sid, ttl, owner, key, fresh, kttl, sub, max, ops, ops_ttl =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14]
  local nkey = p .. 'nick:' .. nk
  local at = now_us()
  local val = node .. '\t' .. sid .. '\t' .. nick .. '\t' .. at
  local ak = p .. 'acct:' .. sub
  local claimed = false
  local kv = key ~= '' and redis.call('GET', p .. 'key:' .. key)
  local kf = kv and fields(kv)
  if kf and kf[1] == owner and (kf[2] ~= node or kf[3] ~= sid)
      and redis.call('EXISTS', p .. 'alive:' .. kf[2]) == 1 then
    local live
    if sub ~= '' then
      live = redis.call('HEXISTS', ak, kf[2] .. '\t' .. kf[3]) == 1
    else
      local cv = redis.call('GET', nkey)
      live = cv and fields(cv)[1] == kf[2] and fields(cv)[2] == kf[3]
    end
    if live then
      redis.call('SET', p .. 'key:' .. key, owner .. '\t' .. node .. '\t' .. sid, 'PX', kttl)
      local names, claimed_at = take_over(p, nk, nick, node, sid, ttl, sub, kf[2], kf[3])
      if sub ~= '' then
        acct.set_ops(p, sub, ops, ops_ttl)
      end
      local out = { 'ok', claimed_at, key, 2 }
      for _, n in ipairs(names) do
        out[#out + 1] = n
      end
      return out
    end
  end
  if sub ~= '' then
    val = val .. '\t' .. sub
    local cur = redis.call('GET', nkey)
    if cur then
      local f = fields(cur)
      if f[5] ~= sub and redis.call('HEXISTS', ak, f[1] .. '\t' .. f[2]) == 0 then
        return { 'taken' }
      end
      at = f[4]
      claimed = true
    end
    if redis.call('HLEN', ak) >= tonumber(max) then
      return { 'limit' }
    end
  end
  if not claimed then
    if not redis.call('SET', nkey, val, 'NX', 'PX', ttl) then
      return { 'taken' }
    end
  end
  local rec = owner .. '\t' .. node .. '\t' .. sid
  local kept = 0
  if key ~= '' then
    local kk = p .. 'key:' .. key
    local kv = redis.call('GET', kk)
    if kv and fields(kv)[1] == owner then
      redis.call('SET', kk, rec, 'PX', kttl)
      kept = 1
    end
  end
  if kept == 0 then
    if not redis.call('SET', p .. 'key:' .. fresh, rec, 'NX', 'PX', kttl) then
      if not claimed then
        redis.call('DEL', nkey)
      end
      return { 'again' }
    end
    key = fresh
  end
  if not claimed then
    redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
  end
  local out = { 'ok', at, key, kept }
  if sub ~= '' then
    redis.call('HSET', ak, node .. '\t' .. sid, nick)
    redis.call('SET', p .. 'acctn:' .. nk, sub)
    redis.call('SADD', p .. 'node:' .. node .. ':accts', sub .. '\t' .. sid .. '\t' .. nk)
    acct.set_ops(p, sub, ops, ops_ttl)
    for _, rk in ipairs(redis.call('SMEMBERS', p .. 'an:' .. nk)) do
      local name = redis.call('HGET', p .. 'r:' .. rk, 'name')
      if name and redis.call('HEXISTS', p .. 'r:' .. rk .. ':m', nk) == 1 then
        out[#out + 1] = name
      else
        redis.call('SREM', p .. 'an:' .. nk, rk)
      end
    end
  end
  return out
end)

-- A session of a member account attaches to the room (after registering
-- while its account is in it, or when another session joined it): 1 (K
-- follows on the room's channel), or 0 if the account is not a member.
redis.register_function('mc_attach', function(_, a)
  local p, rk, nk, node, sid, nick = a[1], a[2], a[3], a[4], a[5], a[6]
  local meta = p .. 'r:' .. rk
  local ep = redis.call('HGET', meta, 'epoch')
  if not ep or redis.call('HEXISTS', meta .. ':m', nk) == 0 then
    return 0
  end
  return acct.attached(p, rk, ep, node, sid, nick)
end)

-- An account's session ended. If the account has a session left, what
-- this one held (the nick claim, room entries) passes to it, and nobody
-- is told (0); if not, the account leaves its rooms with the session's
-- reason and its nick is free (1).
redis.register_function('mc_acct_bye', function(_, a)
  local p, sub, nk, node, sid, reason, room_ttl, ttl = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
  redis.call('HDEL', p .. 'acct:' .. sub, node .. '\t' .. sid)
  redis.call('SREM', p .. 'node:' .. node .. ':accts', sub .. '\t' .. sid .. '\t' .. nk)
  local n, s = acct_any(p, sub)
  local rooms = redis.call('SMEMBERS', p .. 'an:' .. nk)
  local nkey = p .. 'nick:' .. nk
  local v = redis.call('GET', nkey)
  local mine = v and fields(v)[1] == node and fields(v)[2] == sid
  if n then
    if mine then
      acct.keep_nick(p, nk, v, ttl)
      redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
    end
    for _, rk in ipairs(rooms) do
      local m = p .. 'r:' .. rk .. ':m'
      local e = redis.call('HGET', m, nk)
      if e then
        local f = fields(e)
        if f[2] == node and f[3] == sid then
          redis.call('HSET', m, nk, f[1] .. '\t' .. n .. '\t' .. s)
          redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
          redis.call('SADD', p .. 'node:' .. n .. ':m', rk .. '\t' .. nk)
        end
      end
    end
    return 0
  end
  for _, rk in ipairs(rooms) do
    local e = redis.call('HGET', p .. 'r:' .. rk .. ':m', nk)
    if e then
      local f = fields(e)
      part(p, rk, nk, f[2], f[3], f[1], reason, room_ttl)
    end
  end
  redis.call('DEL', p .. 'an:' .. nk)
  redis.call('DEL', p .. 'aops:' .. sub)
  if redis.call('GET', p .. 'acctn:' .. nk) == sub then
    redis.call('DEL', p .. 'acctn:' .. nk)
  end
  if mine or (v and fields(v)[5] == sub) then
    redis.call('DEL', nkey)
  end
  redis.call('SREM', p .. 'node:' .. node .. ':nicks', nk)
  return 1
end)

-- A node's rebuild (the store may have lost everything): one of its
-- account sessions (sub, folded nick, nick, session id, then the folded
-- rooms it is in) is the account's again, before the node claims its
-- nicks, so the account's sessions on several nodes share one claim.
redis.register_function('mc_acct_restore', function(_, a)
  local p, sub, nk, nick, node, sid = a[1], a[2], a[3], a[4], a[5], a[6]
  local ak = p .. 'acct:' .. sub
  redis.call('HSET', ak, node .. '\t' .. sid, nick)
  redis.call('SET', p .. 'acctn:' .. nk, sub)
  redis.call('SADD', p .. 'node:' .. node .. ':accts', sub .. '\t' .. sid .. '\t' .. nk)
  for i = 7, #a do
    if redis.call('HEXISTS', p .. 'r:' .. a[i] .. ':m', nk) == 1 then
      redis.call('SADD', p .. 'an:' .. nk, a[i])
    end
  end
  local key = p .. 'nick:' .. nk
  local v = redis.call('GET', key)
  local f = v and fields(v)
  if f and not f[5] and redis.call('HEXISTS', ak, f[1] .. '\t' .. f[2]) == 1 then
    redis.call('SET', key, v .. '\t' .. sub, 'KEEPTTL')
  end
  return 1
end)

-- An account's operator record (see the layout) from a REFRESH's token,
-- or put back by a node's rebuild: sub, record ('' for none), TTL in ms.
redis.register_function('mc_acct_ops', function(_, a)
  acct.set_ops(a[1], a[2], a[3], a[4])
  return 1
end)

-- A version-3 session ended: its key and its msg_ids are kept for the key
-- lifetime from now (if the key is still this session's).
redis.register_function('mc_key_end', function(_, a)
  local p, key, owner, node, sid, kttl = a[1], a[2], a[3], a[4], a[5], a[6]
  local kk = p .. 'key:' .. key
  local kv = redis.call('GET', kk)
  if kv then
    local f = fields(kv)
    if f[2] ~= node or f[3] ~= sid then
      return 0
    end
  end
  redis.call('SET', kk, owner .. '\t' .. node .. '\t' .. sid, 'PX', kttl)
  redis.call('PEXPIRE', p .. 'd:' .. key, kttl)
  redis.call('PEXPIRE', p .. 'd:' .. key .. ':o', kttl)
  return 1
end)

-- An account's newest claims (a REFRESH, or a HELLO with a token), told to
-- every node holding one of its sessions (event C on the node's channel),
-- so all of them follow the token most recently verified for any of its
-- sessions: mc_acct_claims(P, sub, claims record).
redis.register_function('mc_acct_claims', function(_, a)
  local p, sub, rec = a[1], a[2], a[3]
  local told = {}
  for _, k in ipairs(redis.call('HKEYS', p .. 'acct:' .. sub)) do
    local n = fields(k)[1]
    if not told[n] then
      told[n] = true
      redis.call('PUBLISH', p .. 'n:' .. n, 'C\n' .. sub .. '\n' .. rec)
    end
  end
  return 1
end)
