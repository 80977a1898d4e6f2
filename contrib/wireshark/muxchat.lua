-- muxchat.lua: a Wireshark dissector for the muxchat protocol, versions 1,
-- 2 and 3 (version 2 adds HISTORY, ROOM_STATE, HISTORY_MESSAGE,
-- HISTORY_END; version 3 adds identity, exactly-once sending and
-- moderation: HELLO/WELCOME/SAY layouts of their own, codes 113-122 and
-- 216-222, errors 24-32).
--
-- Install: copy into your personal Lua plugins folder
--   (Help > About Wireshark > Folders > Personal Lua Plugins, usually
--   ~/.local/lib/wireshark/plugins/), or load it for one run:
--     wireshark -X lua_script:contrib/wireshark/muxchat.lua
--     tshark -X lua_script:contrib/wireshark/muxchat.lua -r chat.pcap -V
--
-- Preferences (Edit > Preferences > Protocols > MUXCHAT, or tshark -o):
--   muxchat.port         TCP port of the server (default 25000)
--   muxchat.max_payload  largest client payload the server accepts (65536)
--   muxchat.show_secrets show tokens and session keys (off: their length)
--
-- The wire format (docs/PROTOCOL.md in the muxchat repository): every frame
-- is an 8-byte header, code u16, flags u16, length u32, all big-endian,
-- then `length` payload bytes. A `str` is a u16 byte length and UTF-8.
--
-- TCP has no message boundaries: one segment may carry several frames, and
-- one frame may be split over several segments. dissect_tcp_pdus() asks us
-- only how long a frame is (get_frame_len) and lets Wireshark's TCP
-- reassembly hand us whole frames, one at a time (dissect_frame).
-- Direction is told by port: towards the server port is client-to-server.
--
-- Version 3 changes three layouts for version-3 sessions only. HELLO and
-- WELCOME carry the version as their first byte, so 3 picks the v3 layout.
-- SAY does not: a v3 SAY is told by its shape (after room and text, exactly
-- the 8 bytes of a msg_id remain), a heuristic that needs no per-session
-- state and reads each frame on its own (a v2 SAY with 8 stray trailing
-- bytes would be shown as v3; the server would have answered MALFORMED).

local muxchat = Proto("muxchat", "muxchat chat protocol")

local HEADER_LEN = 8

-- Message codes, both directions (the two ranges do not overlap).
local client_codes = {
    [100] = "HELLO", [101] = "JOIN", [102] = "LEAVE", [103] = "SAY",
    [104] = "WHISPER", [105] = "NICK", [106] = "LIST_ROOMS", [107] = "LIST_USERS",
    [108] = "PING", [109] = "PONG", [110] = "QUIT", [111] = "STATS",
    [112] = "HISTORY",
    -- Version 3.
    [113] = "REFRESH", [114] = "TOPIC", [115] = "KICK", [116] = "BAN",
    [117] = "UNBAN", [118] = "LIST_BANS", [119] = "MODE", [120] = "INVITE",
    [121] = "OP", [122] = "KILL",
}
local server_codes = {
    [50] = "ERROR", [200] = "WELCOME", [201] = "JOINED", [202] = "LEFT",
    [203] = "MESSAGE", [204] = "WHISPER_FROM", [205] = "NICK_CHANGED",
    [206] = "ROOM_LIST", [207] = "USER_LIST", [208] = "PING", [209] = "PONG",
    [210] = "SHUTDOWN", [211] = "BYE", [212] = "STATS_REPLY",
    [213] = "ROOM_STATE", [214] = "HISTORY_MESSAGE", [215] = "HISTORY_END",
    -- Version 3.
    [216] = "SAY_RESULT", [217] = "REFRESHED", [218] = "ROOM_INFO",
    [219] = "WHISPER_SENT", [220] = "MODERATION", [221] = "BAN_LIST",
    [222] = "INVITED",
}
local all_codes = {}
for k, v in pairs(client_codes) do all_codes[k] = v end
for k, v in pairs(server_codes) do all_codes[k] = v end

