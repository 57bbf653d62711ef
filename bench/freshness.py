"""How fast a change shows everywhere, what freshness costs, and first sight, as one table.

    .venv/bin/python bench/freshness.py [--writes 50] [--rounds 10] [--max-seconds 120]

Runs `cas lab` (3 sites, 1 node each; Radicale and redis-server per site) twice: with
Radicale's storage hook pushing every write to the site's nodes (the lab's default), and with
`--no-push` (changes found by confirming entries with the calendar's change tag every
`cache_validate_seconds`, 5 s by default). For each it measures:

* write-to-visible: a `caldav` client writes an event into a mailbox of site us; one node of
  each site is polled (every 20 ms, in parallel) until the event shows; p50 and p99 per site;
* backend requests per warm lookup of an unchanged mailbox: the owning node's cache counters
  (`cas_cache_events_total`: reads and change-tag confirmations) over a burst of lookups
  spread over `--warm-seconds`.

Then, on a 1-site lab with `--mailboxes-per-site` mailboxes: first sight of 20 mailboxes x 7
days through the node (nothing cached, nothing ever read) against what a user could do alone,
DavMail-style: one CalDAV free-busy-query REPORT per mailbox, one after another; and the same
warm. Rounds alternate which goes first, and each round uses mailboxes never read before.
Bounded in count and time; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import client_for, request_body, require, running_lab, today_utc

POLL = 0.02


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def availability_json(address: str, day: dt.date, hours: int = 12) -> dict:
    return {
        "schedules": [address],
        "startTime": {"dateTime": f"{day}T08:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": f"{day}T{8 + hours:02d}:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 60,
    }


def watch(
    manifest: dict, url: str, body: dict, hour: int, written: float, seen: list[float]
) -> None:
    """Poll `url` until the event written at `written` shows in slot `hour`."""
    with client_for(manifest) as own:
        while time.monotonic() - written < 60:
            r = own.post(url + "/api/v1/availability", json=body)
            if r.json()["value"][0]["availabilityView"][hour - 8] == "2":
                seen.append(time.monotonic() - written)
                return
            time.sleep(POLL)
    seen.append(float("inf"))


def write_to_visible(manifest: dict, writes: int, max_seconds: float) -> dict[str, list[float]]:
    """Seconds from each write's end until one node of each site shows it."""
    import caldav

    site_b = next(s for s in manifest["sites"] if s["name"] == "us")
    boxes = [m for m in manifest["mailboxes"] if m["site"] == "us" and m["kind"] == "modern"]
    nodes = {s["name"]: s["nodes"][0] for s in manifest["sites"]}
    dav = caldav.DAVClient(
        url=site_b["caldav"]["url"],
        username=site_b["caldav"]["username"],
        password=site_b["caldav"]["password"],
    )
    seen: dict[str, list[float]] = {name: [] for name in nodes}
    stop = time.monotonic() + max_seconds
    with client_for(manifest) as client:
        for n in range(writes):
            mailbox = boxes[n % len(boxes)]
            day = dt.date(2032, 1, 5) + dt.timedelta(days=n // 12)
            hour = 8 + n % 12
            body = availability_json(mailbox["address"], day)
            for url in nodes.values():  # warm: every site has answered (copies made)
                client.post(url + "/api/v1/availability", json=body)
            dav.calendar(url=mailbox["calendar_url"]).add_event(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
                f"UID:{uuid.uuid4().hex}\r\nDTSTAMP:20300101T000000Z\r\n"
                f"DTSTART:{day:%Y%m%d}T{hour:02d}0000Z\r\nDTEND:{day:%Y%m%d}T{hour:02d}3000Z\r\n"
                "SUMMARY:bench\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            )
            written = time.monotonic()
            threads = [
                threading.Thread(
                    target=watch, args=(manifest, url, body, hour, written, seen[site])
                )
                for site, url in nodes.items()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if time.monotonic() > stop:
                break
    return seen


def cache_counters(client, url: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = client.get(url + "/metrics").text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cas_cache_events_total{"):
            event = line.split('event="', 1)[1].split('"', 1)[0]
            found[event] = float(line.rsplit(" ", 1)[1])
    return found


def warm_cost(manifest: dict, seconds: float) -> tuple[int, int, int]:
    """(lookups, reads, confirmations) at the owning node over `seconds` of warm lookups."""
    mailbox = next(m for m in manifest["mailboxes"] if m["site"] == "us" and m["kind"] == "modern")
    nodes = [s["nodes"][0] for s in manifest["sites"]]
    owner = next(s for s in manifest["sites"] if s["name"] == "us")["nodes"][0]
    body = availability_json(mailbox["address"], dt.date(2032, 6, 7))
    with client_for(manifest) as client:
        for url in nodes:
            client.post(url + "/api/v1/availability", json=body)  # first sight, not counted
        before = cache_counters(client, owner)
        lookups = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end and lookups < 20_000:
            for url in nodes:
                client.post(url + "/api/v1/availability", json=body)
                lookups += 1
            time.sleep(0.01)
        after = cache_counters(client, owner)
    reads = int(after.get("miss", 0) - before.get("miss", 0))
    confirmed = int(after.get("revalidated", 0) - before.get("revalidated", 0))
    return lookups, reads, confirmed


def free_busy_query(client, url: str, start: dt.datetime, end: dt.datetime) -> None:  # type: ignore[no-untyped-def]
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f'<C:time-range start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
        "</C:free-busy-query>"
    )
    r = client.request(
        "REPORT", url, content=body, headers={"Depth": "1", "Content-Type": "application/xml"}
    )
    if r.status_code != 200 or b"VFREEBUSY" not in r.content:
        raise SystemExit(f"free-busy-query failed: HTTP {r.status_code} {r.text[:200]}")


def first_sight(manifest: dict, rounds: int) -> dict[str, list[float]]:
    import httpx

    site = manifest["sites"][0]
    url = site["nodes"][0] + "/EWS/Exchange.asmx"
    boxes = [m for m in manifest["mailboxes"] if m["kind"] == "modern"]
    start = today_utc()
    while start.weekday() >= 5:
        start += dt.timedelta(days=1)
    end = start + dt.timedelta(days=7)
    auth = (site["caldav"]["username"], site["caldav"]["password"])
    times: dict[str, list[float]] = {
        "node cold": [],
        "serial cold": [],
        "node warm": [],
        "serial warm": [],
    }
    with (
        client_for(manifest) as client,
        httpx.Client(auth=auth, trust_env=False, timeout=60) as dav,
    ):
        for n in range(rounds):
            mine = boxes[40 * n : 40 * n + 20]
            theirs = boxes[40 * n + 20 : 40 * n + 40]
            if len(theirs) < 20:
                break
            if n % 2:  # alternate who reads first
                mine, theirs = theirs, mine
            node_body = request_body([m["address"] for m in mine], start, end)
            began = time.perf_counter()
            r = client.post(url, content=node_body, headers={"Content-Type": "text/xml"})
            times["node cold"].append(time.perf_counter() - began)
            assert r.status_code == 200 and r.text.count("NoError") == 20, r.text[:300]
            began = time.perf_counter()
            for m in theirs:
                free_busy_query(dav, m["calendar_url"], start, end)
            times["serial cold"].append(time.perf_counter() - began)
            began = time.perf_counter()
            client.post(url, content=node_body, headers={"Content-Type": "text/xml"})
            times["node warm"].append(time.perf_counter() - began)
            began = time.perf_counter()
            for m in mine:
                free_busy_query(dav, m["calendar_url"], start, end)
            times["serial warm"].append(time.perf_counter() - began)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warm-seconds", type=float, default=12.0)
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--mailboxes-per-site", type=int, default=24)
    args = parser.parse_args()
    require(redis_server=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title="freshness (3 sites x 1 node; first sight: 1 site)")
    for column in ("figure", "with the storage hook", "without (validation every 5 s)"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    results: dict[str, dict[str, str]] = {}
    for mode, extra in (("push", ()), ("validate", ("--no-push",))):
        lab_args = ("--sites", "3", "--nodes-per-site", "1", "--mailboxes-per-site", "8", *extra)
        with running_lab(*lab_args) as manifest:
            seen = write_to_visible(manifest, args.writes, args.max_seconds)
            lookups, reads, confirmed = warm_cost(manifest, args.warm_seconds)
        row = results.setdefault(mode, {})
        for site, values in seen.items():
            row[f"write-to-visible at {site}: p50 / p99 s ({len(values)} writes)"] = (
                f"{statistics.median(values):.2f} / {quantile(values, 0.99):.2f}"
            )
        row[f"backend requests per warm lookup ({args.warm_seconds:g} s of lookups)"] = (
            f"{(reads + confirmed) / lookups:.4f} ({reads} reads, {confirmed} tag checks, "
            f"{lookups} lookups)"
        )
    for figure in results["push"]:
        table.add_row(figure, results["push"][figure], results["validate"].get(figure, "-"))
    with running_lab(
        "--sites", "1", "--nodes-per-site", "1",
        "--mailboxes-per-site", str(max(args.mailboxes_per_site, 40 * args.rounds)),
    ) as manifest:  # fmt: skip
        times = first_sight(manifest, args.rounds)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    first = Table(title="20 mailboxes x 7 days: the node against serial free-busy-query (DavMail)")
    for column in ("case", "node ms", "serial ms", "ratio"):
        first.add_column(column, justify="left" if column == "case" else "right")
    n = len(times["node cold"])
    first.add_row(
        f"first sight ({n} rounds), node / serial",
        f"{medians['node cold']:.0f}", f"{medians['serial cold']:.0f}",
        f"{medians['node cold'] / medians['serial cold']:.2f}",
    )  # fmt: skip
    first.add_row(
        "warm, serial / node",
        f"{medians['node warm']:.0f}", f"{medians['serial warm']:.0f}",
        f"{medians['serial warm'] / medians['node warm']:.1f}x",
    )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
