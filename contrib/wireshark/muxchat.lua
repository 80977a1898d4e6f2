-- muxchat.lua: a Wireshark dissector for the muxchat protocol, versions 1
-- and 2 (version 2 adds HISTORY, ROOM_STATE, HISTORY_MESSAGE, HISTORY_END).
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

local muxchat = Proto("muxchat", "muxchat chat protocol")

local HEADER_LEN = 8

-- Message codes, both directions (the two ranges do not overlap).
local client_codes = {
    [100] = "HELLO", [101] = "JOIN", [102] = "LEAVE", [103] = "SAY",
    [104] = "WHISPER", [105] = "NICK", [106] = "LIST_ROOMS", [107] = "LIST_USERS",
    [108] = "PING", [109] = "PONG", [110] = "QUIT", [111] = "STATS",
    [112] = "HISTORY",
}
local server_codes = {
    [50] = "ERROR", [200] = "WELCOME", [201] = "JOINED", [202] = "LEFT",
    [203] = "MESSAGE", [204] = "WHISPER_FROM", [205] = "NICK_CHANGED",
    [206] = "ROOM_LIST", [207] = "USER_LIST", [208] = "PING", [209] = "PONG",
    [210] = "SHUTDOWN", [211] = "BYE", [212] = "STATS_REPLY",
    [213] = "ROOM_STATE", [214] = "HISTORY_MESSAGE", [215] = "HISTORY_END",
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
}
muxchat.fields = {
    F.direction, F.code, F.name, F.flags, F.length, F.payload, F.str_len,
    F.version, F.nick, F.room, F.text, F.reason, F.token, F.error, F.request,
    F.detail, F.server, F.heartbeat_ms, F.max_payload, F.seq, F.from, F.old,
    F.new, F.count, F.members, F.key, F.value, F.grace_ms,
    F.epoch, F.after_seq, F.limit, F.last_seq, F.first_held, F.time_ms,
    F.newest, F.status, F.status_more, F.status_gap, F.status_new_epoch,
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
            end
            if kind == "u64" then
                seen[#seen + 1] = name .. "=" .. tostring(range:uint64())
            else
                local v = range:uint()
                if name == "count" then count = v end
                if name == "error" then
                    seen[#seen + 1] = error_codes[v] or tostring(v)
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
        local layout = (c2s and layouts_c2s or layouts_s2c)[code]
        local stop = HEADER_LEN + length
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
