
-- Moderation in a cluster (issue 21): each room's state (topic, modes,
-- bans, operator grants, invitations) and the server-wide bans live here,
-- and every change is one of these functions: the state changes and one
-- event goes out on the channel every node listens to (P modch), from
-- which each node keeps its replica (the JOIN, HELLO and SAY checks stay
-- local) and acts on its own sessions. Layout under the prefix P:
--   P rs:<room>   hash   topic, topic_by, topic_time, modes, v (a counter
--                        bumped by each change: a node's replica skips
--                        an event it already has from a load), ttl (the
--                        state's --room-state-ttl-ms), emptied (ms, while
--                        the room has no members: the hash then has that
--                        TTL), op:<account>, inv:a:<account>, inv:g:<nick>,
--                        ban:<mask> = "until \t by \t reason"
--   P rstates     set    rooms with a state (a load pages through it)
--   P sbans       hash   server-wide bans, mask -> "until \t by \t reason"
--   P sbans:v     string the server-wide bans' counter
-- Events on P modch: "X" then, separated by "\n": kind, room key ("*" for
-- server-wide), v, emptied (ms, 0 while the room has members), actor,
-- until, a, and b (running to the end). Kinds: t topic (a: time, b:
-- topic), m modes (a: bits), o / d op grant or revoke (a: account, b: the
-- nick shown), c the creator's grant (a: account), i invite (a: invitee
-- "a:<account>" or "g:<nick>", b: the nick shown), u invitation spent
-- (a: invitee), b ban (a: mask, b: reason), n unban (a: mask), k kick
-- (a: the nick, b: reason; the member's LEFT follows on the room's
-- channel), K kill (a: folded nick, b: reason), e the room emptied, f it
-- has members again. A room's events and its LEFTs go out in one script,
-- and a node reads both channels on one link: their order holds.

local function mod_now_ms()
  local t = redis.call('TIME')
  return tostring(t[1] * 1000 + math.floor(t[2] / 1000))
end

local function mod_event(p, kind, rk, v, emptied, actor, untl, x, y)
  redis.call('PUBLISH', p .. 'modch',
    'X\n' .. kind .. '\n' .. rk .. '\n' .. v .. '\n' .. emptied .. '\n' .. actor .. '\n'
    .. untl .. '\n' .. x .. '\n' .. y)
end

-- Whether a room's state holds nothing (the creator's grant needs this).
local function stateless(rs)
  if redis.call('EXISTS', rs) == 0 then
    return true
  end
  local h = redis.call('HMGET', rs, 'topic', 'modes')
  if (h[1] or '') ~= '' or (h[2] or '0') ~= '0' then
    return false
  end
  for _, f in ipairs(redis.call('HKEYS', rs)) do
    local k = string.sub(f, 1, 4)
    if string.sub(f, 1, 3) == 'op:' or k == 'inv:' or k == 'ban:' then
      return false
    end
  end
  return true
end

