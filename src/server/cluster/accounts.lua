
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

-- Version 3's HELLO: the nick claim (as mc_hello) and the session key in
-- one step. The key presented is kept if the store has it for the same
-- owner; otherwise the fresh one the node drew is taken (SET NX: unique
-- in the cluster). Returns { 'ok', claimed, key, kept (1/0) }, or
-- { 'taken' } (another session holds the nick), { 'same' } (a session of
-- the same account holds it), { 'again' } (the fresh key exists: draw
-- another).
redis.register_function('mc_hello3', function(_, a)
  local p, nk, nick, node, sid, ttl, owner, key, fresh, kttl, sub =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]
  local nkey = p .. 'nick:' .. nk
  local at = now_us()
  local val = node .. '\t' .. sid .. '\t' .. nick .. '\t' .. at
  if sub ~= '' then
    val = val .. '\t' .. sub
  end
  if not redis.call('SET', nkey, val, 'NX', 'PX', ttl) then
    local f = fields(redis.call('GET', nkey) or '')
    if sub ~= '' and f[5] == sub then
      return { 'same' }
    end
    return { 'taken' }
  end
  local rec = owner .. '\t' .. node .. '\t' .. sid
  if key ~= '' then
    local kk = p .. 'key:' .. key
    local kv = redis.call('GET', kk)
    if kv and fields(kv)[1] == owner then
      redis.call('SET', kk, rec, 'PX', kttl)
      redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
      return { 'ok', at, key, 1 }
    end
  end
  if not redis.call('SET', p .. 'key:' .. fresh, rec, 'NX', 'PX', kttl) then
    redis.call('DEL', nkey)
    return { 'again' }
  end
  redis.call('SADD', p .. 'node:' .. node .. ':nicks', nk)
  return { 'ok', at, fresh, 0 }
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
