"""Cold latency of EWS GetUserAvailability against a seeded lab, printed as a table.

    .venv/bin/python bench/latency.py [--rounds 40] [--mailboxes-per-site 24]

Starts `cas lab` (one site, one node, a real Radicale seeded with the lab's calendars) as a
subprocess and times DetailedMerged lookups over verified HTTPS with one keep-alive client:
1 mailbox for 1 day, and 20 mailboxes for 7 days. Before each timed request the node's cache is
dropped through the admin API (untimed), so every round reads the calendars from Radicale.
Bounded: at most `--rounds` requests per case and `--max-seconds` per case; 127.0.0.1 only.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--mailboxes-per-site", type=int, default=24)
    args = parser.parse_args()
    require()

    from rich.console import Console
    from rich.table import Table

    with running_lab(
        "--sites",
        "1",
        "--nodes-per-site",
        "1",
        "--mailboxes-per-site",
        str(args.mailboxes_per_site),
    ) as manifest:
        url = manifest["sites"][0]["nodes"][0] + "/EWS/Exchange.asmx"
        addresses = [m["address"] for m in manifest["mailboxes"] if m["kind"] == "modern"]
        if len(addresses) < 20:
            raise SystemExit("the 20-mailbox case needs --mailboxes-per-site 20 or more")
        start = today_utc()
        while start.weekday() >= 5:  # the seeded meetings are on weekdays
            start += dt.timedelta(days=1)
        cases = [
            ("1 mailbox, 1 day", addresses[:1], start, start + dt.timedelta(days=1)),
            ("20 mailboxes, 7 days", addresses[:20], start, start + dt.timedelta(days=7)),
        ]
        table = Table(title="EWS GetUserAvailability, DetailedMerged, cold (cache dropped), 1 node")
        for column in ("case", "requests", "median ms", "p95 ms", "min ms", "max ms"):
            table.add_column(column, justify="left" if column == "case" else "right")
        with client_for(manifest) as client:
            for name, boxes, begin, end in cases:
                body = request_body(boxes, begin, end)
                drop = cold(client, manifest, boxes)
                measure(
                    client, url, body, 3, args.max_seconds, len(boxes), drop
                )  # warm connections
                t = measure(client, url, body, args.rounds, args.max_seconds, len(boxes), drop)
                table.add_row(
                    name,
                    str(len(t)),
                    f"{median(t):.1f}",
                    f"{p95(t):.1f}",
                    f"{min(t):.1f}",
                    f"{max(t):.1f}",
                )
        Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
