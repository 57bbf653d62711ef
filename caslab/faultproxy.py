"""A TCP fault proxy for tests and the bench: put it between a node and what it talks to.

`FaultProxy` listens on loopback and forwards bytes to one target, so it works for TLS (the
client verifies the target's certificate through it, by name). It runs its own event loop in its
own thread, so synchronous tests drive it, and its mode can be switched from any thread:

======================  =====================================================================
mode                    effect
======================  =====================================================================
``pass_through()``      forward bytes as they come
``delay(seconds)``      add `seconds` of round-trip latency to every exchange: each chunk is
                        held seconds/2 in each direction, on new *and* open connections, so
                        every request on a kept-alive connection is slowed too (like a slow
                        network; pure latency, chunks stay pipelined and in order)
``cut()``               close open connections (FIN); accept new ones and close them at once
``reset()``             reset open connections; accept new ones and reset them (RST through
                        SO_LINGER 0), so clients see ConnectionResetError
``blackhole()``         never answer: open connections silently drop data both ways; new ones
                        are accepted and read but never reach the target (for timeout tests)
======================  =====================================================================

A mode switch returns once it has taken effect on open connections. Every connection has an
idle timeout (default 60 s, counting bytes either way), after which it is closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct
import threading
from types import TracebackType

__all__ = ["FaultProxy", "Mode"]

logger = logging.getLogger(__name__)
_CHUNK = 65536
_QUEUE_CHUNKS = 64  # per direction: bounds memory held back by delay() at 4 MiB


class Mode(enum.Enum):
    PASS = "pass"
    DELAY = "delay"
    CUT = "cut"
    RESET = "reset"
    BLACKHOLE = "blackhole"


class _Dropped(Exception):
    """A blackholed side hung up: end the link without telling anyone."""


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed
    writer.transport.abort()


class _Link:
    """One client connection and, unless blackholed from the start, its upstream connection."""

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.closed = False

    def close(self, *, reset: bool = False) -> None:
        self.closed = True
        for _, writer in filter(None, (self.client, self.upstream)):
            if reset:
                _reset(writer)
            else:
                writer.close()

    async def run(self, mode: Mode) -> None:
        reader, writer = self.client
        if mode is Mode.BLACKHOLE:
            while await reader.read(_CHUNK):
                self.last_activity = self.loop.time()
            self.close()
            return
        try:
            self.upstream = await asyncio.wait_for(
                asyncio.open_connection(self.proxy.target_host, self.proxy.target_port),
                self.proxy.connect_timeout,
            )
        except (OSError, TimeoutError):
            self.close(reset=True)  # the target is down: the client sees what a refusal looks like
            return
        if self.closed:  # cut or reset while connecting
            self.upstream[1].transport.abort()
            return
        up_reader, up_writer = self.upstream
        up: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(_QUEUE_CHUNKS)
        down: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(_QUEUE_CHUNKS)
        tasks = [
            asyncio.create_task(self._read(reader, up)),
            asyncio.create_task(self._send(up, up_writer)),
            asyncio.create_task(self._read(up_reader, down)),
            asyncio.create_task(self._send(down, writer)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(not t.cancelled() and t.exception() is not None for t in done)
            self.close(reset=failed)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes | None]]
    ) -> None:
        while True:
            data = await reader.read(_CHUNK)
            self.last_activity = now = self.loop.time()
            mode, delay = self.proxy._current()
            if mode is Mode.BLACKHOLE:
                if not data:
                    raise _Dropped
                continue
            await queue.put((now + delay / 2, data or None))
            if not data:
                return

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()


class FaultProxy:
    """A loopback TCP proxy to (target_host, target_port) whose faults switch at runtime."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        idle_timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._mode = Mode.PASS
        self._delay = 0.0
        self._port: int | None = None
        self._accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._links: set[_Link] = set()  # touched on the proxy's loop only
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("fault proxy already started")
        sock = socket.create_server((self.listen_host, self.listen_port))
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name=f"faultproxy:{self._port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._start_error is not None:
            self.stop()
            raise RuntimeError("fault proxy did not start") from self._start_error
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and join the thread. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None:
            return
        if stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("fault proxy thread did not stop")
        self._thread = self._loop = self._stopping = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests read ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("fault proxy not started")
        return self._port

    def url_for(self, scheme: str) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{scheme}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections accepted since start (in any mode)."""
        return self._accepted

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def mode(self) -> Mode:
        return self._current()[0]

    # -- faults ------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._switch(Mode.PASS)

    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._switch(Mode.DELAY, seconds)

    def cut(self) -> None:
        self._switch(Mode.CUT)

    def reset(self) -> None:
        self._switch(Mode.RESET)

    def blackhole(self) -> None:
        self._switch(Mode.BLACKHOLE)

    def _current(self) -> tuple[Mode, float]:
        with self._lock:
            return self._mode, self._delay

    def _switch(self, mode: Mode, delay: float = 0.0) -> None:
        with self._lock:
            self._mode, self._delay = mode, delay
        logger.info("fault proxy :%s -> %s (delay %.3fs)", self._port, mode.value, delay)
        if mode not in (Mode.CUT, Mode.RESET):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            self._close_links(reset=mode is Mode.RESET)
            return
        done = threading.Event()

        def apply() -> None:
            try:
                self._close_links(reset=mode is Mode.RESET)
            finally:
                done.set()

        loop.call_soon_threadsafe(apply)
        done.wait(5)

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock, ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:
            self._start_error = exc
            logger.exception("fault proxy :%s failed", self._port)
        finally:
            ready.set()
            asyncio.set_event_loop(None)
            loop.close()
            sock.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=sock)
        watchdog = asyncio.create_task(self._watch_idle())
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            watchdog.cancel()
            self._close_links(reset=True)
            tasks = [watchdog, *self._tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._accepted += 1
        mode, _ = self._current()
        try:
            if mode is Mode.CUT:
                writer.close()
            elif mode is Mode.RESET:
                _reset(writer)
            else:
                link = _Link(self, reader, writer)
                self._links.add(link)
                try:
                    await link.run(mode)
                finally:
                    self._links.discard(link)
                    link.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Cancelled only by stop(); end quietly, since the stream machinery of Python 3.11
            # logs an error for a handler task that ends cancelled.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    def _close_links(self, *, reset: bool) -> None:
        for link in list(self._links):
            link.close(reset=reset)

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            for link in list(self._links):
                if loop.time() - link.last_activity > self.idle_timeout:
                    logger.info("fault proxy :%s closing an idle connection", self._port)
                    link.close()