local error_codes = {
    [1] = "BAD_FRAME", [2] = "FRAME_TOO_LARGE", [3] = "UNKNOWN_CODE",
    [4] = "MALFORMED", [5] = "BAD_VERSION", [6] = "NOT_REGISTERED",
    [7] = "ALREADY_REGISTERED", [8] = "BAD_NICK", [9] = "NICK_IN_USE",
    [10] = "BAD_ROOM", [11] = "NOT_IN_ROOM", [12] = "NO_SUCH_NICK",
    [13] = "TEXT_TOO_LONG", [14] = "TOO_MANY_ROOMS", [15] = "RATE_LIMITED",
    [16] = "SERVER_FULL", [17] = "SLOW_CONSUMER", [18] = "PING_TIMEOUT",
    [19] = "ALREADY_IN_ROOM", [20] = "SHUTTING_DOWN", [21] = "LOGIN_TIMEOUT",
    [22] = "UNAVAILABLE", [23] = "TLS_REQUIRED",
    -- Version 3.
    [24] = "AUTH_REQUIRED", [25] = "AUTH_FAILED", [26] = "TOKEN_EXPIRED",
    [27] = "NOT_ALLOWED", [28] = "BANNED", [29] = "SESSION_LIMIT",
    [30] = "NOT_FOUND", [31] = "KILLED", [32] = "INVITE_ONLY",
}
-- SAY_RESULT's error 0.
local result_codes = { [0] = "ACCEPTED" }
for k, v in pairs(error_codes) do result_codes[k] = v end
local roles = { [0] = "guest", [1] = "account", [2] = "administrator" }
local actions = {
    [1] = "kick", [2] = "ban", [3] = "unban", [4] = "op", [5] = "deop",
    [6] = "invite", [7] = "kill",
}

