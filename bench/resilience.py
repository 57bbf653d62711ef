"""Fail fast and blame right, measured: a hung backend, a killed node, idle connections.

    .venv/bin/python bench/resilience.py [--seconds 15] [--clients 2] [--connections 300]

Starts `cas lab --no-restart` (3 sites x 2 nodes, the lab's seeded calendars, a redis-server
per site) and runs two client pools against the nodes of the first site: `--clients` threads
asking for two mailboxes of the first two sites ("other" lookups, read once over the whole
seeded range beforehand, so they are cache hits in every window), and as many asking for
`--hung-mailboxes` mailboxes of the last site with two of the others ("hung-site" lookups; one
day, DetailedMerged, a random day of the seeded range, so most are not cached yet).

1. Hung backend. `--seconds` of load, then the last site's Radicale is stopped (SIGSTOP) until
   its nodes' CalDAV breakers have been open for `--seconds`. Figures: other lookups per second
   in the first `--seconds` of the hang / in the `--seconds` before (before, the hung site's
   cold reads share the CPU with them; during, those end at once, so the ratio says "does not
   collapse" rather than "the same"); p50, p99 and max of hung-site lookups started once both
   breakers were open (their mailboxes get stale data or their error at once; the max is a
   breaker's probe, which waits `breaker_slow_seconds`), next to other lookups of the same
   window, the floor of this machine under this load; healthy mailboxes (the other two) that
   came back with an error in a hung-site lookup, over the whole hang.
2. Killed node. The Radicale goes on again; then a node of the second site is killed (SIGKILL,
   left down) under the same load for `--seconds`. Figures: forwarded-request retries and
   failovers the first site's nodes counted (from /metrics) per lookup naming that site, and
   mailboxes lost.
3. Idle connections. `--connections` TLS connections to one node that never send a request:
   the node's resident memory per connection, and how many are still open after its idle
   timeout; then 50 kept-alive connections after one request each, after the keep-alive time.

Ratios are worked out from the same run. Bounded: every loop stops after its time or count;
all traffic stays on 127.0.0.1. Needs the project's virtualenv and redis-server
(`bash bench/setup`); without them the bench says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import M, client_for, request_body, require, running_lab, today_utc
from idle import idle_cost, kept_alive

SEED_DAYS_BACK, SEED_DAYS = 7, 42  # the lab seeds calendars over this range (caslab.runner)
BREAKER_WAIT = 30.0  # longest wait for the hung site's breakers to open
RECOVERY = 10.0  # after the Radicale goes on again, before the next part
KEPT_ALIVE = 50
WARM_BATCH = 6


@dataclass(frozen=True)
class Lookup:
    hung: bool  # names a mailbox of the hung site
    began: float  # monotonic
    ms: float
    healthy_lost: int  # mailboxes of the other sites answered with an error
    hung_error: bool  # the hung site's mailbox came back with an error (stale is no error)


class Load:
    """Client threads asking until `stop()` (or their count runs out); every lookup kept."""

    def __init__(
        self, manifest: dict, clients: tuple[int, int], hung_mailboxes: int, max_requests: int
    ) -> None:
        self.manifest = manifest
        sites = [s["name"] for s in manifest["sites"]]
        modern = [m for m in manifest["mailboxes"] if m["kind"] == "modern"]
        self.others = [m["address"] for m in modern if m["site"] in sites[:2]]
        self.hung_site = [m["address"] for m in modern if m["site"] == sites[-1]]
        self.urls = [n + "/EWS/Exchange.asmx" for n in manifest["sites"][0]["nodes"]]
        self.lookups: list[Lookup] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.hung_mailboxes = hung_mailboxes
        self._threads = [
            threading.Thread(target=self._run, args=(hung, n, max_requests), daemon=True)
            for hung, count in zip((False, True), clients)
            for n in range(count)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, hung: bool, n: int, max_requests: int) -> None:
        from lxml import etree

        rng = random.Random(n * 2 + hung)
        first = today_utc() - dt.timedelta(days=SEED_DAYS_BACK)
        with client_for(self.manifest) as client:
            for i in range(max_requests):
                if self._stop.is_set():
                    return
                ours = rng.sample(self.hung_site, self.hung_mailboxes) if hung else []
                addresses = ours + rng.sample(self.others, 2)
                day = first + dt.timedelta(days=rng.randrange(SEED_DAYS))
                body = request_body(addresses, day, day + dt.timedelta(days=1))
                began = time.monotonic()
                response = client.post(
                    self.urls[i % len(self.urls)],
                    content=body,
                    headers={"Content-Type": "text/xml; charset=utf-8"},
                )
                ms = (time.monotonic() - began) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"lookup failed: HTTP {response.status_code}")
                codes = [
                    c.text for c in etree.fromstring(response.content).iter(f"{{{M}}}ResponseCode")
                ]
                bad = [c != "NoError" for c in codes]
                lookup = Lookup(hung, began, ms, sum(bad[len(ours) :]), any(bad[: len(ours)]))
                with self._lock:
                    self.lookups.append(lookup)

    def between(self, start: float, end: float, *, hung: bool) -> list[Lookup]:
        with self._lock:
            return [x for x in self.lookups if x.hung == hung and start <= x.began < end]


def state_of(manifest: dict) -> Path:
    return Path(manifest["sitemap"]).parent


def pid_of(manifest: dict, part: str) -> int:
    rows = json.loads((state_of(manifest) / "parts.json").read_text())["parts"]
    return int(next(r["pid"] for r in rows if r["name"] == part))


def breakers_open(manifest: dict, site: str, since: int) -> int:
    """How many of `site`'s node logs say its CalDAV breaker opened (after byte `since`)."""
    logs = sorted((state_of(manifest) / "logs").glob(f"cas-{site}-*.log"))
    return sum(f" breaker caldav:{site} open: " in p.read_text()[since:] for p in logs)


