"""A Server-Sent Events reader for tests: a thread reads one stream with httpx and parses it.

`SseStream(url, ...)` opens the stream on a daemon thread; `events` receives each event as an
`SseEvent` (id, event, parsed JSON data, the local time it arrived), comments are counted in
`comments`, a `retry:` field is kept in `retries`, and `ended` is set when the server closes
the stream. `close()` ends the reader (the test's finally must call it).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: Any
    arrived: float  # time.time() when the event's blank line was read


@dataclass
class SseStream:
    url: str
    params: list[tuple[str, str]]
    auth: tuple[str, str] | None
    verify: str
    headers: dict[str, str] = field(default_factory=dict)
    events: queue.Queue[SseEvent] = field(default_factory=queue.Queue)
    comments: int = 0
    retries: list[int] = field(default_factory=list)
    status: int | None = None
    body: bytes = b""
    ended: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _client: httpx.Client | None = None

    def start(self) -> SseStream:
        self._client = httpx.Client(
            verify=self.verify, trust_env=False, timeout=httpx.Timeout(10, read=None)
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self.opened.wait(30):
            raise TimeoutError(f"stream {self.url} did not open")
        return self

    def _run(self) -> None:
        assert self._client is not None
        try:
            with self._client.stream(
                "GET", self.url, params=self.params, auth=self.auth, headers=self.headers
            ) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = response.read()
                    self.opened.set()
                    return
                self.opened.set()
                self._parse(response.iter_lines())
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def _parse(self, lines: Any) -> None:
        fields: dict[str, str] = {}
        for line in lines:
            if self._stop.is_set():
                return
            if line == "":
                if "data" in fields:
                    data = json.loads(fields["data"])
                    self.events.put(
                        SseEvent(
                            fields.get("id"), fields.get("event", "message"), data, time.time()
                        )
                    )
                fields = {}
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retries.append(int(value))
                else:
                    fields[name] = value

    def next(
        self, where: Callable[[SseEvent], bool] = lambda e: True, timeout: float = 30
    ) -> SseEvent:
        """The next event for which `where` holds (others are dropped); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout}s on {self.url}")
            try:
                event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if where(event):
                return event

    def drain(self) -> list[SseEvent]:
        """Every event received and not yet taken."""
        found = []
        while True:
            try:
                found.append(self.events.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(5)
