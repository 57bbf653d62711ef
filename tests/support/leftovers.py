"""The session guard against leftover processes, as a pytest plugin (tests/conftest.py loads it).

At the start the test process becomes a child subreaper, so a process orphaned by a killed parent
is reparented to it rather than to init. At the end, after every fixture has been torn down, a
child of the test process that still runs was left behind by a test or a fixture: the guard names
each one, stops it by PID, and fails the session.
"""

from __future__ import annotations

import pytest

from tests.support.processes import (
    ChildProcess,
    become_subreaper,
    live_children,
    reap_zombies,
    stop_children,
)

_LEFT_RUNNING = pytest.StashKey[list[tuple[ChildProcess, bool]]]()


def pytest_configure(config: pytest.Config) -> None:
    become_subreaper()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = live_children()
    killed = set(stop_children(left)) if left else set()
    reap_zombies()
    if left:
        session.config.stash[_LEFT_RUNNING] = [(c, c.pid in killed) for c in left]
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left = terminalreporter.config.stash.get(_LEFT_RUNNING, [])
    if not left:
        return
    terminalreporter.section("processes left running", sep="=", red=True)
    terminalreporter.line(
        f"{len(left)} child process(es) of the test run outlived every fixture; each was "
        "stopped by PID now. Whatever started a process must stop it."
    )
    for child, needed_kill in left:
        how = "SIGKILL, it ignored SIGTERM" if needed_kill else "SIGTERM"
        terminalreporter.line(f"  pid {child.pid} ({how}): {child.command}", red=True)