def log_sizes(manifest: dict, site: str) -> int:
    return max(len(p.read_text()) for p in (state_of(manifest) / "logs").glob(f"cas-{site}-*.log"))


def counter(manifest: dict, nodes: list[str], name: str, site: str) -> float:
    """Sum of counter `name` (labelled site=`site`) over `nodes`' /metrics."""
    total = 0.0
    with client_for(manifest) as client:
        for node in nodes:
            for line in client.get(node + "/metrics").text.splitlines():
                if line.startswith(name + "{") and f'site="{site}"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def hung_backend(manifest: dict, load: Load, seconds: float) -> list[tuple[str, str, str]]:
    site = manifest["sites"][-1]["name"]
    radicale = pid_of(manifest, f"Radicale of site {site}")
    since = log_sizes(manifest, site)
    before_start = time.monotonic()
    time.sleep(seconds)
    hang_start = time.monotonic()
    os.kill(radicale, signal.SIGSTOP)
    try:
        deadline = hang_start + BREAKER_WAIT
        while breakers_open(manifest, site, since) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        opened = time.monotonic()
        hang_end = max(hang_start + seconds, opened + seconds)  # both windows full
        time.sleep(max(0.0, hang_end - time.monotonic()))
    finally:
        os.kill(radicale, signal.SIGCONT)
    before = load.between(before_start, hang_start, hung=False)
    during = load.between(hang_start, hang_start + seconds, hung=False)
    ratio = len(during) / max(1, len(before))  # windows of the same length
    hung_before = [x.ms for x in load.between(before_start, hang_start, hung=True)]
    hung_open = [x.ms for x in load.between(opened, hang_end, hung=True)]
    floor = [x.ms for x in load.between(opened, hang_end, hung=False)]
    shared = load.between(hang_start, hang_end, hung=True)
    lost = sum(x.healthy_lost for x in shared)
    n_open = breakers_open(manifest, site, since)
    return [
        (f"other lookups/s, healthy ({seconds:g}s)", f"{len(before) / seconds:.1f}", ""),
        ("other lookups/s, first seconds of the hang", f"{len(during) / seconds:.1f}", ""),
        ("  during / before", f"{ratio:.2f}", ">= 0.9"),
        ("hung-site lookups, healthy: p50 / p99 ms",
         f"{pct(hung_before, 0.5):.0f} / {pct(hung_before, 0.99):.0f}", ""),
        (f"hung-site lookups in the hang (n={len(shared)}): p99 ms",
         f"{pct([x.ms for x in shared], 0.99):.0f}", ""),
        (f"{n_open}/2 CalDAV breakers of site {site} open after, s",
         f"{opened - hang_start:.1f}", ""),
        (f"hung-site lookups once open (n={len(hung_open)}): p50 / p99 / max ms",
         f"{pct(hung_open, 0.5):.0f} / {pct(hung_open, 0.99):.0f} / {pct(hung_open, 1):.0f}",
         "p99 <= 50"),
        ("  other lookups, same window: p50 / p99 ms (the machine's floor)",
         f"{pct(floor, 0.5):.0f} / {pct(floor, 0.99):.0f}", ""),
        (f"healthy mailboxes lost in {len(shared)} shared lookups", str(lost), "0"),
    ]  # fmt: skip


