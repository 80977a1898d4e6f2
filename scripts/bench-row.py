#!/usr/bin/env python3
"""Formats muxload --json results for scripts/bench-matrix.sh.

  bench-row.py --brief   < one muxload JSON line   -> one short line
  bench-row.py --table   < raw.jsonl                -> the markdown table

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


def main():
    if "--brief" in sys.argv:
        for line in sys.stdin:
            line = line.strip()
            print(brief(json.loads(line) if line else None))
    elif "--table" in sys.argv:
        sys.stdout.write(table([json.loads(l) for l in sys.stdin if l.strip()]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
