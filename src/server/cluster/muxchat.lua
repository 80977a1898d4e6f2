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
--   P nick:<nick>     string "node \t session id \t nick", with a TTL the
--                             owning node refreshes
--   P nodes           set    node ids;  P alive:<node>  string with a TTL
--   P quiet           string, with a TTL: no node is reaped while it lives
--   P node:<node>:m   set    "room \t nick" memberships of a node's sessions
--   P node:<node>:nicks set  folded nicks of a node's sessions
--   channels: P c:<room> (room events), P nickch (NICK), P n:<node> (WHISPER)
-- Events are text: a kind letter and fields separated by "\n", the last
-- field (a text or a reason) running to the end.

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

local function room_empty(p, rk, ttl)
  local meta = p .. 'r:' .. rk
  redis.call('SREM', p .. 'rooms', rk)
  if tonumber(ttl) > 0 then
    redis.call('PEXPIRE', meta, ttl)
    redis.call('PEXPIRE', meta .. ':s', ttl)
  else
    redis.call('DEL', meta, meta .. ':m', meta .. ':s')
  end
end

-- A member leaves: LEFT on the room's channel, counting the leaver.
-- Returns 0 (and publishes nothing) if it was not a member: the node
-- then completes the leave itself.
local function part(p, rk, nk, node, sid, nick, reason, ttl)
  local meta = p .. 'r:' .. rk
  local before = redis.call('HLEN', meta .. ':m')
  redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. nk)
  if redis.call('HDEL', meta .. ':m', nk) == 0 then
    return 0
  end
  local seq = redis.call('HGET', meta, 'seq') or '0'
  redis.call('PUBLISH', p .. 'c:' .. rk,
    'L\n' .. seq .. '\n' .. before .. '\n' .. node .. '\n' .. sid .. '\n' .. nick .. '\n' .. reason)
  if redis.call('HLEN', meta .. ':m') == 0 and redis.call('EXISTS', meta) == 1 then
    room_empty(p, rk, ttl)
  end
  return 1
end

-- Everything a dead node held: its members leave ("node lost"), its
-- nicks are freed.
local function reap(p, node, ttl)
  for _, e in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':m')) do
    local f = fields(e)
    local v = redis.call('HGET', p .. 'r:' .. f[1] .. ':m', f[2])
    if v then
      local m = fields(v)
      if m[2] == node then
        part(p, f[1], f[2], node, m[3], m[1], 'node lost', ttl)
      end
    end
  end
  for _, nk in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':nicks')) do
    local v = redis.call('GET', p .. 'nick:' .. nk)
    if v and fields(v)[1] == node then
      redis.call('DEL', p .. 'nick:' .. nk)
    end
  end
  redis.call('DEL', p .. 'node:' .. node .. ':m', p .. 'node:' .. node .. ':nicks')
  redis.call('SREM', p .. 'nodes', node)
end

-- HELLO: claim a nick cluster-wide. 1, or 0 if it is taken.
redis.register_function('mc_hello', function(_, a)
  local p, nk, nick, node, sid, ttl = a[1], a[2], a[3], a[4], a[5], a[6]
  if not redis.call('SET', p .. 'nick:' .. nk, node .. '\t' .. sid .. '\t' .. nick, 'NX', 'PX', ttl) then
    return 0
  end
  redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
  return 1
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
  local p, rk, name, epoch, nk, nick, node, sid = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
  local meta = p .. 'r:' .. rk
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
  return 1
end)

-- LEAVE (or a session's end): LEFT to the room; the room goes (or
-- lingers) when its last member leaves.
redis.register_function('mc_leave', function(_, a)
  return part(a[1], a[2], a[3], a[5], a[6], a[4], a[7], a[8])
end)

-- SAY: the seq, the stream entry and the MESSAGE in one step. An error if
-- the room is not the incarnation the node knows.
redis.register_function('mc_say', function(_, a)
  local p, rk, epoch, nick, text, time, maxlen = a[1], a[2], a[3], a[4], a[5], a[6], a[7]
  local meta = p .. 'r:' .. rk
  if redis.call('HGET', meta, 'epoch') ~= epoch then
    return redis.error_reply('NOROOM the room is not known to the cluster store')
  end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  if tonumber(maxlen) > 0 then
    redis.call('XADD', meta .. ':s', 'MAXLEN', maxlen, seq .. '-0', 't', time, 'f', nick, 'x', text)
  end
  redis.call('PUBLISH', p .. 'c:' .. rk,
    'M\n' .. epoch .. '\n' .. seq .. '\n' .. time .. '\n' .. nick .. '\n' .. text)
  return seq
end)

