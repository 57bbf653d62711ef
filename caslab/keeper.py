"""Keeping a lab running when one of its parts dies.

`Keeper(parts, say)` watches every process of a lab: each node, each site's Radicale and
Redis, and the old server. One that exits is reported in one line (what it was, how it
ended, where its log is) and started again on the same port, so the sitemap still names it
and the nodes find it back through their breakers; with `restart=False` it is left down, and
the rest of the lab keeps running either way. A part that dies `MAX_RESTARTS` times within
`RESTART_WINDOW` seconds is left down too, with a line saying so (no restart loop).

`lab_parts(lab)` lists the parts of a `caslab.runner.Lab`; `write_parts_file` writes them with
their PIDs to `<state>/parts.json`, rewritten after each restart, so a user (or a test) can
stop or pause one on purpose: `kill -STOP <pid>` hangs a Radicale, `kill -9` kills a node.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from caslab.runner import Lab, NodeProcess

MAX_RESTARTS = 3
RESTART_WINDOW = 60.0


@dataclass
class LabPart:
    """One process of the lab, seen through functions (a node's process changes on restart)."""

    name: str  # "node cas-eu-1", "Radicale of site eu", "Redis of site eu", "old server"
    url: str
    log: Path
    pid: Callable[[], int | None]
    returncode: Callable[[], int | None]  # None while it runs
    restart: Callable[[], object]
    restarts: list[float] = field(default_factory=list)
    down: bool = False


def lab_parts(lab: Lab) -> list[LabPart]:
    """Every process of `lab`: its nodes, each site's Radicale and Redis, the old server."""
    parts = [_node_part(lab, node.name) for node in lab.nodes]
    for site in lab.sites:
        parts.append(
            _server_part(f"Radicale of site {site.name}", site.radicale.url, site.radicale)
        )
        if site.redis is not None:
            parts.append(_server_part(f"Redis of site {site.name}", site.redis.url, site.redis))
    if lab.legacy is not None:
        parts.append(_server_part("old server", lab.legacy.public_url, lab.legacy))
    return parts


class _Server(Protocol):
    """What `RadicaleServer`, `RedisProcess` and `LegacyServer` have in common here."""

    @property
    def pid(self) -> int | None: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def log_path(self) -> Path: ...
    def start(self) -> object: ...


def _server_part(name: str, url: str, server: _Server) -> LabPart:
    # start() reuses the port the server had: the sitemap names it
    return LabPart(
        name, url, server.log_path,
        pid=lambda: server.pid, returncode=lambda: server.returncode, restart=server.start,
    )  # fmt: skip


def _node_part(lab: Lab, name: str) -> LabPart:
    def current() -> NodeProcess:  # a restart replaces the node's entry in `lab.nodes`
        return next(node for node in lab.nodes if node.name == name)

    node = current()
    return LabPart(
        f"node {name}", node.url, node.log,
        pid=lambda: current().process.pid,
        returncode=lambda: current().process.poll(),
        restart=lambda: lab.restart_node(name),
    )  # fmt: skip


def write_parts_file(path: Path, parts: Sequence[LabPart]) -> None:
    rows = [{"name": p.name, "pid": p.pid(), "url": p.url, "log": str(p.log)} for p in parts]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parts": rows}, indent=2))
    tmp.replace(path)


def ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Keeper:
    """See the module docstring; call `check()` often (it restarts in the caller's thread)."""

    def __init__(
        self,
        parts: Sequence[LabPart],
        say: Callable[[str], None],
        *,
        restart: bool = True,
        on_restart: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parts = list(parts)
        self.say = say
        self.restart = restart
        self.on_restart = on_restart
        self.clock = clock

    def check(self) -> None:
        for part in self.parts:
            if part.down:
                continue
            code = part.returncode()
            if code is not None:
                self._died(part, code)

    def _died(self, part: LabPart, code: int) -> None:
        head = f"cas lab: {part.name} ({part.url}) {ended(code)}"
        now = self.clock()
        part.restarts = [t for t in part.restarts if now - t < RESTART_WINDOW]
        if not self.restart:
            part.down = True
            self.say(f"{head}; left down (--no-restart); log: {part.log}")
            return
        if len(part.restarts) >= MAX_RESTARTS:
            part.down = True
            self.say(
                f"{head} again: restarted {len(part.restarts)} times in "
                f"{RESTART_WINDOW:.0f}s; left down; log: {part.log}"
            )
            return
        part.restarts.append(now)
        try:
            part.restart()
        except Exception as exc:  # a part that cannot start again is left down, not fatal
            part.down = True
            self.say(f"{head}; could not restart it ({exc}); left down; log: {part.log}")
            return
        self.say(f"{head}; restarted it on the same port (pid {part.pid()}); log: {part.log}")
        if self.on_restart is not None:
            self.on_restart()
