"""A real Radicale CalDAV server run as a subprocess on loopback, and helpers to seed it.

`RadicaleServer` writes a config, an htpasswd file (plain text: lab only) and a rights file into
a folder, starts Radicale (through `caslab.radicale_main`, which raises its listen backlog) on
127.0.0.1 and a free port, and stops it by PID. The rights give each mailbox user its own `<address>/` tree, read-only service accounts (the CAS
nodes) read access to every collection, and admin accounts read/write access to every collection.
`caslab.radicale_files.write_server_files` and `radicale_command` are those steps on their own, for `cas lab-radicale`
(`caslab.parts`), which runs Radicale in the foreground of a container instead.
`ensure_calendar` and `put_event` create calendars and store events over plain CalDAV.

Radicale's built-in server resets connections when more than about 16 clients connect at once
(seen with 3.9: 24 parallel REPORTs lose a few), so seed with bounded concurrency; the helpers
retry a reset request, which is safe because MKCOL/MKCALENDAR tolerate "exists" and PUT replaces.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import httpx

from caslab.process import ManagedProcess, free_port
from caslab.radicale_files import (  # the lab's files, re-exported for its callers
    RadicaleError as RadicaleError,
)
from caslab.radicale_files import (
    change_hook as change_hook,
)
from caslab.radicale_files import (
    check_accounts,
    write_config,
    write_rights,
    write_users,
)
from caslab.radicale_files import (
    write_server_files as write_server_files,
)

DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_GRACE = 5.0
SEED_ATTEMPTS = 3


class RadicaleServer:
    """One Radicale process. Usernames may be e-mail addresses (`ann@contoso.test`).

    `users` maps every account (mailbox users, `admins`, `readers`) to its password. The
    storage lives in `folder/collections`; Radicale's own log goes to `folder/radicale.log`.
    """

    def __init__(
        self,
        folder: str | Path,
        users: Mapping[str, str],
        *,
        admins: Iterable[str] = ("admin",),
        readers: Iterable[str] = ("cas",),
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        auth_delay: float = 0.05,
        max_connections: int = 32,
        hook: str = "",
    ) -> None:
        self.folder = Path(folder).resolve()
        self.hook = hook  # a storage hook command, run after every write (`%(path)s`, ...)
        self.users = dict(users)
        self.admins = tuple(admins)
        self.readers = tuple(readers)
        check_accounts(self.users, self.admins, self.readers)
        self.host = host
        self._fixed_port = port
        self.port: int | None = None
        self.start_timeout = start_timeout
        self.auth_delay = auth_delay
        self.max_connections = max_connections
        self._process = ManagedProcess(
            "Radicale", self.folder / "radicale.log", error=RadicaleError
        )

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash: `http://127.0.0.1:PORT`."""
        if self.port is None:
            raise RadicaleError("Radicale is not started")
        return f"http://{self.host}:{self.port}"

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

    def start(self) -> RadicaleServer:
        """Start Radicale and wait until it answers HTTP; raise `RadicaleError` if it does not."""
        if self.running:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "collections").mkdir(exist_ok=True)
        self._write_users()
        self._write_rights()
        # A first start may retry on other free ports; a restart must keep its port.
        attempts = 1 if self._fixed_port is not None or self.port is not None else 3
        self._process.start_retrying(self._launch, attempts, clean_up=self._reap)
        return self

    def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Terminate the process (by PID), kill it after `grace` seconds, and reap it."""
        self._process.stop(grace)

    def __enter__(self) -> RadicaleServer:
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

    # --- internals -------------------------------------------------------------------------

    def _launch(self, attempt: int) -> None:
        if attempt > 0:
            self.port = None  # the free port chosen was taken meanwhile
        # A restart keeps the port it had: the sitemap names it.
        self.port = self._fixed_port or self.port or free_port(self.host)
        self._write_config()
        self._process.spawn(
            radicale_command(self.folder / "config"), cwd=self.folder, env=radicale_environment()
        )
        self._process.wait_until(self._answers, self.start_timeout, f"at {self.url}")

    def _answers(self) -> bool:
        try:
            httpx.request("OPTIONS", self.url, timeout=1.0, trust_env=False)
        except httpx.TransportError:
            return False
        return True

    def _reap(self) -> None:
        self.stop(grace=1.0)

    def _write_users(self) -> None:
        write_users(self.folder, self.users)

    def _write_rights(self) -> None:
        write_rights(self.folder, self.admins, self.readers)

    def _write_config(self) -> None:
        assert self.port is not None
        write_config(
            self.folder, self.host, self.port,
            max_connections=self.max_connections, auth_delay=self.auth_delay, hook=self.hook,
        )  # fmt: skip


# --- the server's files, shared with `cas lab-radicale` (caslab.parts) ----------------------


def radicale_command(config: Path) -> list[str]:
    """The command line that runs Radicale with `config` (through `caslab.radicale_main`)."""
    return [sys.executable, "-m", "caslab.radicale_main", "--config", str(config)]


def radicale_environment() -> dict[str, str]:
    """This process's environment without RADICALE_CONFIG, so only `--config` is read."""
    return {k: v for k, v in os.environ.items() if k != "RADICALE_CONFIG"}


