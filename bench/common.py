"""What the benchmarks share: their requirements, a lab started as a subprocess, EWS request
bodies, timing.

Every bench calls `require` first: when something it needs is missing (the project in this
Python, redis-server, a load tool), it says what and how to install it (`bash bench/setup`) and
exits with status 2, instead of failing half-way or measuring something else. Third-party
modules are imported where they are used, so that check runs even without them.

Every loop is bounded in count and in time; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

SETUP = "bash bench/setup"
STOP_GRACE = 60.0  # seconds a stopped lab or server gets before SIGKILL

M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"


def require(*, commands: tuple[str, ...] = (), redis_server: bool = False) -> None:
    """Exit with status 2, saying what is missing and how to install it, unless this Python
    has the project and its lab extra, and every command in `commands` (and redis-server, if
    asked) is installed."""
    problems = [
        f"this Python ({sys.executable}) cannot import {module}"
        for module in ("cas", "radicale", "httpx", "lxml", "rich")
        if importlib.util.find_spec(module) is None
    ]
    problems += [
        f"the command {name} is not installed" for name in commands if not shutil.which(name)
    ]
    if redis_server and not problems:
        from caslab.redis import find_redis_server

        if find_redis_server() is None:
            problems.append("redis-server is not installed (the lab would use no shared cache)")
    if problems:
        name = Path(sys.argv[0]).name
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        print(
            f"{name}: install what the benchmarks need with `{SETUP}` (as root, on Debian), "
            "then run them with .venv/bin/python",
            file=sys.stderr,
        )
        raise SystemExit(2)


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM by PID, SIGKILL after `grace` seconds, and reap."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request_body(
    addresses: list[str], start: dt.datetime, end: dt.datetime, view: str = "DetailedMerged"
) -> bytes:
    """A GetUserAvailability request in UTC, shaped like exchangelib's."""
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
        f"<t:RequestedView>{view}</t:RequestedView></t:FreeBusyViewOptions>"
        "</m:GetUserAvailabilityRequest></s:Body></s:Envelope>"
    ).encode()


@contextlib.contextmanager
def running_lab(*args: str, timeout: float = 300) -> Iterator[dict]:
    """`cas lab ARGS` in a subprocess; yields its manifest; stops it by PID.

    Its nodes do not throttle (`CAS_THROTTLE_RATE=0`, unless the environment says otherwise):
    a bench is one requester asking as fast as it can. bench/permissions.py measures the cost
    of throttling itself."""
    env = {**os.environ, "CAS_THROTTLE_RATE": os.environ.get("CAS_THROTTLE_RATE", "0")}
    with tempfile.TemporaryDirectory(prefix="cas-bench-") as tmp:
        manifest_path = Path(tmp) / "lab.json"
        lab = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cas",
                "lab",
                *args,
                "--manifest",
                str(manifest_path),
                "--duration",
                "1800",
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        try:
            deadline = time.monotonic() + timeout
            while not manifest_path.exists():
                if lab.poll() is not None:
                    raise SystemExit(f"cas lab exited with status {lab.returncode}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"cas lab wrote no manifest within {timeout:g}s")
                time.sleep(0.2)
            yield json.loads(manifest_path.read_text())
        finally:
            stop(lab)  # SIGTERM lets the lab stop its parts


def client_for(manifest: dict) -> httpx.Client:
    import httpx

    context = ssl.create_default_context(cafile=manifest["ca_cert"])
    auth = (manifest["client"]["username"], manifest["client"]["password"])
    return httpx.Client(verify=context, auth=auth, trust_env=False, timeout=60)


def measure(
    client: httpx.Client,
    url: str,
    body: bytes,
    rounds: int,
    max_seconds: float,
    expect: int,
    before: Callable[[], None] | None = None,
) -> list[float]:
    """Milliseconds per request, at most `rounds` requests and about `max_seconds` long.

    `before`, when given, runs ahead of each request, untimed (e.g. dropping the cache).
    Fails loudly unless every answer has `expect` mailboxes answered without error.
    """
    from lxml import etree

    timings: list[float] = []
    stop = time.monotonic() + max_seconds
    for _ in range(rounds):
        if before is not None:
            before()
        began = time.perf_counter()
        response = client.post(
            url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
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


def cold(client: httpx.Client, manifest: dict, addresses: list[str]) -> Callable[[], None]:
    """A `before` hook that drops every site's cached data for `addresses` (admin API)."""
    token = manifest["admin_token"]
    by_site: dict[str, list[str]] = {}
    for mailbox in manifest["mailboxes"]:
        if mailbox["address"] in addresses:
            by_site.setdefault(mailbox["site"], []).append(mailbox["address"])
    nodes = {site["name"]: site["nodes"] for site in manifest["sites"]}

    def drop() -> None:
        for site, names in by_site.items():
            for node in nodes[site]:  # each node's own first-level copies too
                r = client.post(
                    node + "/api/v1/cache/invalidate",
                    json={"addresses": names},
                    headers={"Authorization": f"Bearer {token}"},
                    auth=None,
                )
                if r.status_code != 200:
                    raise SystemExit(f"invalidation failed: HTTP {r.status_code} {r.text[:200]}")
        for entry in nodes[next(iter(nodes))][:1]:  # the entry node's copies of remote answers
            client.post(
                entry + "/api/v1/cache/invalidate",
                json={"addresses": addresses},
                headers={"Authorization": f"Bearer {token}"},
                auth=None,
            )

    return drop


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def today_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
