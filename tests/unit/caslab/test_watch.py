"""The lab's commentary: which node log lines it prints, and following files as they grow."""

from __future__ import annotations

import time
from pathlib import Path

from caslab.watch import Followed, LogWatcher, failure_line

WARN = (
    "2026-12-05 09:03:45,123 WARNING cas.service site=eu rid=4f2a backend failed for "
    "ann@contoso.test: CalDAV backend at http://127.0.0.1:5232/ did not answer within 10s"
)
INFO = "2026-12-05 09:03:45,123 INFO cas.runtime site=eu rid=- sitemap reloaded (generation 2)"
ERROR = "2026-12-05 09:03:46,000 ERROR uvicorn.error site=us rid=- Exception in ASGI application"


def test_warnings_and_errors_are_printed_with_the_node_name_and_request_id() -> None:
    assert failure_line("cas-eu-1", WARN) == (
        "[cas-eu-1] WARNING backend failed for ann@contoso.test: CalDAV backend at "
        "http://127.0.0.1:5232/ did not answer within 10s rid=4f2a"
    )
    assert failure_line("cas-us-2", ERROR) == "[cas-us-2] ERROR Exception in ASGI application"


def test_other_lines_are_not_printed() -> None:
    assert failure_line("cas-eu-1", INFO) is None
    assert failure_line("cas-eu-1", "Traceback (most recent call last):") is None
    assert failure_line("cas-eu-1", "") is None


def test_the_watcher_prints_only_what_is_written_after_it_starts(tmp_path: Path) -> None:
    log = tmp_path / "cas-eu-1.log"
    log.write_text(WARN + "\n")  # before the start: already seen by whoever looked
    shown: list[str] = []
    watcher = LogWatcher(
        [Followed("cas-eu-1", log), Followed("cas-eu-2", tmp_path / "no")], shown.append
    )
    watcher.start()
    try:
        with log.open("a") as handle:
            handle.write(INFO + "\n" + ERROR[:30])  # half a line: not yet
            handle.flush()
            deadline = time.monotonic() + 10
            while not watcher.seen_all():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert shown == []
            handle.write(ERROR[30:] + "\n")
    finally:
        watcher.stop()  # reads what was written before it stops
    assert shown == ["[cas-eu-1] ERROR Exception in ASGI application"]


def breaker(level: str, site: str, message: str) -> str:
    return f"2026-12-05 09:04:00,000 {level} cas.breaker_board site={site} rid=ab12 {message}"


def test_each_breaker_change_is_shown_once_whichever_node_sees_it(tmp_path: Path) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("cas-eu-1", "cas-eu-2")}
    for path in logs.values():
        path.write_text("")
    shown: list[str] = []
    watcher = LogWatcher([Followed(n, p) for n, p in logs.items()], shown.append)
    down = breaker("WARNING", "eu", "breaker caldav:eu open: CalDAV backend of site eu is down")
    still = breaker("INFO", "eu", "breaker caldav:eu still-open: probe failed")
    back = breaker("INFO", "eu", "breaker caldav:eu closed: CalDAV backend of site eu is back")
    other = breaker("WARNING", "eu", "breaker redis:eu open: Redis of site eu is down")
    for name, lines in (
        ("cas-eu-1", [down, still]),
        ("cas-eu-2", [down, other, still]),
        ("cas-eu-1", [back]),
        ("cas-eu-2", [back, INFO]),
    ):
        with logs[name].open("a") as handle:
            handle.write("\n".join(lines) + "\n")
        watcher.poll()
    assert shown == [
        "[cas-eu-1] WARNING breaker caldav:eu open: CalDAV backend of site eu is down rid=ab12",
        "[cas-eu-2] WARNING breaker redis:eu open: Redis of site eu is down rid=ab12",
        "[cas-eu-1] INFO breaker caldav:eu closed: CalDAV backend of site eu is back rid=ab12",
    ]