# --- seeding over CalDAV -------------------------------------------------------------------


async def _request(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> httpx.Response:
    """One lab request, retried when the server resets the connection (see module docstring)."""
    for attempt in range(SEED_ATTEMPTS):
        try:
            return await client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError) as exc:
            if attempt + 1 == SEED_ATTEMPTS:
                raise RadicaleError(
                    f"{method} {url} failed {SEED_ATTEMPTS} times: {exc!r}"
                ) from exc
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def calendar_url_for(base_url: str, address: str, name: str = "calendar") -> str:
    """`<base>/<address>/<name>/`, the layout the lab and the default sitemap use."""
    return f"{base_url.rstrip('/')}/{quote(address, safe='@+')}/{quote(name)}/"


async def ensure_calendar(
    client: httpx.AsyncClient,
    base_url: str,
    address: str,
    auth: httpx.Auth | tuple[str, str],
    name: str = "calendar",
) -> str:
    """Create `<address>/` and its calendar `<address>/<name>/` if missing; return its URL."""
    principal = f"{base_url.rstrip('/')}/{quote(address, safe='@+')}/"
    response = await _request(client, "MKCOL", principal, auth=auth)
    if response.status_code not in (201, 405) and not _already_exists(response):
        raise RadicaleError(
            f"MKCOL {principal} answered HTTP {response.status_code}: {response.text[:300]}"
        )
    url = calendar_url_for(base_url, address, name)
    response = await _request(client, "MKCALENDAR", url, auth=auth)
    if response.status_code not in (201, 405) and not _already_exists(response):
        raise RadicaleError(
            f"MKCALENDAR {url} answered HTTP {response.status_code}: {response.text[:300]}"
        )
    return url


def _already_exists(response: httpx.Response) -> bool:
    """405 (RFC 4918 §9.3.1), or 409 with DAV:resource-must-be-null (Radicale 3)."""
    if response.status_code == 405:
        return True
    return response.status_code == 409 and "resource-must-be-null" in response.text


async def put_event(
    client: httpx.AsyncClient,
    calendar_url: str,
    uid: str,
    ics_text: str,
    auth: httpx.Auth | tuple[str, str],
) -> str:
    """Store `ics_text` as `<calendar>/<uid>.ics` (creating or replacing it); return its URL."""
    url = f"{calendar_url.rstrip('/')}/{quote(uid, safe='@+-_.')}.ics"
    response = await _request(
        client,
        "PUT",
        url,
        content=ics_text.encode("utf-8"),
        headers={"Content-Type": "text/calendar; charset=utf-8"},
        auth=auth,
    )
    if response.status_code not in (201, 204):
        raise RadicaleError(
            f"PUT {url} answered HTTP {response.status_code}: {response.text[:300]}"
        )
    return url


__all__ = [
    "RadicaleError",
    "RadicaleServer",
    "calendar_url_for",
    "check_accounts",
    "ensure_calendar",
    "put_event",
    "radicale_command",
    "radicale_environment",
    "write_config",
    "write_rights",
    "write_server_files",
    "write_users",
]
