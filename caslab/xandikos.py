"""A real Xandikos CalDAV server run as a subprocess on loopback, and helpers to shape it.

`XandikosServer` writes an htpasswd file ({SHA} entries), starts Xandikos through
`caslab.xandikos_main` on 127.0.0.1 and a free port, and stops it by PID. Every folder under its
root is a principal `/<address>/` whose calendar home is `/<address>/calendars/`, so the same
mailbox has a different calendar path here than on Radicale (`/<address>/<name>/`): what a
node finds by discovery, not by a template. `add_principal` makes such a principal and sets
its `calendar-user-address-set` over WebDAV (PROPPATCH), so a principal search by address
finds it; `make_calendar` creates a calendar (MKCALENDAR) in its home. Events are stored with
`caslab.radicale.put_event`, plain CalDAV that works on any server.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import httpx

from caslab.process import ManagedProcess, free_port

DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_GRACE = 5.0
CALENDAR_HOME = "calendars"
_XML = {"Content-Type": 'application/xml; charset="utf-8"'}


class XandikosError(RuntimeError):
    """Xandikos could not be started, or refused a lab request."""


class XandikosServer:
    """One Xandikos process; `users` are the accounts of its Basic authentication."""

    def __init__(
        self,
        folder: str | Path,
        users: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.users = dict(users)
        self.host = host
        self.port: int | None = None
        self.start_timeout = start_timeout
        self._process = ManagedProcess(
            "Xandikos", self.folder / "xandikos.log", error=XandikosError
        )

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash."""
        if self.port is None:
            raise XandikosError("Xandikos is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> XandikosServer:
        if self.running:
            return self
        self.data.mkdir(parents=True, exist_ok=True)
        write_htpasswd(self.folder / "htpasswd", self.users)
        self._process.start_retrying(self._launch, 3, clean_up=lambda: self.stop(grace=1.0))
        return self

    def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Terminate the process (by PID), kill it after `grace` seconds, and reap it."""
        self._process.stop(grace)

    def __enter__(self) -> XandikosServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, chars: int = 2000) -> str:
        return self._process.log_tail(chars)

    def _launch(self, attempt: int) -> None:
        self.port = free_port(self.host)
        command = [
            sys.executable, "-m", "caslab.xandikos_main", "--directory", str(self.data),
            "--host", self.host, "--port", str(self.port),
            "--htpasswd", str(self.folder / "htpasswd"),
        ]  # fmt: skip
        self._process.spawn(command, cwd=self.folder)
        self._process.wait_until(self._answers, self.start_timeout, f"at {self.url}")

    def _answers(self) -> bool:
        try:
            httpx.request("OPTIONS", self.url + "/", timeout=1.0, trust_env=False)
        except httpx.TransportError:
            return False
        return True

    # --- shaping the server ------------------------------------------------------------------

    def principal_url(self, address: str) -> str:
        return f"{self.url}/{quote(address, safe='@+')}/"

    def calendar_url(self, address: str, name: str) -> str:
        return f"{self.principal_url(address)}{CALENDAR_HOME}/{quote(name)}/"

    async def add_principal(
        self, client: httpx.AsyncClient, address: str, auth: tuple[str, str]
    ) -> str:
        """Make `/<address>/` a principal with its calendar home, reachable by its address."""
        (self.data / address / CALENDAR_HOME).mkdir(parents=True, exist_ok=True)
        url = self.principal_url(address)
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            "<D:set><D:prop><C:calendar-user-address-set>"
            f"<D:href>mailto:{address}</D:href>"
            "</C:calendar-user-address-set></D:prop></D:set></D:propertyupdate>"
        )
        response = await client.request("PROPPATCH", url, content=body, headers=_XML, auth=auth)
        if response.status_code != 207 or "200" not in response.text:
            raise XandikosError(
                f"PROPPATCH {url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        return url

    async def make_calendar(
        self, client: httpx.AsyncClient, address: str, name: str, auth: tuple[str, str]
    ) -> str:
        """MKCALENDAR `/<address>/calendars/<name>/` (an existing one is kept); return its URL."""
        url = self.calendar_url(address, name)
        response = await client.request("MKCALENDAR", url, auth=auth)
        if response.status_code not in (201, 405):
            raise XandikosError(
                f"MKCALENDAR {url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        return url


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """An htpasswd file with `{SHA}` entries (what Xandikos reads without extra packages)."""
    lines = [
        f"{name}:{{SHA}}{base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()}\n"
        for name, pw in users.items()
    ]
    path.write_text("".join(lines), encoding="utf-8")
    path.chmod(0o600)
    return path


__all__ = ["CALENDAR_HOME", "XandikosError", "XandikosServer", "write_htpasswd"]
