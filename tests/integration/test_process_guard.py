"""The test suite's own process hygiene: stopping many processes under one deadline, and the
session guard that reports, stops and fails on processes a test left running.

Real processes throughout (small Python programs); the guard is checked by running pytest on a
throwaway test file in a subprocess, with the guard loaded as a plugin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    ProcessGroup,
    live_children,
    stop_processes,
    stop_together,
)

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0

# Prints "ready" once its SIGTERM handler is in place, then sleeps; with "ignore" it ignores
# SIGTERM, so only SIGKILL ends it.
SLEEPER = """
import signal, sys, time
if sys.argv[1:] == ["ignore"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def sleeper(*args: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # the handler is in place before any signal
    return process


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        stop_processes(started, grace=1.0)
        for process in started:
            if process.stdout is not None:
                process.stdout.close()


def test_stop_processes_stops_all_and_kills_only_the_one_that_ignores_sigterm(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    sleepers += [sleeper(), sleeper("ignore"), sleeper()]
    already_done = subprocess.Popen([sys.executable, "-c", "pass"])
    already_done.wait(READY_TIMEOUT)
    killed = stop_processes([*sleepers, already_done], grace=1.0)
    assert killed == [sleepers[1].pid]
    assert [p.returncode for p in sleepers] == [-signal.SIGTERM, -signal.SIGKILL, -signal.SIGTERM]
    assert already_done.returncode == 0


class Recorder:
    """Stands in for a Popen: records the calls made on it, in one shared log."""

    def __init__(self, name: str, log: list[str], *, stops: bool) -> None:
        self.name, self.log, self.stops, self.pid = name, log, stops, hash(name)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.log.append(f"signal {self.name}")

    def wait(self, timeout: float | None = None) -> int:
        self.log.append(f"wait {self.name}")
        if not self.stops:
            raise subprocess.TimeoutExpired("x", timeout or 0)
        self.returncode = -signal.SIGTERM
        return self.returncode

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")
        self.stops = True


def test_every_process_is_signalled_before_any_is_waited_for() -> None:
    log: list[str] = []
    fakes = [Recorder("a", log, stops=True), Recorder("b", log, stops=False)]
    fakes.append(Recorder("c", log, stops=True))
    killed = stop_processes(fakes, grace=0.0)  # type: ignore[arg-type]
    assert log == [
        "signal a", "signal b", "signal c",
        "wait a", "wait b", "wait c",
        "kill b", "wait b",
    ]  # fmt: skip
    assert killed == [fakes[1].pid]


def test_stop_together_runs_every_stop_and_raises_the_first_failure() -> None:
    done: list[str] = []

    def failing() -> None:
        raise RuntimeError("could not stop")

    with pytest.raises(RuntimeError, match="could not stop"):
        stop_together([lambda: done.append("a"), failing, lambda: done.append("b")])
    assert sorted(done) == ["a", "b"]


def test_a_process_group_keeps_every_handle_and_stops_them_all(tmp_path: Path) -> None:
    group = ProcessGroup()
    command = [sys.executable, "-c", "import time; time.sleep(300)"]
    first = group.spawn(command, log=tmp_path / "first.log")
    second = group.spawn(command, log=tmp_path / "second.log")  # a "restart" that forgot the first
    try:
        assert {first.pid, second.pid} <= {c.pid for c in live_children()}
    finally:
        assert group.stop(grace=5.0) == []
    assert first.returncode == second.returncode == -signal.SIGTERM
    assert not group.running


# --- the session guard --------------------------------------------------------------------------

LEAKY = """
import os, subprocess, sys

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]

def test_passes_but_leaves_a_child_running():
    child = subprocess.Popen(SLEEP)
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.write(f"{child.pid}\\n")

def test_passes_but_orphans_a_grandchild():
    parent = subprocess.run(
        [sys.executable, "-c",
         "import subprocess, sys; "
         "p = subprocess.Popen(%r, stdout=subprocess.DEVNULL); print(p.pid)" % (SLEEP,)],
        stdout=subprocess.PIPE, text=True, check=True, timeout=60,
    )
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.write(parent.stdout)
"""

TIDY = """
import subprocess, sys

def test_stops_what_it_starts():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    child.terminate()
    child.wait(10)
"""


def run_guarded(folder: Path, source: str) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """pytest on `source` in a subprocess, with the guard plugin; the PIDs its tests recorded."""
    (folder / "test_inner.py").write_text(textwrap.dedent(source))
    pids_file = folder / "pids"
    pids_file.touch()
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "tests.support.leftovers", "--rootdir", str(folder),
            "-c", os.devnull, str(folder / "test_inner.py"),
        ],
        cwd=ROOT, env={**os.environ, "PIDS_FILE": str(pids_file)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, [int(line) for line in pids_file.read_text().split()]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_the_guard_names_stops_and_fails_on_processes_left_running(tmp_path: Path) -> None:
    result, pids = run_guarded(tmp_path, LEAKY)
    output = result.stdout + result.stderr
    assert len(pids) == 2, output
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "2 passed" in output and "processes left running" in output
    for pid in pids:  # the direct child and the orphaned grandchild are both found
        assert f"pid {pid} (SIGTERM)" in output
    deadline = time.monotonic() + READY_TIMEOUT
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if running(pid)]


def test_the_guard_stays_quiet_when_every_process_was_stopped(tmp_path: Path) -> None:
    result, _ = run_guarded(tmp_path, TIDY)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output
    assert "processes left running" not in output
