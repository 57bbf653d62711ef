"""Warm (cached) lookups: throughput against a bare endpoint, and 3-site against local latency.

    .venv/bin/python bench/cache.py [--seconds 10] [--connections 16] [--rounds 60]

1. Warm single-mailbox 1-day EWS lookup, requests per second on ONE uvicorn worker, against a
   bare Starlette endpoint on the same server returning the same response bytes; same load tool
   (wrk), same connections. Target: at least 0.5 of the bare endpoint.
2. Warm 100-mailbox 42-day DetailedMerged lookup: p50 and p99 over 3 sites (34 + 34 + 32,
   asked of one node of the first site) and over 100 local mailboxes. Target: the 3-site p99
   within 1.3x of the local p99.

Needs the load tool wrk and redis-server besides the project: `bash bench/setup` installs them;
without them the bench says so and exits with status 2.

Labs run with a redis-server per site; "warm" means the same lookup was answered once before,
so every mailbox is in the site's cache (and the entry node keeps other sites' answers).
Bounded: wrk runs for --seconds; latency loops stop after --rounds requests or 120 s.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    M,
    client_for,
    measure,
    median,
    request_body,
    require,
    running_lab,
    stop,
    today_utc,
)

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wrk(
    url: str, body: bytes, auth: tuple[str, str], seconds: int, connections: int, tmp: Path
) -> float:
    """Requests per second wrk measures for POSTing `body` to `url`."""
    script = tmp / "post.lua"
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    body_file = tmp / "body.xml"
    body_file.write_bytes(body)
    script.write_text(
        'local f = io.open("' + str(body_file) + '", "rb"); local b = f:read("*a"); f:close()\n'
        'wrk.method = "POST"\nwrk.body = b\n'
        'wrk.headers["Content-Type"] = "text/xml; charset=utf-8"\n'
        f'wrk.headers["Authorization"] = "Basic {token}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses from {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def throughput(args: argparse.Namespace) -> tuple[float, float]:
    from caslab.process import free_port

    with (
        running_lab(
            "--sites", "1", "--nodes-per-site", "1", "--mailboxes-per-site", "4"
        ) as manifest,
        tempfile.TemporaryDirectory(prefix="cas-bench-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        tls = Path(manifest["ca_cert"]).parent
        port = free_port()
        bare_file = tmp / "bare.xml"
        server = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "serve_with_bare.py"),
                "--config",
                manifest["sitemap"],
                "--site",
                "eu",
                "--port",
                str(port),
                "--tls-cert",
                str(tls / "node.pem"),
                "--tls-key",
                str(tls / "node.key"),
                "--bare-body",
                str(bare_file),
            ],
        )
        try:
            base = f"https://127.0.0.1:{port}"
            address = manifest["mailboxes"][0]["address"]
            start = today_utc()
            body = request_body([address], start, start + dt.timedelta(days=1))
            with client_for(manifest) as client:
                deadline = time.monotonic() + 30
                while True:
                    if server.poll() is not None:
                        raise SystemExit(f"bench server exited with status {server.returncode}")
                    try:
                        if client.get(base + "/readyz").status_code == 200:
                            break
                    except Exception:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("bench server did not start")
                    time.sleep(0.2)
                measure(client, base + "/EWS/Exchange.asmx", body, 3, 30, 1)  # warm the cache
                answer = client.post(
                    base + "/EWS/Exchange.asmx",
                    content=body,
                    headers={"Content-Type": "text/xml; charset=utf-8"},
                )
                bare_file.write_bytes(answer.content)
            auth = (manifest["client"]["username"], manifest["client"]["password"])
            ews = wrk(base + "/EWS/Exchange.asmx", body, auth, args.seconds, args.connections, tmp)
            bare = wrk(base + "/bare", body, auth, args.seconds, args.connections, tmp)
            return ews, bare
        finally:
            stop(server)


def fill_caches(client, url: str, body: bytes, attempts: int = 5) -> None:  # type: ignore[no-untyped-def]
    """Ask until every mailbox has been answered once (the first, cold ask may run out of time
    for a few on a busy machine); untimed. Bounded by `attempts`."""
    from lxml import etree

    for _ in range(attempts):
        response = client.post(
            url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
        codes = etree.fromstring(response.content).findall(f".//{{{M}}}ResponseCode")
        if response.status_code == 200 and all(c.text == "NoError" for c in codes):
            return
    raise SystemExit("the caches could not be filled: some mailboxes never answered")


def warm_latency(lab_args: list[str], rounds: int) -> list[float]:
    with running_lab(*lab_args) as manifest:
        addresses = [m["address"] for m in manifest["mailboxes"] if m["kind"] == "modern"][:100]
        url = manifest["sites"][0]["nodes"][0] + "/EWS/Exchange.asmx"
        start = today_utc() - dt.timedelta(days=7)
        body = request_body(addresses, start, start + dt.timedelta(days=42))
        with client_for(manifest) as client:
            fill_caches(client, url, body)
            return measure(client, url, body, rounds, 120, len(addresses))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    require(commands=("wrk",), redis_server=True)

    from rich.console import Console
    from rich.table import Table

    ews, bare = throughput(args)
    local = warm_latency(
        ["--sites", "1", "--nodes-per-site", "1", "--mailboxes-per-site", "100"], args.rounds
    )
    spread = warm_latency(
        ["--sites", "3", "--nodes-per-site", "2", "--mailboxes-per-site", "34"], args.rounds
    )

    console = Console()
    table = Table(
        title=f"Warm single-mailbox 1-day EWS lookup, 1 uvicorn worker, wrk {args.connections} connections"
    )
    for column in ("endpoint", "requests/s", "ratio to bare"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    table.add_row("POST /EWS/Exchange.asmx (cached)", f"{ews:.0f}", f"{ews / bare:.2f}")
    table.add_row("POST /bare (same bytes)", f"{bare:.0f}", "1.00")
    console.print(table)
    print("target: ratio >= 0.5")

    table = Table(title="Warm 100-mailbox 42-day DetailedMerged lookup")
    for column in ("case", "requests", "p50 ms", "p99 ms", "p99 / local p99"):
        table.add_column(column, justify="left" if column == "case" else "right")
    local_p99 = percentile(local, 0.99)
    for name, t in (("100 local (1 site)", local), ("100 over 3 sites", spread)):
        table.add_row(
            name,
            str(len(t)),
            f"{median(t):.1f}",
            f"{percentile(t, 0.99):.1f}",
            f"{percentile(t, 0.99) / local_p99:.2f}",
        )
    console.print(table)
    print("target: 3-site p99 / local p99 <= 1.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
