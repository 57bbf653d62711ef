"""`cas lookup --presence` and `cas presence --follow`: presence as a client sees it.

Both find a node the way `cas lookup` does (`--url`, else the lab manifest's nodes or DNS SRV
+ Autodiscover's servers, `cas.client.lookup.autodiscover_urls`), trying them in order.

* `cas lookup --presence ADDRESS...` asks `POST /api/v1/presence` once and prints one line per
  address: its state, since and until when, what follows, the subject and location where the
  login may see them, and where the data came from. Exit status 0 when every address has a
  state, 1 when some got an error.
* `cas presence --follow ADDRESS...` reads `GET /api/v1/presence/stream` and prints a line per
  event as it comes. When the stream ends (the node drains, restarts or goes away) it waits
  the `retry:` the server asked for and connects again, to the next node, with the last
  event id, so what happened in between is replayed (same node) or the current state is sent
  (another node). `--count N` and `--seconds S` bound it (scripts, tests); Ctrl-C ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from cas.client.lookup import _http_client, _transport_problem, autodiscover_urls
from cas.client.options import LookupFailed, LookupOptions, options_from_args

STATE_WORDS = {
    "Available": "Available",
    "InAMeeting": "In a meeting",
    "Busy": "Busy",
    "Away": "Away",
    "Unknown": "Unknown",
}
MAX_BACKOFF_SECONDS = 10.0


async def node_bases(options: LookupOptions) -> list[str]:
    """Node base URLs to try, in order."""
    urls = [options.ews_url] if options.ews_url else await autodiscover_urls(options)
    bases: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        if base not in bases:
            bases.append(base)
    return bases


def _clock(value: str | None) -> str:
    if not value:
        return "?"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M")


def describe(doc: dict[str, Any]) -> str:
    """One line for one view (`cas.codecs.presence_json`)."""
    address = doc.get("address", "?")
    error = doc.get("error")
    if "state" not in doc:
        code = error.get("code") if isinstance(error, dict) else "?"
        return f"{address}  (error: {code})"
    line = f"{address}  {STATE_WORDS.get(doc['state'], doc['state'])}"
    if doc.get("since"):
        line += f" since {_clock(doc['since'])}"
    if doc.get("until"):
        line += f" until {_clock(doc['until'])}, then {STATE_WORDS.get(doc.get('next') or '', '?')}"
    shown = [doc[k] for k in ("subject", "location") if doc.get(k)]
    if shown:
        line += "  " + " @ ".join(f"{s!r}" for s in shown)
    fresh = doc.get("freshness")
    if isinstance(fresh, dict):
        where = "old server" if fresh.get("oldServer") else fresh.get("site")
        line += f"  [{fresh.get('source')}, {fresh.get('ageSeconds')}s, {where}]"
    if isinstance(error, dict):
        line += f"  (error: {error.get('code')})"
    return line


async def ask_presence(options: LookupOptions) -> list[dict[str, Any]]:
    """The views of `options.addresses`, from the first node that answers."""
    problems: list[str] = []
    async with _http_client(options, None) as client:
        client.headers["Content-Type"] = "application/json"
        for base in await node_bases(options):
            try:
                response = await client.post(
                    base + "/api/v1/presence", json={"addresses": list(options.addresses)}
                )
            except httpx.HTTPError as exc:
                problems.append(f"{base}: {_transport_problem(exc)}")
                continue
            if response.status_code == 200:
                value = response.json().get("value")
                if isinstance(value, list):
                    return value
            problems.append(f"{base}: HTTP {response.status_code} {response.text[:200]}")
    raise LookupFailed("no node answered the presence request: " + "; ".join(problems))


def run_presence_lookup(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """`cas lookup --presence`: one line (or a JSON document) per address."""
    options = options_from_args(args)
    views = asyncio.run(ask_presence(options))
    out = stdout or sys.stdout
    if options.as_json:
        json.dump({"value": views}, out, indent=2)
        out.write("\n")
    else:
        for doc in views:
            out.write(describe(doc) + "\n")
    return 0 if all("state" in v and "error" not in v for v in views) else 1


class Follower:
    """Reads the stream, reconnecting with the last event id (see the module docstring)."""

    def __init__(self, options: LookupOptions, out: TextIO, *, count: int | None,
                 seconds: float | None) -> None:  # fmt: skip
        self.options, self.out = options, out
        self.count, self.seconds = count, seconds
        self.seen = 0
        self.last_id: str | None = None
        self.retry = 1.0
        self.deadline = time.monotonic() + seconds if seconds else None

    def _done(self) -> bool:
        over = self.deadline is not None and time.monotonic() >= self.deadline
        return over or (self.count is not None and self.seen >= self.count)

    def _left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def run(self) -> int:
        bases = await node_bases(self.options)
        attempt = 0
        while not self._done():
            base = bases[attempt % len(bases)]
            try:
                await asyncio.wait_for(self._read(base), self._left())
                attempt += 1  # the stream ended (draining): the next node
            except TimeoutError:
                break
            except (httpx.HTTPError, LookupFailed) as exc:
                message = exc if isinstance(exc, LookupFailed) else _transport_problem(exc)
                self.out.write(f"# {base}: {message}; trying again\n")
                self.out.flush()
                attempt += 1
            if not self._done():
                await asyncio.sleep(min(self.retry, MAX_BACKOFF_SECONDS, self._left() or 1e9))
        return 0

    async def _read(self, base: str) -> None:
        params = httpx.QueryParams([("address", a) for a in self.options.addresses])
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        async with _http_client(self.options, None) as client:
            client.timeout = httpx.Timeout(self.options.timeout_seconds, read=None)
            url = base + "/api/v1/presence/stream"
            async with client.stream("GET", url, params=params, headers=headers) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode("utf-8", "replace")[:200]
                    after = response.headers.get("retry-after", "")
                    if after.isdigit():
                        self.retry = float(after)
                    raise LookupFailed(f"HTTP {response.status_code} {body}")
                await self._events(response.aiter_lines())

    async def _events(self, lines: Any) -> None:
        fields: dict[str, str] = {}
        async for line in lines:
            if line == "":
                self._event(fields)
                fields = {}
                if self._done():
                    return
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry" and value.isdigit():
                self.retry = int(value) / 1000
            elif name in ("id", "event", "data"):
                fields[name] = value

    def _event(self, fields: dict[str, str]) -> None:
        if "id" in fields:
            self.last_id = fields["id"]
        if "data" not in fields:
            return
        try:
            doc = json.loads(fields["data"])
        except ValueError:
            return
        stamp = datetime.now().strftime("%H:%M:%S")
        if fields.get("event") == "draining":
            self.out.write(f"{stamp}  # the node is draining; reconnecting\n")
        else:
            self.seen += 1
            shown = json.dumps(doc) if self.options.as_json else describe(doc)
            self.out.write(f"{stamp}  {shown}\n")
        self.out.flush()


def add_presence_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("presence", help="follow the presence of mailboxes as it changes")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="mailboxes to follow")
    p.add_argument("--follow", action="store_true", required=True,
                   help="print each change as it is pushed (reconnects on its own)")  # fmt: skip
    p.add_argument("--count", type=int, help="stop after this many presence events")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--url", help="node base URL; skips discovery")
    p.add_argument("--dns", metavar="HOST:PORT", help="DNS server for SRV lookups")
    p.add_argument("--ca", help="PEM CA certificate to verify the servers with")
    p.add_argument("--user", help="user name for HTTP Basic (with --manifest: a requester)")
    p.add_argument("--password-env", metavar="VAR", help="environment variable with the password")
    p.add_argument("--manifest", metavar="LAB.json", help="lab manifest: DNS, CA and credentials")
    p.add_argument("--json", action="store_true", help="print each event's JSON")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to connect (default 15)")
    p.set_defaults(start=None, end=None, days=None, interval=30, view="DetailedMerged", tz="UTC")


def run_follow(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """`cas presence --follow`: prints events until --count, --seconds or Ctrl-C."""
    if args.count is not None and args.count < 1:
        raise LookupFailed(f"--count {args.count}: must be at least 1")
    if args.seconds is not None and not args.seconds > 0:
        raise LookupFailed(f"--seconds {args.seconds:g}: must be positive")
    options = options_from_args(args)
    follower = Follower(options, stdout or sys.stdout, count=args.count, seconds=args.seconds)
    return asyncio.run(follower.run())


__all__ = ["add_presence_parser", "describe", "run_follow", "run_presence_lookup"]