-- One change to a room's state (or, room "*", to the server-wide bans):
-- mc_mod(P, kind, room, actor, until, a, b, ttl). Returns the new v, 0
-- when there was nothing to change (an UNBAN of a mask not banned, a
-- spent invitation already gone, a creator's grant in a room with state).
redis.register_function('mc_mod', function(_, a)
  local p, kind, rk, actor, untl, x, y, ttl = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
  if rk == '*' then
    local key = p .. 'sbans'
    if kind == 'b' then
      redis.call('HSET', key, x, untl .. '\t' .. actor .. '\t' .. y)
    elseif kind == 'n' then
      if redis.call('HDEL', key, x) == 0 then
        return 0
      end
    else
      return redis.error_reply('BADKIND not a server-wide change')
    end
    local v = redis.call('INCR', p .. 'sbans:v')
    mod_event(p, kind, '*', v, '0', actor, untl, x, y)
    return v
  end
  local rs = p .. 'rs:' .. rk
  if kind == 'c' and not stateless(rs) then
    return 0
  end
  if kind == 't' then
    redis.call('HSET', rs, 'topic', y, 'topic_by', actor, 'topic_time', x)
  elseif kind == 'm' then
    redis.call('HSET', rs, 'modes', x)
  elseif kind == 'o' or kind == 'c' then
    redis.call('HSET', rs, 'op:' .. x, '1')
  elseif kind == 'd' then
    redis.call('HDEL', rs, 'op:' .. x)
  elseif kind == 'i' then
    redis.call('HSET', rs, 'inv:' .. x, '1')
  elseif kind == 'u' then
    if redis.call('HDEL', rs, 'inv:' .. x) == 0 then
      return 0
    end
  elseif kind == 'b' then
    redis.call('HSET', rs, 'ban:' .. x, untl .. '\t' .. actor .. '\t' .. y)
  elseif kind == 'n' then
    if redis.call('HDEL', rs, 'ban:' .. x) == 0 then
      return 0
    end
  else
    return redis.error_reply('BADKIND not a room change')
  end
  redis.call('SADD', p .. 'rstates', rk)
  redis.call('HSET', rs, 'ttl', ttl)
  local v = redis.call('HINCRBY', rs, 'v', 1)
  -- A change to a room nobody is in starts its TTL (again); last, so a
  -- TTL of 0 drops it at once, as a standalone server does.
  local emptied = '0'
  if redis.call('HLEN', p .. 'r:' .. rk .. ':m') == 0 then
    emptied = mod_now_ms()
    redis.call('HSET', rs, 'emptied', emptied)
    redis.call('PEXPIRE', rs, ttl)
  else
    redis.call('HDEL', rs, 'emptied')
    redis.call('PERSIST', rs)
  end
  mod_event(p, kind, rk, v, emptied, actor, untl, x, y)
  return v
end)

-- KICK: mc_mod_kick(P, room, folded nick, actor, reason, left reason,
-- room ttl). 0 if the nick is not a member; else the event (MODERATION
-- to the members) then the member's LEFT on the room's channel, once.
redis.register_function('mc_mod_kick', function(_, a)
  local p, rk, nk, actor, reason, why, room_ttl = a[1], a[2], a[3], a[4], a[5], a[6], a[7]
  local cur = redis.call('HGET', p .. 'r:' .. rk .. ':m', nk)
  if not cur then
    return 0
  end
  local m = fields(cur)
  mod_event(p, 'k', rk, '0', '0', actor, '0', m[1], reason)
  part(p, rk, nk, m[2], m[3], m[1], why, room_ttl, 'X')
  return 1
end)

-- A node's member leaves because of a ban (the node matched it):
-- mc_mod_part(P, room, folded nick, node, sid, nick, reason, room ttl).
-- Its LEFT goes out once, as "X" (the member's node follows it, unlike a
-- reap's "L"); 0 if it was not a member any more.
redis.register_function('mc_mod_part', function(_, a)
  return part(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], 'X')
end)

-- KILL: mc_mod_kill(P, folded nick, actor, reason). 0 if nobody has the
-- nick; else every node ends its sessions of it.
redis.register_function('mc_mod_kill', function(_, a)
  local p, nk, actor, reason = a[1], a[2], a[3], a[4]
  if redis.call('EXISTS', p .. 'nick:' .. nk) == 0 then
    return 0
  end
  mod_event(p, 'K', '*', '0', '0', actor, '0', nk, reason)
  return 1
end)

-- OP or INVITE of a nick another node holds: mc_mod_ask(P, folded nick,
-- payload) passes the request to that node, which checks what needs the
-- target's session and calls mc_mod itself. 0 if nobody has the nick.
redis.register_function('mc_mod_ask', function(_, a)
  local p, nk, payload = a[1], a[2], a[3]
  local v = redis.call('GET', p .. 'nick:' .. nk)
  if not v then
    return 0
  end
  redis.call('PUBLISH', p .. 'n:' .. fields(v)[1], payload)
  return 1
end)

-- A page of room states for a node's replica: mc_mod_load(P, cursor,
-- count) -> { next cursor, room, { field, value, ... }, ... }.
redis.register_function('mc_mod_load', function(_, a)
  local p, cursor, count = a[1], a[2], a[3]
  local r = redis.call('SSCAN', p .. 'rstates', cursor, 'COUNT', count)
  local out = { r[1] }
  for _, rk in ipairs(r[2]) do
    local h = redis.call('HGETALL', p .. 'rs:' .. rk)
    if #h == 0 then
      redis.call('SREM', p .. 'rstates', rk)
    else
      out[#out + 1] = rk
      out[#out + 1] = h
    end
  end
  return out
end)

-- A page of server-wide bans: mc_mod_bans(P, cursor, count) -> { next
-- cursor, v, mask, value, ... }.
redis.register_function('mc_mod_bans', function(_, a)
  local p, cursor, count = a[1], a[2], a[3]
  local r = redis.call('HSCAN', p .. 'sbans', cursor, 'COUNT', count)
  local out = { r[1], redis.call('GET', p .. 'sbans:v') or '0' }
  for _, x in ipairs(r[2]) do
    out[#out + 1] = x
  end
  return out
end)

-- After Redis lost its state: a node puts back a room's state from its
-- replica, unless the store has one (another node was first).
-- mc_mod_restore(P, room, ttl, field, value, ...). 1 if put back.
redis.register_function('mc_mod_restore', function(_, a)
  local p, rk, ttl = a[1], a[2], a[3]
  local rs = p .. 'rs:' .. rk
  if redis.call('EXISTS', rs) == 1 then
    return 0
  end
  for i = 4, #a - 1, 2 do
    redis.call('HSET', rs, a[i], a[i + 1])
  end
  redis.call('HSET', rs, 'ttl', ttl)
  redis.call('SADD', p .. 'rstates', rk)
  if redis.call('HLEN', p .. 'r:' .. rk .. ':m') == 0 then
    redis.call('HSET', rs, 'emptied', redis.call('HGET', rs, 'emptied') or mod_now_ms())
    redis.call('PEXPIRE', rs, ttl)
  end
  return 1
end)

-- Likewise the server-wide bans, if the store lost them (no P sbans:v):
-- mc_mod_restore_bans(P, node, first, mask, value, ...). The first chunk
-- finds out, and marks the restore as this node's (P sbans:restoring), so
-- its later chunks go on and another node's restore does not start; a
-- ban the store has is kept.
redis.register_function('mc_mod_restore_bans', function(_, a)
  local p, node, first = a[1], a[2], a[3]
  if first == '1' then
    if redis.call('EXISTS', p .. 'sbans:v') == 1 then
      return 0
    end
    redis.call('SET', p .. 'sbans:v', '0')
    redis.call('SET', p .. 'sbans:restoring', node, 'PX', 60000)
  elseif redis.call('GET', p .. 'sbans:restoring') ~= node then
    return 0
  end
  local n = 0
  for i = 4, #a - 1, 2 do
    n = n + redis.call('HSETNX', p .. 'sbans', a[i], a[i + 1])
  end
  return n
end)
