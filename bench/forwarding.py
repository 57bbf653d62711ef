"""Cold lookup of 100 mailboxes spread over 3 sites, every backend call delayed by 50 ms.

    .venv/bin/python bench/forwarding.py [--rounds 20] [--delay-ms 50]

Runs two labs with a fault proxy adding the delay to every node-to-CalDAV round trip:

* baseline: 1 site, 1 node, 100 local mailboxes;
* spread: 3 sites x 2 nodes, 34 + 34 + 32 mailboxes, asked of one node of the first site,
  which answers its own and forwards the rest.

Prints median and p95 latency and their ratio to the backend delay (the target is at most
2.5, 125 ms at 50 ms). Each case also runs with no added delay, which gives the CPU floor of
the case on this machine (Radicale answers one request at a time per process, a few ms each);
`delay cost` is what the 50 ms added on top of that floor. A serial fan-out would add about
100 x 50 ms; a parallel one adds about one delay. Before each timed round the cache is dropped
through the admin API (untimed), so every round is a cold read of every calendar.

Needs the project's virtualenv (`bash bench/setup` makes it); without it the bench says so
and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    client_for,
    cold,
    measure,
    median,
    p95,
    request_body,
    require,
    running_lab,
    today_utc,
)


def run_case(lab_args: list[str], count: int, rounds: int, max_seconds: float) -> list[float]:
    with running_lab(*lab_args) as manifest:
        addresses = [m["address"] for m in manifest["mailboxes"]][:count]
        url = manifest["sites"][0]["nodes"][0] + "/EWS/Exchange.asmx"
        start = today_utc()
        while start.weekday() >= 5:  # the seeded meetings are on weekdays
            start += dt.timedelta(days=1)
        body = request_body(addresses, start, start + dt.timedelta(days=1))
        with client_for(manifest) as client:
            drop = cold(client, manifest, addresses)  # every timed round reads every calendar
            measure(client, url, body, 3, max_seconds, len(addresses), drop)  # connections warm
            return measure(client, url, body, rounds, max_seconds, len(addresses), drop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    require()

    from rich.console import Console
    from rich.table import Table

    cases = [
        (
            "1 site, 100 local",
            ["--sites", "1", "--nodes-per-site", "1", "--mailboxes-per-site", "100"],
        ),
        (
            "3 sites, 100 spread",
            ["--sites", "3", "--nodes-per-site", "2", "--mailboxes-per-site", "34"],
        ),
    ]
    table = Table(
        title=f"100 mailboxes, 1 weekday, DetailedMerged, cold, backend delay {args.delay_ms} ms"
    )
    columns = (
        "case",
        "requests",
        "median ms",
        "p95 ms",
        "median / delay",
        "floor (no delay) ms",
        "delay cost ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, lab_args in cases:
        floor = run_case(lab_args, 100, args.rounds, args.max_seconds)
        t = run_case(
            [*lab_args, "--backend-delay-ms", str(args.delay_ms)],
            100,
            args.rounds,
            args.max_seconds,
        )
        table.add_row(
            name,
            str(len(t)),
            f"{median(t):.1f}",
            f"{p95(t):.1f}",
            f"{median(t) / args.delay_ms:.2f}",
            f"{median(floor):.1f}",
            f"{median(t) - median(floor):.1f}",
        )
    Console().print(table)
    print(f"target: 3-site median / delay <= 2.5 ({2.5 * args.delay_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