-- WHISPER: to the node holding the nick. 1, or 0 if nobody has it.
redis.register_function('mc_whisper', function(_, a)
  local p, nk, from, text = a[1], a[2], a[3], a[4]
  local v = redis.call('GET', p .. 'nick:' .. nk)
  if not v then
    return 0
  end
  local f = fields(v)
  redis.call('PUBLISH', p .. 'n:' .. f[1], 'W\n' .. f[2] .. '\n' .. from .. '\n' .. text)
  return 1
end)

-- NICK: claim the new nick, free the old one, rename the memberships and
-- tell every node which rooms the session is in. 1, or 0 if taken.
redis.register_function('mc_nick', function(_, a)
  local p, onk, nnk, old, new, node, sid, ttl = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
  local val = node .. '\t' .. sid .. '\t' .. new
  if onk == nnk then
    redis.call('SET', p .. 'nick:' .. nnk, val, 'PX', ttl)
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
  for i = 9, #a do
    local rk = a[i]
    local m = p .. 'r:' .. rk .. ':m'
    redis.call('HDEL', m, onk)
    redis.call('HSET', m, nnk, new .. '\t' .. node .. '\t' .. sid)
    redis.call('SREM', p .. 'node:' .. node .. ':m', rk .. '\t' .. onk)
    redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. nnk)
    rooms[#rooms + 1] = rk
  end
  redis.call('PUBLISH', p .. 'nickch',
    'N\n' .. node .. '\n' .. sid .. '\n' .. table.concat(rooms, ' ') .. '\n' .. old .. '\n' .. new)
  return 1
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
  local out, seen, cursor = { name }, {}, '0'
  repeat
    local r = redis.call('HSCAN', meta .. ':m', cursor, 'COUNT', 512)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      if #out > max then
        return out
      end
      if not seen[kv[i]] then
        seen[kv[i]] = true
        out[#out + 1] = fields(kv[i + 1])[1]
      end
    end
  until cursor == '0'
  return out
end)

-- A node's heartbeat: its liveness key and its nicks' TTLs refreshed, and
-- every node whose liveness key expired reaped. Returns how many were,
-- and whether the store still knew this node (0: it lost it, by a flush,
-- an eviction, or a stall longer than the TTL: the node rebuilds).
redis.register_function('mc_alive', function(_, a)
  local p, node, ttl, room_ttl = a[1], a[2], a[3], a[4]
  local known = redis.call('EXISTS', p .. 'alive:' .. node)
  redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
  redis.call('SADD', p .. 'nodes', node)
  for _, nk in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':nicks')) do
    redis.call('PEXPIRE', p .. 'nick:' .. nk, ttl)
  end
  -- This node's own key lapsed: the store refused or lost heartbeats (an
  -- OOM spell refuses every write, a restart or flush loses the keys) or
  -- this node could not reach it. Every other node's key may have lapsed
  -- the same way although it lives: nobody is reaped for one TTL, by
  -- when every live node has beaten again (every third of it).
  if known == 0 then
    redis.call('SET', p .. 'quiet', '1', 'PX', ttl)
  end
  local lost = 0
  if redis.call('EXISTS', p .. 'quiet') == 1 then
    return { lost, known }
  end
  for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
    if redis.call('EXISTS', p .. 'alive:' .. n) == 0 then
      reap(p, n, room_ttl)
      lost = lost + 1
    end
  end
  return { lost, known }
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
  for i = 7, #a - 2, 3 do
    redis.call('HSET', meta .. ':m', a[i], a[i + 1] .. '\t' .. node .. '\t' .. a[i + 2])
    redis.call('SADD', p .. 'node:' .. node .. ':m', rk .. '\t' .. a[i])
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

-- After the restore: re-claims one of the node's nicks ("nk \t sid \t nick").
-- 0 if someone else took it meanwhile.
redis.register_function('mc_claim', function(_, a)
  local p, node, ttl = a[1], a[2], a[3]
  local taken = 0
  for i = 4, #a, 3 do
    local key = p .. 'nick:' .. a[i]
    local val = node .. '\t' .. a[i + 1] .. '\t' .. a[i + 2]
    local v = redis.call('GET', key)
    if v and fields(v)[1] ~= node then
      taken = taken + 1
    else
      redis.call('SET', key, val, 'PX', ttl)
      redis.call('SADD', p .. 'node:' .. node .. ':nicks', a[i])
    end
  end
  return taken
end)
