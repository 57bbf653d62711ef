"""`cas legacy-server` run as a subprocess on loopback (for the lab and the tests), and the
publishing calls that seed it.

`LegacyServer(folder, directory)` writes the directory as `folder/directory.json`, keeps the
messages in `folder/data`, starts `python -m cas legacy-server` on 127.0.0.1 and a free port (the
same port again on a restart), waits for `/healthz`, and stops it by PID. Its log goes to
`folder/legacy-server.log`. `publish_intervals` / `publish_ics` are the async publishing calls;
the server object has synchronous twins for scripts and tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from caslab.oldserver.directory import DirectoryEntry, write_directory_json
from caslab.oldserver.months import Interval
from caslab.process import ManagedProcess, free_port

DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_GRACE = 5.0


class LegacyServerError(RuntimeError):
    """The emulator could not be started, or refused a publishing call."""


def _iso(value: datetime) -> str:
    return value.isoformat()


def _pairs(intervals: Iterable[Interval]) -> list[list[str]]:
    return [[_iso(s), _iso(e)] for s, e in intervals]


def intervals_payload(
    address: str,
    *,
    busy: Iterable[Interval] = (),
    tentative: Iterable[Interval] = (),
    oof: Iterable[Interval] = (),
    publish_start: datetime,
    publish_end: datetime,
    duplicate: bool = False,
) -> dict[str, Any]:
    """The JSON body of `POST /public/publish`."""
    return {
        "address": address,
        "busy": _pairs(busy),
        "tentative": _pairs(tentative),
        "oof": _pairs(oof),
        "publish_start": _iso(publish_start),
        "publish_end": _iso(publish_end),
        "duplicate": duplicate,
    }


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise LegacyServerError(
            f"{response.request.method} {response.request.url} answered HTTP "
            f"{response.status_code}: {response.text.strip()[:300]}"
        )
    result: dict[str, Any] = response.json()
    return result


def _ics_request(
    public_url: str,
    address: str,
    publish_start: datetime,
    publish_end: datetime,
    tz: str,
    duplicate: bool,
) -> tuple[str, dict[str, str]]:
    url = f"{public_url.rstrip('/')}/publish/{quote(address, safe='@+')}.ics"
    params = {"publish_start": _iso(publish_start), "publish_end": _iso(publish_end), "tz": tz}
    if duplicate:
        params["duplicate"] = "1"
    return url, params


async def publish_intervals(
    client: httpx.AsyncClient, public_url: str, address: str, **fields: Any
) -> dict[str, Any]:
    """Publish a user's free/busy from intervals (see `intervals_payload` for `fields`)."""
    url = f"{public_url.rstrip('/')}/publish"
    return _checked(await client.post(url, json=intervals_payload(address, **fields)))


async def publish_ics(
    client: httpx.AsyncClient,
    public_url: str,
    address: str,
    ics_text: str,
    *,
    publish_start: datetime,
    publish_end: datetime,
    tz: str = "UTC",
    duplicate: bool = False,
) -> dict[str, Any]:
    """Publish a user's free/busy from an iCalendar text, expanded over the publish range."""
    url, params = _ics_request(public_url, address, publish_start, publish_end, tz, duplicate)
    response = await client.put(
        url,
        params=params,
        content=ics_text.encode("utf-8"),
        headers={"Content-Type": "text/calendar; charset=utf-8"},
    )
    return _checked(response)


class LegacyServer:
    """One `cas legacy-server` process; `directory` maps SMTP address -> (legacy DN, name)."""

    def __init__(
        self,
        folder: str | Path,
        directory: Mapping[str, DirectoryEntry | tuple[str, str]],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.directory = {k.casefold(): DirectoryEntry(*v) for k, v in directory.items()}
        self.host = host
        self._fixed_port = port
        self.port: int | None = None
        self.start_timeout = start_timeout
        self._process = ManagedProcess(
            "legacy server", self.folder / "legacy-server.log", error=LegacyServerError
        )

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        if self.port is None:
            raise LegacyServerError("the legacy server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def public_url(self) -> str:
        """The `/public/` root a site's `legacy.url` names."""
        return f"{self.url}/public/"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """How the process ended by itself (None while it runs, or once stopped)."""
        return self._process.returncode

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def log_tail(self, chars: int = 2000) -> str:
        return self._process.log_tail(chars)

    def start(self) -> LegacyServer:
        """Start the process and wait until `/healthz` answers; `LegacyServerError` otherwise."""
        if self.running:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        directory_file = write_directory_json(self.folder / "directory.json", self.directory)
        reuse = self._fixed_port or self.port
        # A first start may retry on other free ports; a restart must keep its port.
        attempts = 1 if reuse else 3

        def launch(attempt: int) -> None:
            self.port = reuse if (reuse and attempt == 0) else free_port(self.host)
            command = [
                sys.executable, "-m", "cas", "legacy-server",
                "--data", str(self.folder / "data"),
                "--directory", str(directory_file),
                "--host", self.host, "--port", str(self.port),
            ]  # fmt: skip
            self._process.spawn(command, cwd=self.folder)
            self._process.wait_until(self._healthy, self.start_timeout, f"at {self.url}")

        self._process.start_retrying(launch, attempts, clean_up=lambda: self.stop(grace=1.0))
        return self

    def _healthy(self) -> bool:
        try:
            health = httpx.get(f"{self.url}/healthz", timeout=1.0, trust_env=False)
        except httpx.TransportError:
            return False
        return health.status_code == 200

    def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Terminate the process (by PID), kill it after `grace` seconds, and reap it."""
        self._process.stop(grace)

    def __enter__(self) -> LegacyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- synchronous publishing, for scripts and tests ---------------------------------------

    def publish(self, address: str, **fields: Any) -> dict[str, Any]:
        """`POST /public/publish` (see `intervals_payload` for `fields`)."""
        with httpx.Client(trust_env=False, timeout=30) as client:
            return _checked(
                client.post(f"{self.public_url}publish", json=intervals_payload(address, **fields))
            )

    def publish_ics(
        self,
        address: str,
        ics_text: str,
        *,
        publish_start: datetime,
        publish_end: datetime,
        tz: str = "UTC",
        duplicate: bool = False,
    ) -> dict[str, Any]:
        """`PUT /public/publish/{address}.ics`."""
        url, params = _ics_request(
            self.public_url, address, publish_start, publish_end, tz, duplicate
        )
        with httpx.Client(trust_env=False, timeout=30) as client:
            return _checked(
                client.put(
                    url,
                    params=params,
                    content=ics_text.encode("utf-8"),
                    headers={"Content-Type": "text/calendar; charset=utf-8"},
                )
            )


__all__ = [
    "LegacyServer",
    "LegacyServerError",
    "intervals_payload",
    "publish_ics",
    "publish_intervals",
]