-- Fields. Filter with e.g. `muxchat.code == 103` or `muxchat.nick == "alice"`.
local F = {
    direction    = ProtoField.string("muxchat.direction", "Direction"),
    code         = ProtoField.uint16("muxchat.code", "Code", base.DEC, all_codes),
    name         = ProtoField.string("muxchat.name", "Message"),
    flags        = ProtoField.uint16("muxchat.flags", "Flags", base.HEX),
    length       = ProtoField.uint32("muxchat.length", "Payload length", base.DEC),
    payload      = ProtoField.bytes("muxchat.payload", "Payload"),
    str_len      = ProtoField.uint16("muxchat.str_len", "String length", base.DEC),
    version      = ProtoField.uint8("muxchat.version", "Version", base.DEC),
    nick         = ProtoField.string("muxchat.nick", "Nick", base.UNICODE),
    room         = ProtoField.string("muxchat.room", "Room", base.UNICODE),
    text         = ProtoField.string("muxchat.text", "Text", base.UNICODE),
    reason       = ProtoField.string("muxchat.reason", "Reason", base.UNICODE),
    token        = ProtoField.uint64("muxchat.token", "Token", base.DEC),
    error        = ProtoField.uint16("muxchat.error", "Error", base.DEC, error_codes),
    request      = ProtoField.uint16("muxchat.request", "Request code", base.DEC, client_codes),
    detail       = ProtoField.string("muxchat.detail", "Detail", base.UNICODE),
    server       = ProtoField.string("muxchat.server", "Server", base.UNICODE),
    heartbeat_ms = ProtoField.uint32("muxchat.heartbeat_ms", "Heartbeat (ms)", base.DEC),
    max_payload  = ProtoField.uint32("muxchat.max_payload", "Max payload", base.DEC),
    seq          = ProtoField.uint64("muxchat.seq", "Sequence", base.DEC),
    from         = ProtoField.string("muxchat.from", "From", base.UNICODE),
    old          = ProtoField.string("muxchat.old", "Old nick", base.UNICODE),
    new          = ProtoField.string("muxchat.new", "New nick", base.UNICODE),
    count        = ProtoField.uint16("muxchat.count", "Count", base.DEC),
    members      = ProtoField.uint32("muxchat.members", "Members", base.DEC),
    key          = ProtoField.string("muxchat.key", "Key", base.UNICODE),
    value        = ProtoField.uint64("muxchat.value", "Value", base.DEC),
    grace_ms     = ProtoField.uint32("muxchat.grace_ms", "Grace (ms)", base.DEC),
    -- Version 2.
    epoch        = ProtoField.uint64("muxchat.epoch", "Epoch", base.DEC),
    after_seq    = ProtoField.uint64("muxchat.after_seq", "After seq", base.DEC),
    limit        = ProtoField.uint16("muxchat.limit", "Limit (0 = server maximum)", base.DEC),
    last_seq     = ProtoField.uint64("muxchat.last_seq", "Last seq", base.DEC),
    first_held   = ProtoField.uint64("muxchat.first_held", "First held seq", base.DEC),
    time_ms      = ProtoField.uint64("muxchat.time_ms", "Time (ms since 1970)", base.DEC),
    newest       = ProtoField.uint64("muxchat.newest", "Newest seq", base.DEC),
    status       = ProtoField.uint8("muxchat.status", "Status", base.HEX),
    status_more  = ProtoField.bool("muxchat.status.more", "More held (ask again)", 8, nil, 0x01),
    status_gap   = ProtoField.bool("muxchat.status.gap", "Gap (some messages no longer held)", 8, nil, 0x02),
    status_new_epoch = ProtoField.bool("muxchat.status.new_epoch", "New epoch (room re-created)", 8, nil, 0x04),
    -- Version 3.
    auth_token   = ProtoField.string("muxchat.auth_token", "Token (JWT)", base.UNICODE),
    session_key  = ProtoField.string("muxchat.session_key", "Session key", base.UNICODE),
    account      = ProtoField.string("muxchat.account", "Account", base.UNICODE),
    role         = ProtoField.uint8("muxchat.role", "Role", base.DEC, roles),
    token_exp_ms = ProtoField.uint64("muxchat.token_exp_ms", "Token expires (ms since 1970)", base.DEC),
    msg_id       = ProtoField.uint64("muxchat.msg_id", "Message id", base.DEC),
    result       = ProtoField.uint16("muxchat.result", "Result", base.DEC, result_codes),
    topic        = ProtoField.string("muxchat.topic", "Topic", base.UNICODE),
    topic_by     = ProtoField.string("muxchat.topic_by", "Topic set by", base.UNICODE),
    topic_time_ms = ProtoField.uint64("muxchat.topic_time_ms", "Topic set at (ms since 1970)", base.DEC),
    modes        = ProtoField.uint16("muxchat.modes", "Modes", base.HEX),
    modes_moderated = ProtoField.bool("muxchat.modes.moderated", "Moderated", 16, nil, 0x0001),
    modes_invite_only = ProtoField.bool("muxchat.modes.invite_only", "Invite-only", 16, nil, 0x0002),
    modes_accounts_only = ProtoField.bool("muxchat.modes.accounts_only", "Accounts only", 16, nil, 0x0004),
    set          = ProtoField.uint16("muxchat.set", "Modes set", base.HEX),
    clear        = ProtoField.uint16("muxchat.clear", "Modes cleared", base.HEX),
    mask         = ProtoField.string("muxchat.mask", "Ban mask", base.UNICODE),
    duration_s   = ProtoField.uint32("muxchat.duration_s", "Duration (s, 0 = until lifted)", base.DEC),
    until_ms     = ProtoField.uint64("muxchat.until_ms", "Until (ms since 1970, 0 = none)", base.DEC),
    action       = ProtoField.uint8("muxchat.action", "Action", base.DEC, actions),
    actor        = ProtoField.string("muxchat.actor", "Actor", base.UNICODE),
    target       = ProtoField.string("muxchat.target", "Target", base.UNICODE),
    grant        = ProtoField.uint8("muxchat.grant", "Grant (1) or revoke (0)", base.DEC),
    by           = ProtoField.string("muxchat.by", "By", base.UNICODE),
    to           = ProtoField.string("muxchat.to", "To", base.UNICODE),
}
muxchat.fields = {
    F.direction, F.code, F.name, F.flags, F.length, F.payload, F.str_len,
    F.version, F.nick, F.room, F.text, F.reason, F.token, F.error, F.request,
    F.detail, F.server, F.heartbeat_ms, F.max_payload, F.seq, F.from, F.old,
    F.new, F.count, F.members, F.key, F.value, F.grace_ms,
    F.epoch, F.after_seq, F.limit, F.last_seq, F.first_held, F.time_ms,
    F.newest, F.status, F.status_more, F.status_gap, F.status_new_epoch,
    F.auth_token, F.session_key, F.account, F.role, F.token_exp_ms, F.msg_id,
    F.result, F.topic, F.topic_by, F.topic_time_ms, F.modes, F.modes_moderated,
    F.modes_invite_only, F.modes_accounts_only, F.set, F.clear, F.mask,
    F.duration_s, F.until_ms, F.action, F.actor, F.target, F.grant, F.by, F.to,
}

