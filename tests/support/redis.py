"""Pytest fixtures around a real redis-server (`caslab.redis.RedisProcess`).

* `redis_server` (session): one redis-server on a free loopback port, 64 databases. It has
  `.url`, `.port`, `.kill()` (SIGKILL) and `.restart()` (same port). Skips the test, with the
  reason, only when the binary is missing.
* `redis_url` (function): a URL on `redis_server` with a database of its own, flushed before the
  test; restarts the session server first if an earlier test left it dead.
* `redis_factory` (function): start extra servers (unix socket, TLS, Sentinel, cluster nodes,
  or one to kill) that are stopped after the test, all at once.
* `redis_cluster` (function): three cluster-mode servers joined into one cluster by
  `make_cluster(factory, n)` (redis-cli), stopped after the test.

* `redis_servers(tmp_path_factory, names)`: a generator for a module's own fixture, one
  redis-server per name (a site each), for tests that kill or restart them; stopped together.

Register with `pytest_plugins = ["tests.support.redis"]` or import the fixtures into a module.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from caslab.redis import RedisProcess, RedisProcessError, find_redis_server
from tests.support.processes import stop_together

MISSING = "redis-server binary not found: install the Debian package redis-server (scripts/setup)"
DATABASES = 64  # db 0 is left for ad-hoc use; tests get 1..63 in turn

RedisFactory = Callable[..., RedisProcess]


def _require_binary() -> None:
    if find_redis_server() is None:
        pytest.skip(MISSING)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    _require_binary()
    server = RedisProcess(tmp_path_factory.mktemp("redis"), databases=DATABASES)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_servers(
    tmp_path_factory: pytest.TempPathFactory, names: Iterable[str]
) -> Iterator[dict[str, RedisProcess]]:
    """One redis-server of its own per name, started, yielded by name, stopped together."""
    _require_binary()
    servers = {name: RedisProcess(tmp_path_factory.mktemp(f"redis-{name}")) for name in names}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        stop_together(server.stop for server in servers.values())


_databases = itertools.cycle(range(1, DATABASES))


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    if not redis_server.running:
        redis_server.restart()
    db = next(_databases)
    with redis_server.client(db) as client:
        client.flushdb()
    return redis_server.url_for(db)


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFactory]:
    _require_binary()
    started: list[RedisProcess] = []

    def start(**options: Any) -> RedisProcess:
        process = RedisProcess(tmp_path_factory.mktemp("redis-extra"), **options)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        stop_together(process.stop for process in started)


def make_cluster(
    factory: RedisFactory, nodes: int = 3, timeout: float = 15.0
) -> list[RedisProcess]:
    """Start `nodes` cluster-mode servers, assign all slots (no replicas), wait for state ok."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RedisProcessError("redis-cli not found (it comes with the redis-server package)")
    members = [factory(cluster=True) for _ in range(nodes)]
    addresses = [f"127.0.0.1:{m.port}" for m in members]
    subprocess.run(
        [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for member in members:
            with member.client() as client:
                states.append(client.execute_command("CLUSTER", "INFO"))
        if all(b"cluster_state:ok" in s for s in states):
            return members
        time.sleep(0.05)
    raise RedisProcessError(f"cluster of {addresses} did not reach state ok in {timeout}s")


@pytest.fixture
def redis_cluster(redis_factory: RedisFactory) -> list[RedisProcess]:
    return make_cluster(redis_factory, 3)
