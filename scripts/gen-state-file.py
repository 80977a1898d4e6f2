#!/usr/bin/env python3
"""Writes a muxchatd --state-file (format version 1, see
src/server/moderation/state_file.rs) for the moderation benchmarks.

    scripts/gen-state-file.py OUT SERVER_BANS [ROOM_BANS [ROOM_PREFIX]]

SERVER_BANS server-wide bans of mixed kinds: 1,000 nick globs (or fewer
when SERVER_BANS is small), then, of the rest, 30% accounts, 30% exact
nicks, 20% IPv4 CIDRs and 20% IPv6 CIDRs. ROOM_BANS room bans spread
over rooms ROOM_PREFIX0, ROOM_PREFIX1, ... (1,000 bans each, the most a
room holds). No mask matches a loopback address, a muxload nick
(TAG_ID) or the bystander's nick, so the daemon checks every ban and
refuses no one.
"""
import json, sys

ROOM_MAX = 1000

def server_bans(n):
    bans = []
    globs = min(1000, n)
    for i in range(globs):
        # A glob with a literal head and a wildcard: the matcher cannot
        # answer it from an exact-nick table.
        bans.append(f"nick:zz{i}*q?")
    rest = n - globs
    kinds = [("account", 0.3), ("nick", 0.3), ("ip4", 0.2), ("ip6", 0.2)]
    counts = [int(rest * share) for _, share in kinds]
    counts[0] += rest - sum(counts)
    for (kind, _), c in zip(kinds, counts):
        for i in range(c):
            if kind == "account":
                bans.append(f"account:banned-account-{i}")
            elif kind == "nick":
                bans.append(f"nick:banned_nick_{i}")
            elif kind == "ip4":
                # 10.a.b.0/24 and up into 11.x: never 127.0.0.0/8.
                bans.append(f"ip:{10 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24")
            else:
                bans.append(f"ip:2001:db8:{i // 65536:x}:{i % 65536:x}::/64")
    return [{"mask": m, "by": "bench", "reason": "benchmark", "until_ms": 0} for m in bans]

def rooms(n, prefix):
    out = []
    for r in range((n + ROOM_MAX - 1) // ROOM_MAX):
        k = min(ROOM_MAX, n - r * ROOM_MAX)
        out.append({
            "name": f"{prefix}{r}",
            "topic": "benchmark room",
            "modes": 0,
            "ops": [],
            "bans": [{"mask": f"nick:roomban_{r}_{i}", "by": "bench", "reason": "", "until_ms": 0}
                     for i in range(k)],
        })
    return out

def main():
    out, n = sys.argv[1], int(sys.argv[2])
    room_bans = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    prefix = sys.argv[4] if len(sys.argv) > 4 else "#bench-bans-"
    doc = {"version": 1, "rooms": rooms(room_bans, prefix), "server_bans": server_bans(n)}
    with open(out, "w") as f:
        json.dump(doc, f)

if __name__ == "__main__":
    main()