def killed_node(manifest: dict, load: Load, seconds: float) -> list[tuple[str, str, str]]:
    entry = manifest["sites"][0]["nodes"]
    site = manifest["sites"][1]["name"]
    victim = f"node cas-{site}-1"
    retries0 = counter(manifest, entry, "cas_forward_retries_total", site)
    failovers0 = counter(manifest, entry, "cas_forward_failovers_total", site)
    start = time.monotonic()
    os.kill(pid_of(manifest, victim), signal.SIGKILL)
    time.sleep(seconds)
    end = time.monotonic()
    retries = counter(manifest, entry, "cas_forward_retries_total", site) - retries0
    failovers = counter(manifest, entry, "cas_forward_failovers_total", site) - failovers0
    lookups = load.between(start, end, hung=False) + load.between(start, end, hung=True)
    lost = sum(x.healthy_lost for x in lookups)  # the killed node's site included
    return [
        (f"{victim} killed: lookups in {seconds:.0f}s", str(len(lookups)), ""),
        ("  forward retries / failovers", f"{retries:.0f} / {failovers:.0f}", "bounded"),
        ("  retries per lookup", f"{retries / max(1, len(lookups)):.3f}", "-> 0"),
        ("  mailboxes lost", str(lost), "0"),
    ]


def connections(manifest: dict, count: int) -> list[tuple[str, str, str]]:
    from cas.settings import Settings

    defaults = Settings()
    node = manifest["sites"][0]["nodes"][0]
    pid = pid_of(manifest, f"node cas-{manifest['sites'][0]['name']}-1")
    idle = idle_cost(node, manifest["ca_cert"], pid, count, defaults.http_idle_timeout_seconds + 2)
    answered, still = kept_alive(
        node, manifest["ca_cert"], KEPT_ALIVE, defaults.http_keepalive_seconds + 2
    )
    return [
        (
            f"RSS per idle TLS connection ({idle.opened} open), KB",
            f"{idle.kb_per_connection:.1f}",
            "measured",
        ),
        (
            f"  still open after the idle timeout ({defaults.http_idle_timeout_seconds:g}s + 2s)",
            str(idle.still_open),
            "0",
        ),
        (
            "  node RSS MB: before / open / after",
            f"{idle.rss_before_kb / 1024:.0f} / {idle.rss_open_kb / 1024:.0f} / "
            f"{idle.rss_after_kb / 1024:.0f}",
            "",
        ),
        (
            f"kept-alive after one request ({answered} answered), open after "
            f"{defaults.http_keepalive_seconds:g}s + 2s",
            str(still),
            "0",
        ),
    ]


def warm(manifest: dict, others: list[str]) -> None:
    """Read every "other" mailbox over the whole seeded range once, so that other lookups are
    answered from the cache in both windows (before and during the hang) alike."""
    first = today_utc() - dt.timedelta(days=SEED_DAYS_BACK)
    body_end = first + dt.timedelta(days=SEED_DAYS)
    url = manifest["sites"][0]["nodes"][0] + "/EWS/Exchange.asmx"
    with client_for(manifest) as client:
        for i in range(0, len(others), WARM_BATCH):
            body = request_body(others[i : i + WARM_BATCH], first, body_end)
            r = client.post(url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"})
            if r.status_code != 200 or r.content.count(b">NoError<") != len(
                others[i : i + WARM_BATCH]
            ):
                raise SystemExit(f"warming the cache failed: HTTP {r.status_code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4, help="threads per pool")
    parser.add_argument("--hung-mailboxes", type=int, default=3, help="per hung-site lookup")
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    require(redis_server=True)

    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, str]] = []
    with running_lab("--no-restart") as manifest:
        load = Load(
            manifest, (args.clients, args.clients), args.hung_mailboxes,
            max_requests=int(args.seconds * 2000),
        )  # fmt: skip
        warm(manifest, load.others)
        load.start()
        try:
            time.sleep(3.0)  # connections made, first answers in
            rows += hung_backend(manifest, load, args.seconds)
            time.sleep(RECOVERY)
            rows += killed_node(manifest, load, args.seconds)
        finally:
            load.stop()
        rows += connections(manifest, args.connections)
    title = (
        f"resilience: 3 sites x 2 nodes; {args.clients} clients of other lookups, "
        f"{args.clients} of hung-site lookups ({args.hung_mailboxes} + 2 mailboxes)"
    )
    table = Table(title=title)
    for column in ("figure", "value", "target"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
