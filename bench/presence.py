"""Presence pushes on one node: change-to-subscriber latency, a top-of-the-hour burst, memory.

    .venv/bin/python bench/presence.py [--streams 1000] [--burst 2000] [--changes 30]
                                       [--lead-seconds 240] [--max-seconds 900]

One `cas serve` node (plain HTTP on 127.0.0.1, no TLS: the figures are the node's, not the
handshakes') over one Radicale holding the mailboxes. Every mailbox's calendar is
written into Radicale's storage before it starts, with one meeting (attendees) that starts at
the same minute B for all of them, `--lead-seconds` ahead. The node re-asks nothing on its own
during the run (`presence_reask_seconds` 3600, no change-tag confirmation): what is measured
is the push path.

1. **Latency**: `--streams` streams (raw HTTP/1.1 SSE readers in this process), ten per
   mailbox on `--streams / 10` mailboxes (not the burst's). `--changes` times, a meeting
   going on now is PUT into one of them with CalDAV and the change is told to the node
   (`POST /api/v1/changes`, as a storage hook does); from the moment that call returns (the
   change is visible to the node) to each of the mailbox's ten subscribers receiving its
   *In a meeting*: p50, p99, max.
2. **Memory**: the node's RSS before the streams, with them, and per stream.
3. **Burst**: the latency streams closed, one stream per mailbox on all `--burst` mailboxes;
   at B every meeting starts; from B to each subscriber's *In a meeting*: p50, p99, last.

Every wait is bounded by `--max-seconds` overall and by its own limit; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import require, stop

DOMAIN = "contoso.test"
CLIENT = ("bench", secrets.token_urlsafe(12))
OPEN_CONCURRENCY = 40


def address(i: int) -> str:
    return f"p{i:04d}@{DOMAIN}"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def meeting(uid: str, start: datetime, minutes: int, summary: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:{stamp(start)}\r\n"
        f"DTEND:{stamp(start + timedelta(minutes=minutes))}\r\nSUMMARY:{summary}\r\n"
        "ORGANIZER:mailto:boss@contoso.test\r\nATTENDEE:mailto:p0000@contoso.test\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def write_storage(folder: Path, count: int, boundary: datetime) -> None:
    """Radicale's storage (multifilesystem): a calendar per mailbox, one meeting at B."""
    root = folder / "collections" / "collection-root"
    for i in range(count):
        calendar = root / address(i) / "calendar"
        calendar.mkdir(parents=True)
        (calendar / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR"}))
        (calendar / "burst.ics").write_text(meeting("burst", boundary, 30, "All hands"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Reader:
    """One SSE stream read with a raw socket: each event's JSON and when it arrived."""

    port: int
    mailbox: str
    got: list[tuple[float, dict]] = field(default_factory=list)
    first: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        token = base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
        self.writer.write(
            f"GET /api/v1/presence/stream?address={self.mailbox} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        status = await reader.readline()
        if b" 200 " not in status:
            raise SystemExit(f"stream refused: {status.decode().strip()}")
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            chunked |= line.lower().startswith(b"transfer-encoding: chunked")
        while line := await reader.readline():
            if line.startswith(b"data: "):
                self.got.append((time.time(), json.loads(line[6:])))
                self.first.set()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def open_all(port: int, mailboxes: list[str], limit: float) -> list[Reader]:
    readers = [Reader(port, m) for m in mailboxes]
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(r: Reader) -> None:
        async with gate:
            await r.open()
            await r.first.wait()

    await asyncio.wait_for(asyncio.gather(*(one(r) for r in readers)), limit)
    return readers


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(args: argparse.Namespace, port: int, radicale: str, node_pid: int,
                  admin: str) -> dict[str, float]:  # fmt: skip
    import httpx

    per = 10
    boxes = [address(args.burst + i) for i in range(max(1, args.streams // per))]
    before = rss_kib(node_pid)
    readers = await open_all(port, [b for b in boxes for _ in range(per)], 300)
    await asyncio.sleep(2)
    during = rss_kib(node_pid)
    samples: list[float] = []
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        for k in range(args.changes):
            box = boxes[k % len(boxes)]
            mine = [r for r in readers if r.mailbox == box]
            counts = [len(r.got) for r in mine]
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
            url = f"{radicale}/{box}/calendar/{uuid.uuid4()}.ics"
            body = meeting(str(uuid.uuid4()), start, 30, f"change {k}")
            put = await http.put(url, content=body, auth=("admin", args.admin_password))
            put.raise_for_status()
            told = await http.post(
                f"http://127.0.0.1:{port}/api/v1/changes", json={"addresses": [box]},
                headers={"Authorization": f"Bearer {admin}"},
            )  # fmt: skip
            visible = time.time()
            told.raise_for_status()
            deadline = time.monotonic() + 10
            while any(len(r.got) == c for r, c in zip(mine, counts)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
            samples += [r.got[c][0] - visible for r, c in zip(mine, counts) if len(r.got) > c]
            await asyncio.sleep(0.2)
    for r in readers:
        r.close()
    missing = args.changes * per - len(samples)
    return {
        "streams": len(readers), "p50": quantile(samples, 0.5), "p99": quantile(samples, 0.99),
        "max": max(samples), "missing": missing, "rss_before": before, "rss_during": during,
    }  # fmt: skip


async def burst(args: argparse.Namespace, port: int, boundary: datetime) -> dict[str, float]:
    readers = await open_all(port, [address(i) for i in range(args.burst)], 600)
    opened = time.time()
    if opened > boundary.timestamp() - 2:
        raise SystemExit(
            f"the {args.burst} streams were open only {opened - boundary.timestamp():+.0f}s from "
            "the boundary; raise --lead-seconds"
        )
    await asyncio.sleep(max(0.0, boundary.timestamp() - time.time()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(any(d.get("state") == "InAMeeting" for _, d in r.got) for r in readers):
            break
        await asyncio.sleep(0.01)
    delays = [
        next(t for t, d in r.got if d.get("state") == "InAMeeting") - boundary.timestamp()
        for r in readers
        if any(d.get("state") == "InAMeeting" for _, d in r.got)
    ]
    for r in readers:
        r.close()
    if len(delays) < len(readers):
        seen: dict[tuple, int] = {}
        for r in readers:
            key = tuple(d.get("state") for _, d in r.got)
            seen[key] = seen.get(key, 0) + 1
        print(f"not every subscriber saw the meeting start; states seen: {seen}", file=sys.stderr)
    return {
        "streams": len(readers), "delivered": len(delays), "p50": quantile(delays, 0.5),
        "p99": quantile(delays, 0.99), "last": max(delays),
    }  # fmt: skip


def node_config(tmp: Path, radicale_url: str, count: int) -> Path:
    import yaml

    (tmp / "client-password").write_text(CLIENT[1])
    (tmp / "admin-token").write_text(secrets.token_urlsafe(24))
    (tmp / "caldav-password").write_text(CLIENT[1])
    document = {
        "settings": {
            "admin_token_file": str(tmp / "admin-token"), "throttle_rate": 0,
            "cache_validate_seconds": 0, "cache_refresh_seconds": 3600,
            "presence_reask_seconds": 3600, "presence_max_streams": 10_000,
            "presence_heartbeat_seconds": 30, "log_level": "warning",
        },
        "domains": [DOMAIN],
        "auth": {"users": [{"username": CLIENT[0], "password_file": str(tmp / "client-password")}]},
        "sites": [{"name": "eu", "timezone": "UTC", "nodes": [],
                   "caldav": {"url": radicale_url + "/", "username": "cas",
                              "password_file": str(tmp / "caldav-password")}}],
        "mailboxes": [
            {"address": address(i), "site": "eu",
             "calendar_url": f"{radicale_url}/{address(i)}/calendar/"}
            for i in range(count)
        ],
    }  # fmt: skip
    path = tmp / "sitemap.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"cas serve exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"cas serve was not ready within {limit:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--lead-seconds", type=float, default=240)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    require()
    from caslab.process import free_port
    from caslab.radicale import RadicaleServer

    started = time.monotonic()
    boundary = (datetime.now(UTC) + timedelta(seconds=args.lead_seconds)).replace(
        second=0, microsecond=0
    ) + timedelta(minutes=1)
    args.admin_password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="cas-bench-presence-") as name:
        tmp = Path(name)
        total = args.burst + max(1, args.streams // 10)
        write_storage(tmp / "radicale", total, boundary)
        radicale = RadicaleServer(
            tmp / "radicale", {"admin": args.admin_password, "cas": CLIENT[1]},
            admins=["admin"], readers=["cas"], max_connections=64, auth_delay=0,
        ).start()  # fmt: skip
        port = free_port()
        config = node_config(tmp, radicale.url, total)
        node = subprocess.Popen(
            [sys.executable, "-m", "cas", "serve", "--config", str(config), "--site", "eu",
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "node.log", "wb"),  # noqa: SIM115
            env={**os.environ, "CAS_THROTTLE_RATE": "0"},
        )  # fmt: skip
        try:
            wait_ready(port, node, 60)
            admin = (tmp / "admin-token").read_text()
            left = args.max_seconds - (time.monotonic() - started)
            lat = asyncio.run(
                asyncio.wait_for(latency(args, port, radicale.url, node.pid, admin), left)
            )
            print(f"latency phase: {lat}", file=sys.stderr)
            left = args.max_seconds - (time.monotonic() - started)
            top = asyncio.run(asyncio.wait_for(burst(args, port, boundary), left))
        finally:
            stop(node)
            problems = [
                line
                for line in (tmp / "node.log").read_text().splitlines()
                if "ERROR" in line or "Traceback" in line or "Error" in line
            ]
            for line in problems[:20]:
                print(f"node log: {line}", file=sys.stderr)
            radicale.stop()
    per_stream = (lat["rss_during"] - lat["rss_before"]) / max(1, lat["streams"])
    rows = [
        ("push latency, change visible -> subscriber",
         f"{lat['streams']} streams, {args.changes} changes x 10 subscribers",
         f"p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, "
         f"max {lat['max'] * 1000:.0f} ms, missing {lat['missing']}", "p99 <= 1 s"),
        ("top-of-the-hour burst, boundary -> subscriber",
         f"{top['streams']} mailboxes, 1 stream each",
         f"delivered {top['delivered']}, p50 {top['p50'] * 1000:.0f} ms, "
         f"p99 {top['p99'] * 1000:.0f} ms, last {top['last'] * 1000:.0f} ms", "last <= 3 s"),
        ("node RSS", f"idle, then {lat['streams']} streams",
         f"{lat['rss_before'] / 1024:.0f} MiB -> {lat['rss_during'] / 1024:.0f} MiB", ""),
        ("RSS per idle stream", f"{lat['streams']} streams", f"{per_stream:.1f} KiB", ""),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "load", "result", "target")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
