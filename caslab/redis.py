"""A real `redis-server` run as a subprocess on loopback, for the lab and the tests.

`RedisProcess` starts the Debian `redis-server` binary on 127.0.0.1 and a free port (kept across
restarts), with no persistence (`--save "" --appendonly no`), waits until PING answers, and stops
it by PID. Options add a unix socket, a TLS port, a password, cluster mode or Sentinel mode, so
tests can run every URL form `cas.cache.store.RedisStore` supports. `kill()` (SIGKILL) and
`restart()` (same ports, same socket) let tests take Redis away mid-run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from caslab.process import ManagedProcess, free_port

__all__ = ["RedisProcess", "RedisProcessError", "TlsFiles", "find_redis_server"]

DEFAULT_BINARY = "/usr/bin/redis-server"
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_STOP_GRACE = 5.0


class RedisProcessError(RuntimeError):
    """redis-server is missing, or did not start."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS port: the server's certificate and key, and the CA that signed it."""

    cert_file: str
    key_file: str
    ca_file: str


def find_redis_server() -> str | None:
    """The redis-server binary to use: on PATH, else the Debian location; None if absent."""
    found = shutil.which("redis-server")
    if found:
        return found
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


class RedisProcess:
    """One redis-server process; its files (log, cluster state, Sentinel config) in `folder`.

    `sentinel_for=(service, host, port)` runs a Sentinel (no data) monitoring that master;
    `cluster=True` runs a cluster-enabled node (join nodes with `redis-cli --cluster create`).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        unix_socket: bool = False,
        tls: TlsFiles | None = None,
        password: str | None = None,
        databases: int = 16,
        cluster: bool = False,
        sentinel_for: tuple[str, str, int] | None = None,
        binary: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.folder = Path(folder).resolve()
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_port: int | None = None
        self.password = password
        self.databases = databases
        self.cluster = cluster
        self.sentinel_for = sentinel_for
        self.binary = binary
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.socket_path = self.folder / "redis.sock" if unix_socket else None
        self._cluster_port: int | None = None
        self._fixed_ports = port is not None
        self._process = ManagedProcess(
            "redis-server", self.folder / "redis.log", error=RedisProcessError
        )

    # --- where it is -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0` (no password in it)."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://{self.host}:{self._require_port()}/{db}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RedisProcessError("no TLS port: pass tls=TlsFiles(...) and start")
        return f"rediss://{self.host}:{self.tls_port}/0"

    @property
    def unix_url(self) -> str:
        if self.socket_path is None:
            raise RedisProcessError("no unix socket: pass unix_socket=True")
        return f"unix://{self.socket_path}?db=0"

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

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> RedisProcess:
        """Start and wait until PING answers. The ports chosen on the first start are kept."""
        if self.running:
            return self
        binary = self.binary or find_redis_server()
        if binary is None:
            raise RedisProcessError(
                "redis-server not found (install the Debian package redis-server; "
                "scripts/setup does it)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_ports else 3

        def launch(attempt: int) -> None:
            if attempt > 0:  # the last free ports were taken meanwhile: choose new ones
                self.port = self.tls_port = self._cluster_port = None
            self._choose_ports()
            self._spawn(binary)
            self._process.wait_until(
                self._answers, self.start_timeout, f"on {self.host}:{self.port}", interval=0.02
            )
            self._fixed_ports = True

        self._process.start_retrying(launch, attempts, clean_up=self.kill)
        return self

    def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """SIGTERM by PID, SIGKILL after `grace` seconds, and reap."""
        self._process.stop(grace)

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no shutdown); the ports stay reserved for `restart()`."""
        self._process.kill(DEFAULT_STOP_GRACE)

    def restart(self) -> RedisProcess:
        """Stop if running, then start on the same ports (data is gone: no persistence)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, db: int = 0) -> redis.Redis:
        """A synchronous redis-py client on the plain port (for setup and checks)."""
        return redis.Redis(
            host=self.host,
            port=self._require_port(),
            db=db,
            password=self.password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )

    # --- internals -------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        self.port = self.port or free_port(self.host)
        if self.tls is not None:
            self.tls_port = self.tls_port or free_port(self.host)
        if self.cluster:
            self._cluster_port = self._cluster_port or free_port(self.host)

    def _arguments(self, binary: str) -> list[str]:
        # A config file for what must not show in `ps` (the password) and for Sentinel, which
        # rewrites its file; everything else on the command line.
        lines: list[str] = []
        if self.sentinel_for is not None:
            service, master_host, master_port = self.sentinel_for
            lines.append(f"sentinel monitor {service} {master_host} {master_port} 1")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        conf = self.folder / ("sentinel.conf" if self.sentinel_for else "redis.conf")
        conf.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        conf.chmod(0o600)
        options: dict[str, object] = {
            "port": self.port,
            "bind": self.host,
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": self.folder,
            "logfile": "",
            "loglevel": "warning",
        }
        if self.sentinel_for is None:
            options["databases"] = self.databases
        if self.socket_path is not None:
            options |= {"unixsocket": self.socket_path, "unixsocketperm": "700"}
        if self.tls is not None:
            options |= {
                "tls-port": self.tls_port,
                "tls-cert-file": self.tls.cert_file,
                "tls-key-file": self.tls.key_file,
                "tls-ca-cert-file": self.tls.ca_file,
                "tls-auth-clients": "no",
            }
        if self.cluster:
            options |= {
                "cluster-enabled": "yes",
                "cluster-port": self._cluster_port,
                "cluster-config-file": f"nodes-{self.port}.conf",
            }
        args = [binary, str(conf)] + (["--sentinel"] if self.sentinel_for else [])
        for name, value in options.items():
            args += [f"--{name}", str(value)]
        return args + list(self.extra_args)

    def _spawn(self, binary: str) -> None:
        if self.cluster:  # a restarted node starts empty, like its data
            (self.folder / f"nodes-{self.port}.conf").unlink(missing_ok=True)
        self._process.spawn(self._arguments(binary), cwd=self.folder)

    def _answers(self) -> bool:
        try:
            with redis.Redis(
                host=self.host,
                port=self._require_port(),
                password=self.password,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                retry=Retry(NoBackoff(), 0),
            ) as probe:
                return bool(probe.ping())
        except redis.RedisError:
            return False

    def _require_port(self) -> int:
        if self.port is None:
            raise RedisProcessError("redis-server is not started")
        return self.port
