#!/usr/bin/env python3
"""Formats muxload --json results for scripts/bench-matrix.sh.

  bench-row.py --brief   < one muxload JSON line   -> one short line
  bench-row.py --table   < raw.jsonl                -> the markdown table
  bench-row.py --compare < compare.jsonl            -> muxchatd vs Redis table

The table groups runs by scenario name (probes of a rate search are left
out) and shows the median of each column over the runs.
"""
import json
import statistics
import sys


def brief(r):
    if r is None:
        return "   (no result)"
    lat = r["latency_us"]
    loss = r["loss"]
    return (
        f"   delivered {r['delivered_per_s']:,.0f}/s  published {r['published_per_s']:,.0f}/s  "
        f"p50 {lat['p50']:,.0f}us p99 {lat['p99']:,.0f}us max {lat['max']:,.0f}us  "
        f"lost {loss['lost']} cut {loss['cut']} errors {r['errors'] or 'none'}  "
        f"ready {r['ready']}/{r['clients']}  muxload {r['cpu']['busy_pct']:.0f}%  "
        f"daemon {r['daemon_busy_pct']}%  rss/conn {r['daemon_rss_per_conn_b']} B"
    )


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit="", digits=0):
    if v is None:
        return "-"
    if unit == "us":
        return f"{v / 1000:,.2f} ms" if v >= 1000 else f"{v:,.0f} us"
    return f"{v:,.{digits}f}{unit}"


def table(rows):
    groups = {}
    for row in rows:
        if row["name"].endswith("/probe") or row["result"] is None:
            continue
        groups.setdefault(row["name"], []).append(row)
    out = [
        "| scenario | runs | delivered msgs/s | published msgs/s | p50 | p99 | p99.9 | max "
        "| loss | errors / cut | muxload CPU | daemon CPU | daemon RSS per conn (ready / end) | pings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        every = [r["result"] for r in runs]
        # A run where publishers published but nothing was delivered in the
        # window collapsed (e.g. every receiver cut as a slow consumer in
        # the warm-up): its zeros would drag the medians; count it apart.
        collapsed = [r for r in every if r["publishers"] > 0 and r["delivered"] == 0]
        rs = [r for r in every if r not in collapsed] or every
        lat = lambda k: med([r["latency_us"][k] for r in rs])
        loss = sum(r["loss"]["lost"] + r["loss"]["duplicates"] + r["loss"]["reorders"] for r in every)
        errors = {}
        for r in every:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        cut = sum(r["loss"]["cut"] for r in every)
        err = ", ".join(f"{k} {v}" for k, v in errors.items()) or "none"
        if cut:
            err += f"; {cut} cut"
        if collapsed and rs is not every:
            err += f"; {len(collapsed)} of {len(every)} runs collapsed (left out of the medians)"
        rss_ready = med([r["daemon_rss_per_conn_b"] for r in rs])
        rss_end = med(
            [
                (r["daemon_rss_kib"]["end"] - r["daemon_rss_kib"]["before"]) * 1024 / max(r["ready"], 1)
                for r in rs
                if r["daemon_rss_kib"]["end"] is not None and r["daemon_rss_kib"]["before"] is not None
            ]
        )
        rate = rs[0]["rate_per_publisher"] if rs[0]["mode"] == "rate" else None
        label = name + (f" (at {rate:g}/s per publisher)" if rate and "max rate" in name else "")
        has_traffic = rs[0]["publishers"] > 0
        out.append(
            "| "
            + " | ".join(
                [
                    label,
                    str(len(every)),
                    fmt(med([r["delivered_per_s"] for r in rs])) if has_traffic else "-",
                    fmt(med([r["published_per_s"] for r in rs])) if has_traffic else "-",
                    fmt(lat("p50"), "us") if has_traffic else "-",
                    fmt(lat("p99"), "us") if has_traffic else "-",
                    fmt(lat("p999"), "us") if has_traffic else "-",
                    fmt(lat("max"), "us") if has_traffic else "-",
                    str(loss),
                    err,
                    fmt(med([r["cpu"]["busy_pct"] for r in rs]), "%") if has_traffic else "-",
                    fmt(med([r["daemon_busy_pct"] for r in rs]), "%") if has_traffic else "-",
                    f"{fmt(rss_ready, ' B')} / {fmt(rss_end, ' B')}",
                    f"{med([r['pings']['answered'] for r in rs]):.0f}/{med([r['pings']['sent'] for r in rs]):.0f}",
                ]
            )
            + " |"
        )
    return "\n".join(out) + "\n"


def compare(rows):
    """One line per scenario: each server's medians, and the ratios.

    Rows are {"name", "server": "muxchatd"|"redis", "result"}. Throughput
    ratio: muxchatd / Redis delivered msgs/s; p99 and CPU ratios: Redis /
    muxchatd (so above 1 means muxchatd is ahead on every ratio).
    """
    groups = {}
    for row in rows:
        groups.setdefault(row["name"], {}).setdefault(row["server"], []).append(row["result"])
    out = [
        "| scenario | runs | muxchatd delivered/s | Redis delivered/s | throughput x "
        "| muxchatd p99 | Redis p99 | p99 x | muxchatd CPU | Redis CPU | CPU per msg x | loss / cut |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_server in groups.items():
        stats = {}
        notes = []
        for server in ("muxchatd", "redis"):
            rs = [r for r in by_server.get(server, []) if r is not None]
            if not rs:
                stats[server] = None
                notes.append(f"{server}: no result")
                continue
            lost = sum(r["loss"]["lost"] + r["loss"]["duplicates"] + r["loss"]["reorders"] for r in rs)
            cut = sum(r["loss"]["cut"] + r["closed_by_server"] for r in rs)
            if lost or cut:
                notes.append(f"{server}: {lost} lost or still undelivered after the drain, {cut} cut")
            stats[server] = {
                "delivered": med([r["delivered_per_s"] for r in rs]),
                # A run whose window's messages all arrived after the drain
                # timeout has no latency samples: no p99, not a p99 of 0.
                "p99": med([r["latency_us"]["p99"] for r in rs if r["latency_us"]["count"] > 0]),
                "cpu": med([r["daemon_busy_pct"] for r in rs]),
                "runs": len(rs),
            }
        m, r = stats["muxchatd"], stats["redis"]

        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "-"

        def per_msg(s):
            return s["cpu"] / s["delivered"] if s and s["cpu"] and s["delivered"] else None

        out.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{m['runs'] if m else 0} + {r['runs'] if r else 0}",
                    fmt(m["delivered"]) if m else "-",
                    fmt(r["delivered"]) if r else "-",
                    ratio(m and m["delivered"], r and r["delivered"]),
                    fmt(m["p99"], "us") if m else "-",
                    (fmt(r["p99"], "us") if r["p99"] is not None else "no samples") if r else "-",
                    ratio(r and r["p99"], m and m["p99"]),
                    fmt(m["cpu"], "%") if m else "-",
                    fmt(r["cpu"], "%") if r else "-",
                    ratio(per_msg(r), per_msg(m)),
                    "; ".join(notes) or "none",
                ]
            )
            + " |"
        )
    return "\n".join(out) + "\n"


def main():
    if "--brief" in sys.argv:
        for line in sys.stdin:
            line = line.strip()
            print(brief(json.loads(line) if line else None))
    elif "--compare" in sys.argv:
        sys.stdout.write(compare([json.loads(l) for l in sys.stdin if l.strip()]))
    elif "--table" in sys.argv:
        sys.stdout.write(table([json.loads(l) for l in sys.stdin if l.strip()]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
