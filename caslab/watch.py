"""The lab's running commentary: one line on its output for each failure a node logs.

`LogWatcher` follows the log files of the lab's nodes from where they were when it started
(a thread, polling; files only grow) and prints each WARNING, ERROR or CRITICAL line, shortened
to the part that matters, prefixed with the node's name. A backend that times out or a peer that
cannot be reached therefore shows up in the lab's own window, not only in a log file.

Breaker transitions (`breaker KIND:TARGET STATE: ...`, `cas.breaker_board`) are shown once
per change of the dependency's state, whichever node reports it first: a Radicale that hangs
is one line when it goes down and one when it is back, not one per node of its site.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.25
# "2026-12-05 09:03:45,123 WARNING cas.service site=eu rid=abc backend failed for ..."
LINE = re.compile(
    r"^\S+ \S+ (?P<level>INFO|WARNING|ERROR|CRITICAL) (?P<logger>\S+) site=\S+ rid=(?P<rid>\S+) "
    r"(?P<message>.*)$"
)
BREAKER_LOGGER = "cas.breaker_board"
BREAKER = re.compile(r"^breaker (?P<key>\S+) (?P<state>open|still-open|half-open|closed):")


@dataclass(frozen=True, slots=True)
class Followed:
    name: str  # how the lab calls the part: "cas-eu-1"
    path: Path


def breaker_change(line: str) -> tuple[str, str] | None:
    """(dependency, state) when `line` is a breaker transition; "still-open" counts as open."""
    match = LINE.match(line.rstrip("\n"))
    if match is None or match["logger"] != BREAKER_LOGGER:
        return None
    found = BREAKER.match(match["message"])
    if found is None:
        return None
    return found["key"], "open" if found["state"] == "still-open" else found["state"]


def failure_line(name: str, line: str) -> str | None:
    """What to print for one log line of `name`, or None when it is not a failure."""
    match = LINE.match(line.rstrip("\n"))
    if match is None or (match["level"] == "INFO" and match["logger"] != BREAKER_LOGGER):
        return None
    rid = match["rid"]
    where = f" rid={rid}" if rid != "-" else ""
    return f"[{name}] {match['level']} {match['message']}{where}"


class LogWatcher:
    """Prints the failure lines of `files` through `emit` until `stop()`."""

    def __init__(self, files: Sequence[Followed], emit: Callable[[str], None]) -> None:
        self.files = list(files)
        self.emit = emit
        self._offsets = {f.path: _size(f.path) for f in self.files}
        self._partial: dict[Path, str] = {}
        self._breakers: dict[str, str] = {}  # dependency -> the state last shown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-log-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.poll()  # what was written just before the stop

    def seen_all(self) -> bool:
        """Every file has been read up to its current end."""
        return all(self._offsets.get(f.path, 0) >= _size(f.path) for f in self.files)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        for followed in self.files:
            for line in self._new_lines(followed.path):
                shown = failure_line(followed.name, line)
                if shown is not None and self._news(line):
                    self.emit(shown)

    def _news(self, line: str) -> bool:
        """False for a breaker transition already shown (another node saw it first)."""
        change = breaker_change(line)
        if change is None:
            return True
        key, state = change
        if state == "half-open" or self._breakers.get(key, "closed") == state:
            return False
        self._breakers[key] = state
        return True

    def _new_lines(self, path: Path) -> list[str]:
        offset = self._offsets.get(path, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except OSError:
            return []
        self._offsets[path] = offset + len(chunk)
        text = self._partial.pop(path, "") + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines[-1]:
            self._partial[path] = lines[-1]  # a line still being written
        return [line for line in lines[:-1] if line]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
