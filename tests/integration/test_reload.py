"""Reloading the sitemap without a restart: on change, on SIGHUP, and not when it is broken."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cas.app import create_app
from cas.model.freebusy import MailboxData
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from caslab.process import free_port
from sitemap.load import load_sitemap
from tests.support.node import ThreadedServer
from tests.support.processes import ProcessGroup

SITEMAP = """
domains: [contoso.test]
auth: {{anonymous: true}}
sites:
  - name: eu
    nodes: [http://127.0.0.1:{port}]
mailboxes:
{mailboxes}
"""


def write(path: Path, port: int, *addresses: str) -> None:
    boxes = "\n".join(f"  - {{address: {a}, site: eu}}" for a in addresses)
    path.write_text(SITEMAP.format(port=port, mailboxes=boxes))
    # make the change visible to an mtime check even within one clock tick
    stamp = time.time() + 1
    os.utime(path, (stamp, stamp))


def status_of(client: httpx.Client, address: str) -> int:
    return client.get(f"/autodiscover/autodiscover.json/v1.0/{address}?Protocol=EWS").status_code


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class SlowBackend(FakeBackend):
    """Takes 1.5 s per lookup; `started` is set once a lookup has begun."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.started = threading.Event()

    async def fetch(self, mailbox, window):
        self.started.set()
        await asyncio.sleep(1.5)
        return await super().fetch(mailbox, window)


def test_changed_file_is_loaded_broken_file_is_refused_and_requests_in_flight_finish(
    tmp_path: Path, caplog
) -> None:
    path = tmp_path / "sitemap.yaml"
    write(path, 1, "ann@contoso.test")
    settings = load_settings({"reload_check_seconds": 0.2}, environ={})
    backend = SlowBackend({"ann@contoso.test": MailboxData()})
    app = create_app(
        settings, load_sitemap(path), "eu", path=str(path), backends={"modern": backend}
    )
    with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert status_of(client, "ann@contoso.test") == 200
        assert status_of(client, "bob@contoso.test") == 404

        # a lookup that takes 1.5 s is in flight while the file changes underneath it
        from tests.unit.test_ews_endpoint import availability

        answer: dict[str, httpx.Response] = {}
        slow = threading.Thread(
            target=lambda: answer.update(
                r=client.post("/EWS/Exchange.asmx", content=availability(["ann@contoso.test"]))
            )
        )
        slow.start()
        assert backend.started.wait(10), "the lookup never reached the backend"
        write(path, 1, "ann@contoso.test", "bob@contoso.test")
        assert wait_for(lambda: status_of(client, "bob@contoso.test") == 200)
        slow.join(timeout=10)
        assert answer["r"].status_code == 200 and b"NoError" in answer["r"].content

        # a broken file leaves the running configuration in place, and says why
        path.write_text("sites: [this is: not valid")
        stamp = time.time() + 2
        os.utime(path, (stamp, stamp))
        assert wait_for(lambda: "not reloaded" in caplog.text)
        assert status_of(client, "bob@contoso.test") == 200
        assert "keeping the previous configuration" in caplog.text


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs SIGHUP")
def test_sighup_reloads_a_running_node(tmp_path: Path, processes: ProcessGroup) -> None:
    port = free_port()
    path = tmp_path / "sitemap.yaml"
    write(path, port, "ann@contoso.test")
    log = tmp_path / "node.log"
    process = processes.spawn(
        [
            sys.executable, "-m", "cas", "serve", "--config", str(path), "--port", str(port),
            "--set", "reload_check_seconds=3600", "--set", "shutdown_drain_seconds=0",
        ],
        log=log,
    )  # fmt: skip
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False) as client:

        def up() -> bool:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(up, 20), f"node did not start:\n{log.read_text()}"
        write(path, port, "ann@contoso.test", "bob@contoso.test")
        time.sleep(0.5)
        assert status_of(client, "bob@contoso.test") == 404  # no polling: only SIGHUP reloads
        process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: status_of(client, "bob@contoso.test") == 200)
    assert processes.stop() == []  # SIGTERM was enough
    output = log.read_text()
    assert "reloaded (generation 2)" in output
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it so the exit status says so
    assert "Finished server process" in output and process.returncode in (0, -signal.SIGTERM)
