"""Stopping the processes tests start: all at once, by PID, and none left behind.

`stop_processes` signals every process first and then waits for all of them under one deadline,
so N nodes stop in about the time of the slowest one, not in the sum of their times; the ones
still running at the deadline get SIGKILL. `stop_together` does the same for the lab's server
objects (Radicale, redis-server, fault proxies), each of which stops its own process. A
`ProcessGroup` keeps every `Popen` handle it ever started, so a restart never loses one.

`live_children` walks /proc for the processes whose parent is this one; `stop_children` stops
such processes by PID. The session guard in tests/conftest.py uses both, and makes the test
process a child subreaper (`become_subreaper`) so that a grandchild orphaned by a killed parent
is reparented to it, and found, instead of to init.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 5.0  # seconds to reap a process after SIGKILL
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

__all__ = [
    "ChildProcess",
    "ProcessGroup",
    "become_subreaper",
    "children",
    "live_children",
    "reap_zombies",
    "stop_children",
    "stop_processes",
    "stop_together",
]


def stop_processes(
    processes: Iterable[subprocess.Popen[Any]],
    grace: float = STOP_GRACE,
    signum: int = signal.SIGTERM,
) -> list[int]:
    """Send `signum` to every running process, wait for all of them under one deadline of
    `grace` seconds, then SIGKILL the ones still running, and reap them all.

    Returns the PIDs that needed SIGKILL (an empty list when every process stopped in time).
    """
    running = [p for p in processes if p.poll() is None]
    for process in running:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass  # exited between poll() and the signal
    deadline = time.monotonic() + grace
    stragglers = []
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stragglers.append(process)
    for process in stragglers:
        process.kill()
    for process in stragglers:
        process.wait(KILL_WAIT)
    return [p.pid for p in stragglers]


def stop_together(stops: Iterable[Callable[[], object]]) -> None:
    """Call every `stop` at the same time (one thread each) and wait for all of them.

    For objects that stop their own process or thread (`RadicaleServer.stop`,
    `RedisProcess.stop`, `FaultProxy.stop`): the total is the slowest stop, not the sum. Every
    stop runs even when another fails; the first failure is raised afterwards.
    """
    calls = list(stops)
    if not calls:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(stop) for stop in calls]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


class ProcessGroup:
    """Processes started for one fixture: each `spawn` keeps its handle; `stop` ends them all."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        command: Sequence[str],
        *,
        log: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command` with no stdin and its output appended to `log` (never a pipe that
        nobody reads, which would block the process once it is full)."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )
        self._processes.append(process)
        return process

    @property
    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self._processes if p.poll() is None]

    def stop(self, grace: float = STOP_GRACE, signum: int = signal.SIGTERM) -> list[int]:
        """`stop_processes` over every process this group started; the PIDs that needed SIGKILL."""
        return stop_processes(self._processes, grace, signum)


@pytest.fixture
def processes() -> Iterator[ProcessGroup]:
    """A `ProcessGroup` whose processes are all stopped after the test, whatever its outcome."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop()


# --- what is left at the end ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildProcess:
    pid: int
    state: str  # the one-letter state of /proc/PID/stat: R, S, D, T, Z, ...
    command: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")  # a zombie has exited and only waits to be reaped


def _read_child(entry: Path, parent: int) -> ChildProcess | None:
    try:
        stat = (entry / "stat").read_text()
        cmdline = (entry / "cmdline").read_bytes()
    except OSError:
        return None  # exited meanwhile
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    if int(fields[1]) != parent:
        return None
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return ChildProcess(int(entry.name), fields[0], command or stat[: stat.rindex(")") + 1])


def children(parent: int | None = None) -> list[ChildProcess]:
    """The processes whose parent is `parent` (default: this process), zombies included."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _read_child(entry, parent)
            if child is not None:
                found.append(child)
    return sorted(found, key=lambda c: c.pid)


def live_children(parent: int | None = None) -> list[ChildProcess]:
    """The children of `parent` (default: this process) that still run."""
    return [c for c in children(parent) if c.alive]


def reap_zombies() -> int:
    """Reap this process's children that have exited but were never waited for (orphans
    reparented to a subreaper, or handles dropped without `wait`). Returns how many."""
    zombies = [c.pid for c in children() if not c.alive]
    return sum(1 for pid in zombies if _reaped(pid))


def _reaped(pid: int) -> bool:
    """Reap `pid` if it has exited; True once it is gone. Only for children of this process."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already (by its Popen handle), or not ours
    return done == pid


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    left = list(pids)
    while left:
        left = [pid for pid in left if not _reaped(pid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def stop_children(children: Iterable[ChildProcess], grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM each child by PID, wait for all under one deadline, SIGKILL the rest, reap all.

    Safe against PID reuse: a child's PID stays reserved until this process reaps it.
    Returns the PIDs that needed SIGKILL.
    """
    pids = [c.pid for c in children]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    stragglers = _wait_gone(pids, time.monotonic() + grace)
    for pid in stragglers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(stragglers, time.monotonic() + KILL_WAIT)
    return stragglers


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux PR_SET_CHILD_SUBREAPER),
    so `live_children` also finds a grandchild whose parent died without stopping it.
    False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