local E = {
    flags     = ProtoExpert.new("muxchat.flags_set", "Reserved flags set (server answers BAD_FRAME)",
                                expert.group.PROTOCOL, expert.severity.WARN),
    too_large = ProtoExpert.new("muxchat.too_large", "Length above max payload (FRAME_TOO_LARGE, fatal)",
                                expert.group.PROTOCOL, expert.severity.ERROR),
    unknown   = ProtoExpert.new("muxchat.unknown_code", "Code unknown in this direction",
                                expert.group.PROTOCOL, expert.severity.WARN),
    short     = ProtoExpert.new("muxchat.short", "Payload too short for its layout (MALFORMED)",
                                expert.group.MALFORMED, expert.severity.ERROR),
    trailing  = ProtoExpert.new("muxchat.trailing", "Trailing bytes after the last field (MALFORMED)",
                                expert.group.MALFORMED, expert.severity.ERROR),
    error     = ProtoExpert.new("muxchat.error_frame", "Server sent ERROR",
                                expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
muxchat.experts = { E.flags, E.too_large, E.unknown, E.short, E.trailing, E.error }

muxchat.prefs.port = Pref.uint("TCP port", 25000, "TCP port of the muxchat server")
muxchat.prefs.max_payload = Pref.uint("Max payload", 65536,
    "Largest client payload the server accepts (its --max-payload); a longer "
    .. "declared length is FRAME_TOO_LARGE and its payload is never read")
muxchat.prefs.show_secrets = Pref.bool("Show secrets", false,
    "Show version-3 tokens and session keys in full (off: only their length, "
    .. "so a screenshot or a shared dissection does not leak a sign-in)")

-- Payload layouts, field by field, in wire order (protocol.md). A list is
-- { "list", item layout }: a u16 count (already read as `count`), then
-- that many items.
local layouts_c2s = {
    [100] = { { "u8", "version" }, { "str", "nick" } },
    [101] = { { "str", "room" } },
    [102] = { { "str", "room" } },
    [103] = { { "str", "room" }, { "str", "text" } },
    [104] = { { "str", "nick" }, { "str", "text" } },
    [105] = { { "str", "nick" } },
    [106] = {},
    [107] = { { "str", "room" } },
    [108] = { { "u64", "token" } },
    [109] = { { "u64", "token" } },
    [110] = { { "str", "reason" } },
    [111] = {},
    [112] = { { "str", "room" }, { "u64", "epoch" }, { "u64", "after_seq" }, { "u16", "limit" } },
}
local layouts_s2c = {
    [50]  = { { "u16", "error" }, { "u16", "request" }, { "str", "detail" } },
    [200] = { { "u8", "version" }, { "str", "nick" }, { "str", "server" },
              { "u32", "heartbeat_ms" }, { "u32", "max_payload" } },
    [201] = { { "str", "room" }, { "str", "nick" } },
    [202] = { { "str", "room" }, { "str", "nick" }, { "str", "reason" } },
    [203] = { { "str", "room" }, { "u64", "seq" }, { "str", "from" }, { "str", "text" } },
    [204] = { { "str", "from" }, { "str", "text" } },
    [205] = { { "str", "old" }, { "str", "new" } },
    [206] = { { "u16", "count" }, { "list", { { "str", "room" }, { "u32", "members" } } } },
    [207] = { { "str", "room" }, { "u16", "count" }, { "list", { { "str", "nick" } } } },
    [208] = { { "u64", "token" } },
    [209] = { { "u64", "token" } },
    [210] = { { "u32", "grace_ms" }, { "str", "reason" } },
    [211] = { { "str", "reason" } },
    [212] = { { "u16", "count" }, { "list", { { "str", "key" }, { "u64", "value" } } } },
    [213] = { { "str", "room" }, { "u64", "epoch" }, { "u64", "last_seq" }, { "u64", "first_held" } },
    [214] = { { "str", "room" }, { "u64", "seq" }, { "u64", "time_ms" }, { "str", "from" },
              { "str", "text" } },
    [215] = { { "str", "room" }, { "u64", "epoch" }, { "u64", "newest" }, { "u8", "status" } },
}

-- Version 3: the layouts it changes (picked as the header comment says)
-- and the codes it adds. "secret" is a str shown as its length unless the
-- show_secrets preference is on.
local hello_v3 = { { "u8", "version" }, { "str", "nick" }, { "secret", "auth_token" },
                   { "secret", "session_key" } }
local welcome_v3 = { { "u8", "version" }, { "str", "nick" }, { "str", "server" },
                     { "u32", "heartbeat_ms" }, { "u32", "max_payload" }, { "str", "account" },
                     { "u8", "role" }, { "secret", "session_key" }, { "u64", "token_exp_ms" } }
local say_v3 = { { "str", "room" }, { "str", "text" }, { "u64", "msg_id" } }
layouts_c2s[113] = { { "secret", "auth_token" } }
layouts_c2s[114] = { { "str", "room" }, { "str", "topic" } }
layouts_c2s[115] = { { "str", "room" }, { "str", "nick" }, { "str", "reason" } }
layouts_c2s[116] = { { "str", "room" }, { "str", "mask" }, { "u32", "duration_s" }, { "str", "reason" } }
layouts_c2s[117] = { { "str", "room" }, { "str", "mask" } }
layouts_c2s[118] = { { "str", "room" } }
layouts_c2s[119] = { { "str", "room" }, { "u16", "set" }, { "u16", "clear" } }
layouts_c2s[120] = { { "str", "room" }, { "str", "nick" } }
layouts_c2s[121] = { { "str", "room" }, { "str", "nick" }, { "u8", "grant" } }
layouts_c2s[122] = { { "str", "nick" }, { "str", "reason" } }
layouts_s2c[216] = { { "u64", "msg_id" }, { "str", "room" }, { "u64", "epoch" }, { "u64", "seq" },
                     { "u16", "result" } }
layouts_s2c[217] = { { "u64", "token_exp_ms" } }
layouts_s2c[218] = { { "str", "room" }, { "str", "topic" }, { "str", "topic_by" },
                     { "u64", "topic_time_ms" }, { "u16", "modes" } }
layouts_s2c[219] = { { "str", "to" }, { "str", "text" } }
layouts_s2c[220] = { { "str", "room" }, { "str", "actor" }, { "u8", "action" }, { "str", "target" },
                     { "str", "reason" }, { "u64", "until_ms" } }
layouts_s2c[221] = { { "str", "room" }, { "u16", "count" },
                     { "list", { { "str", "mask" }, { "str", "by" }, { "str", "reason" },
                                 { "u64", "until_ms" } } } }
layouts_s2c[222] = { { "str", "room" }, { "str", "by" } }

-- Whether a SAY payload (from `off` to `stop`) has the v3 shape: two strs,
-- then exactly 8 bytes.
local function is_say_v3(tvb, off, stop)
    for _ = 1, 2 do
        if off + 2 > stop then return false end
        off = off + 2 + tvb(off, 2):uint()
    end
    return off + 8 == stop
end

-- The layout of a frame, and whether it is version 3's.
local function layout_of(tvb, code, c2s, stop)
    local first = (stop > HEADER_LEN) and tvb(HEADER_LEN, 1):uint() or nil
    if c2s and code == 100 and first == 3 then return hello_v3, true end
    if not c2s and code == 200 and first == 3 then return welcome_v3, true end
    if c2s and code == 103 and is_say_v3(tvb, HEADER_LEN, stop) then return say_v3, true end
    local layout = (c2s and layouts_c2s or layouts_s2c)[code]
    return layout, (code >= 113 and code <= 122) or (code >= 216 and code <= 222)
end

local SIZES = { u8 = 1, u16 = 2, u32 = 4, u64 = 8 }

-- True if this frame travels towards the server.
local function to_server(pinfo, code)
    local port = muxchat.prefs.port
    if pinfo.dst_port == port and pinfo.src_port ~= port then return true end
    if pinfo.src_port == port and pinfo.dst_port ~= port then return false end
    return client_codes[code] ~= nil -- "Decode As" on another port: guess
end

-- Reads fields of `layout` from payload offset `off` (absolute in tvb) up
-- to `stop`. Returns the new offset, or nil if the payload ran out. Fills
-- `seen` with display values for the Info column.
local function read_fields(tvb, tree, layout, off, stop, seen)
    local count = 0
    for _, item in ipairs(layout) do
        local kind, name = item[1], item[2]
        if kind == "list" then
            for i = 1, count do
                local sub = tree:add(muxchat, tvb(off, 0), "Item " .. i)
                local start, item_seen = off, {}
                off = read_fields(tvb, sub, name, off, stop, item_seen)
                if off == nil then return nil end
                sub:set_len(off - start)
                sub:append_text(": " .. table.concat(item_seen, " "))
            end
        elseif kind == "secret" then
            if off + 2 > stop then return nil end
            local len = tvb(off, 2):uint()
            if off + 2 + len > stop then return nil end
            tree:add(F.str_len, tvb(off, 2))
            local range = tvb(off + 2, len)
            if muxchat.prefs.show_secrets then
                tree:add(F[name], range, range:string(ENC_UTF_8))
            else
                tree:add(F[name], range, "<" .. len .. " bytes>")
            end
            seen[#seen + 1] = name .. "=<" .. len .. " bytes>"
            off = off + 2 + len
        elseif kind == "str" then
            if off + 2 > stop then return nil end
            local len = tvb(off, 2):uint()
            if off + 2 + len > stop then return nil end
            tree:add(F.str_len, tvb(off, 2))
            local range = tvb(off + 2, len)
            tree:add(F[name], range, range:string(ENC_UTF_8))
            seen[#seen + 1] = name .. "=" .. range:string(ENC_UTF_8)
            off = off + 2 + len
        else
            local size = SIZES[kind]
            if off + size > stop then return nil end
            local range = tvb(off, size)
            local node = tree:add(F[name], range)
            if name == "status" then
                -- HISTORY_END's status is a set of bits.
                node:add(F.status_more, range)
                node:add(F.status_gap, range)
                node:add(F.status_new_epoch, range)
            elseif name == "modes" then
                node:add(F.modes_moderated, range)
                node:add(F.modes_invite_only, range)
                node:add(F.modes_accounts_only, range)
            end
            if kind == "u64" then
                seen[#seen + 1] = name .. "=" .. tostring(range:uint64())
            else
                local v = range:uint()
                if name == "count" then count = v end
                if name == "error" then
                    seen[#seen + 1] = error_codes[v] or tostring(v)
                elseif name == "result" then
                    seen[#seen + 1] = result_codes[v] or tostring(v)
                elseif name == "role" then
                    seen[#seen + 1] = "role=" .. (roles[v] or tostring(v))
                elseif name == "action" then
                    seen[#seen + 1] = actions[v] or ("action=" .. v)
                elseif name ~= "count" then
                    seen[#seen + 1] = name .. "=" .. v
                end
            end
            off = off + size
        end
    end
    return off
end

-- The Info column lists every frame of a packet; these track which packet
-- we are in, so the first frame replaces the column and the others append.
local info_packet, info_first = -1, true

-- How long the frame starting at `offset` is, header included. Called by
-- dissect_tcp_pdus with at least HEADER_LEN bytes available.
local function get_frame_len(tvb, pinfo, offset)
    local code = tvb(offset, 2):uint()
    local length = tvb(offset + 4, 4):uint()
    if to_server(pinfo, code) and length > muxchat.prefs.max_payload then
        -- The server stops at the header: the payload is never read.
        return HEADER_LEN
    end
    return HEADER_LEN + length
end

-- Dissects exactly one whole frame.
local function dissect_frame(tvb, pinfo, tree)
    local code = tvb(0, 2):uint()
    local flags = tvb(2, 2):uint()
    local length = tvb(4, 4):uint()
    local c2s = to_server(pinfo, code)
    local names = c2s and client_codes or server_codes
    local name = names[code] or ("UNKNOWN(" .. code .. ")")

    local sub = tree:add(muxchat, tvb(), "muxchat " .. name)
    sub:add(F.direction, c2s and "client->server" or "server->client"):set_generated()
    sub:add(F.name, name):set_generated()
    sub:add(F.code, tvb(0, 2))
    local fl = sub:add(F.flags, tvb(2, 2))
    if flags ~= 0 then fl:add_proto_expert_info(E.flags) end
    local ln = sub:add(F.length, tvb(4, 4))

    local seen = {}
    if c2s and length > muxchat.prefs.max_payload then
        ln:add_proto_expert_info(E.too_large)
        seen[1] = "length=" .. length .. " (too large)"
    elseif length > 0 or (c2s and layouts_c2s or layouts_s2c)[code] then
        local stop = HEADER_LEN + length
        local layout, v3 = layout_of(tvb, code, c2s, stop)
        if v3 then sub:append_text(" (version 3)") end
        if layout == nil then
            sub:add_proto_expert_info(E.unknown)
            sub:add(F.payload, tvb(HEADER_LEN, length))
        else
            local off = read_fields(tvb, sub, layout, HEADER_LEN, stop, seen)
            if off == nil then
                sub:add_proto_expert_info(E.short)
            elseif off < stop then
                sub:add(F.payload, tvb(off, stop - off))
                sub:add_proto_expert_info(E.trailing)
            end
        end
        if code == 50 and not c2s then sub:add_proto_expert_info(E.error) end
    end
    sub:append_text(" (" .. (HEADER_LEN + math.min(length, tvb:len() - HEADER_LEN)) .. " bytes)")

    local summary = name
    if #seen > 0 then summary = summary .. " " .. table.concat(seen, " ") end
    pinfo.cols.protocol = "MUXCHAT"
    if info_packet ~= pinfo.number then
        info_packet, info_first = pinfo.number, true
    end
    if info_first then
        pinfo.cols.info = summary
        info_first = false
    else
        pinfo.cols.info:append(", " .. summary)
    end
    return tvb:len()
end

function muxchat.dissector(tvb, pinfo, tree)
    info_packet = -1 -- a new call: the first frame resets the Info column
    -- true: ask TCP to reassemble frames that span segments.
    dissect_tcp_pdus(tvb, tree, HEADER_LEN, get_frame_len, dissect_frame, true)
    return tvb:len()
end

-- Register on the preferred port, and move when the preference changes.
local tcp_port = DissectorTable.get("tcp.port")
local registered_port = muxchat.prefs.port
tcp_port:add(registered_port, muxchat)

function muxchat.prefs_changed()
    if registered_port ~= muxchat.prefs.port then
        if registered_port ~= 0 then tcp_port:remove(registered_port, muxchat) end
        registered_port = muxchat.prefs.port
        if registered_port ~= 0 then tcp_port:add(registered_port, muxchat) end
    end
end
