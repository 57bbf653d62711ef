"""No abandoned tasks: a test fails when asyncio reports an exception nobody retrieved.

asyncio logs "Task exception was never retrieved" (or "Future exception ...") on its `asyncio`
logger when a task or future that ended with an exception is garbage collected unread: work
started and then abandoned, whose failure nobody saw. The autouse fixture listens on that logger
during each test (the event loops of in-process servers included, whatever their thread), runs
the young garbage collection at its end so that abandoned tasks held in recent reference cycles
are reported now and not in a later test, and fails the test (an error at its teardown) with
what asyncio said. A full collection at the end of the session catches the rest and fails the
session.

Real node processes write the same line to their logs; `tests.support.cluster` scans those.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

NEVER_RETRIEVED = "exception was never retrieved"


class _Catcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if NEVER_RETRIEVED in message:
            detail = self.format(record) if record.exc_info else message
            with self._lock:
                self.seen.append(detail)


_SESSION = pytest.StashKey[_Catcher]()
_reported: Counter[str] = Counter()  # what tests have failed for already


def pytest_configure(config: pytest.Config) -> None:
    catcher = _Catcher()
    catcher.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("asyncio").addHandler(catcher)
    config.stash[_SESSION] = catcher


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    catcher = session.config.stash[_SESSION]
    gc.collect()
    logging.getLogger("asyncio").removeHandler(catcher)
    catcher.seen[:] = list((Counter(catcher.seen) - _reported).elements())
    if catcher.seen and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    late = terminalreporter.config.stash[_SESSION].seen
    if late:
        terminalreporter.section("abandoned tasks found at the end", sep="=", red=True)
        for detail in late:
            terminalreporter.line(detail, red=True)


@pytest.fixture(autouse=True)
def no_abandoned_tasks() -> Iterator[None]:
    catcher = _Catcher()
    catcher.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("asyncio")
    logger.addHandler(catcher)
    try:
        yield
        gc.collect(1)
    finally:
        logger.removeHandler(catcher)
    if catcher.seen:
        _reported.update(catcher.seen)
        pytest.fail(
            f"{len(catcher.seen)} abandoned task(s): asyncio said\n" + "\n".join(catcher.seen),
            pytrace=False,
        )
