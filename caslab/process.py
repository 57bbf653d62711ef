"""One helper server run as a subprocess: spawned with its output in a log file, waited for, and
stopped by PID.

`ManagedProcess` is the lifecycle the lab's servers share (`RadicaleServer`, `RedisProcess`,
`LegacyServer`): each composes one and adds what differs, its command line and how to tell that
it answers. A failed start raises the owner's error type with the tail of the log, so the reason
(a port in use, a bad config) shows in the test output. Processes are only ever signalled through
their own `Popen` handle, never looked up by name.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "free_port"]


class ManagedProcess:
    """At most one running child: `spawn`, `wait_until` it is ready, `stop` or `kill` it.

    `name` starts the error messages ("Radicale exited with status 1 during start; ...");
    `error` is the exception type they are raised as.
    """

    def __init__(self, name: str, log_path: Path, *, error: type[Exception] = RuntimeError) -> None:
        self.name = name
        self.log_path = log_path
        self.error = error
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """How the process ended (negative: the signal that killed it); None while it runs
        or after `stop`, which forgets it: so a number means it died on its own."""
        return self._process.poll() if self._process is not None else None

    def log_tail(self, chars: int = 2000) -> str:
        """The last `chars` characters of the log; empty if there is no log yet."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def spawn(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start `command` with no stdin, stdout and stderr appended to the log."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, where: str, *, interval: float = 0.05
    ) -> None:
        """Call `ready()` every `interval` seconds until it returns True.

        Raise `error` if the process exits first, or after `timeout` seconds; `where` completes
        "<name> did not answer <where> within ...". `ready` returns False for "not yet" and
        catches its own client's connection errors.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._process
            assert process is not None, "wait_until before spawn"
            if process.poll() is not None:
                raise self.error(
                    f"{self.name} exited with status {process.returncode} during start; "
                    f"log tail:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(interval)
        raise self.error(
            f"{self.name} did not answer {where} within {timeout}s; log tail:\n{self.log_tail()}"
        )

    def start_retrying(
        self, launch: Callable[[int], None], attempts: int, clean_up: Callable[[], None]
    ) -> None:
        """Call `launch(attempt)` (pick a port, `spawn`, `wait_until`) until it returns.

        When an attempt raises `error`, call `clean_up()` (reap the process), and try again, up
        to `attempts` in all, only if the log says the free port was taken meanwhile ("in use").
        """
        for attempt in range(attempts):
            try:
                launch(attempt)
                return
            except self.error:
                clean_up()
                if attempt + 1 == attempts or "in use" not in self.log_tail():
                    raise

    def stop(self, grace: float) -> None:
        """Terminate the process (by PID), kill it after `grace` seconds, and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(grace)

    def kill(self, grace: float) -> None:
        """Kill the process (by PID, no shutdown) and reap it, waiting at most `grace` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(grace)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
