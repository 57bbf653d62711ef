"""Latency of EWS GetUserAvailability against a seeded lab, printed as a table.

    .venv/bin/python bench/latency.py [--rounds 40] [--mailboxes-per-site 24]

Starts `cas lab` (one site, one node, a real Radicale seeded with the lab's calendars) as a
subprocess, waits for its manifest, then times DetailedMerged lookups over verified HTTPS with
one keep-alive client:

* 1 mailbox, 1 day;
* 20 mailboxes, 7 days.

Every round is a cold backend read (no cache exists yet). Bounded: at most `--rounds` requests
per case and at most `--max-seconds` per case. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from lxml import etree

M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"


def request_body(addresses: list[str], start: dt.datetime, end: dt.datetime) -> bytes:
    boxes = "".join(
        f"<t:MailboxData><t:Email><t:Address>{a}</t:Address></t:Email>"
        "<t:AttendeeType>Required</t:AttendeeType></t:MailboxData>"
        for a in addresses
    )
    utc_rule = (
        "<t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>1</t:DayOrder>"
        "<t:Month>1</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="{M}" xmlns:t="{T}">'
        '<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>'
        "<s:Body><m:GetUserAvailabilityRequest>"
        f"<t:TimeZone><t:Bias>0</t:Bias><t:StandardTime>{utc_rule}</t:StandardTime>"
        f"<t:DaylightTime>{utc_rule}</t:DaylightTime></t:TimeZone>"
        f"<m:MailboxDataArray>{boxes}</m:MailboxDataArray>"
        "<t:FreeBusyViewOptions><t:TimeWindow>"
        f"<t:StartTime>{start:%Y-%m-%dT%H:%M:%SZ}</t:StartTime>"
        f"<t:EndTime>{end:%Y-%m-%dT%H:%M:%SZ}</t:EndTime></t:TimeWindow>"
        "<t:MergedFreeBusyIntervalInMinutes>30</t:MergedFreeBusyIntervalInMinutes>"
        "<t:RequestedView>DetailedMerged</t:RequestedView></t:FreeBusyViewOptions>"
        "</m:GetUserAvailabilityRequest></s:Body></s:Envelope>"
    ).encode()


def wait_for_manifest(path: Path, lab: subprocess.Popen[bytes], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if lab.poll() is not None:
            raise SystemExit(f"cas lab exited with status {lab.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"cas lab wrote no manifest within {timeout:g}s")
        time.sleep(0.2)
    return json.loads(path.read_text())


def measure(client: httpx.Client, url: str, body: bytes, rounds: int, max_seconds: float,
            expect: int) -> list[float]:
    timings: list[float] = []
    stop = time.monotonic() + max_seconds
    for _ in range(rounds):
        began = time.perf_counter()
        response = client.post(url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"})
        timings.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"lookup failed: HTTP {response.status_code}: {response.text[:300]}")
        codes = etree.fromstring(response.content).findall(f".//{{{M}}}ResponseCode")
        ok = sum(1 for c in codes if c.text == "NoError")
        if ok != expect:
            raise SystemExit(f"expected {expect} answered mailboxes, got {ok}")
        if time.monotonic() > stop:
            break
    return timings


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--mailboxes-per-site", type=int, default=24)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="cas-bench-") as tmp:
        manifest_path = Path(tmp) / "lab.json"
        lab = subprocess.Popen(
            [sys.executable, "-m", "cas", "lab", "--sites", "1", "--nodes-per-site", "1",
             "--mailboxes-per-site", str(args.mailboxes_per_site),
             "--manifest", str(manifest_path), "--duration", "900"],
            stdout=subprocess.DEVNULL,
        )
        try:
            manifest = wait_for_manifest(manifest_path, lab, timeout=120)
            url = manifest["sites"][0]["nodes"][0] + "/EWS/Exchange.asmx"
            addresses = [m["address"] for m in manifest["mailboxes"]]
            if len(addresses) < 20:
                raise SystemExit("the 20-mailbox case needs --mailboxes-per-site 20 or more")
            today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            cases = [
                ("1 mailbox, 1 day", addresses[:1], today, today + dt.timedelta(days=1)),
                ("20 mailboxes, 7 days", addresses[:20], today, today + dt.timedelta(days=7)),
            ]
            auth = (manifest["client"]["username"], manifest["client"]["password"])
            table = Table(title="EWS GetUserAvailability, DetailedMerged, cold (no cache), 1 node")
            for column in ("case", "requests", "median ms", "p95 ms", "min ms", "max ms"):
                table.add_column(column, justify="left" if column == "case" else "right")
            context = ssl.create_default_context(cafile=manifest["ca_cert"])
            with httpx.Client(verify=context, auth=auth, trust_env=False, timeout=30) as client:
                for name, boxes, start, end in cases:
                    body = request_body(boxes, start, end)
                    measure(client, url, body, 3, args.max_seconds, len(boxes))  # warm the connection
                    t = measure(client, url, body, args.rounds, args.max_seconds, len(boxes))
                    table.add_row(name, str(len(t)), f"{statistics.median(t):.1f}", f"{p95(t):.1f}",
                                  f"{min(t):.1f}", f"{max(t):.1f}")
            Console().print(table)
        finally:
            lab.send_signal(signal.SIGTERM)
            try:
                lab.wait(timeout=30)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
