"""One configuration generation of a node, and reloading it without dropping requests.

The sitemap file is loaded again when it changes, or the permissions file it names does, or on
SIGHUP.

A `Runtime` bundles what a request needs from the sitemap: the sitemap itself and the services
built from it. Endpoints read `holder.current` once when a request starts and keep that object
to the end, so swapping in a new generation never disturbs requests in flight. A sitemap that
fails to load leaves the running generation in place and says why in the log.

The site's own sources (connection pools) are carried over when its backend configuration did
not change; replaced ones are closed after a grace period that outlasts any request still using
them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cas.auth import BasicAuthenticator
from cas.autodiscover import AutodiscoverService
from cas.changes import ChangeFeed
from cas.service import AvailabilityService
from cas.sources.base import Source
from sitemap.load import SitemapError, load_sitemap
from sitemap.model import SecretUnavailable, Sitemap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    sitemap: Sitemap
    authenticator: BasicAuthenticator
    availability: AvailabilityService
    autodiscover: AutodiscoverService
    changes: ChangeFeed | None = None  # what the node does when a mailbox changes
    local: dict[str, Source] = field(default_factory=dict)  # by mailbox kind
    remote: dict[str, Source] = field(default_factory=dict)  # by site


Builder = Callable[[Sitemap, "Runtime | None"], Runtime]


class RuntimeHolder:
    def __init__(
        self,
        build: Builder,
        sitemap: Sitemap,
        *,
        path: str | None = None,
        site: str,
        grace_seconds: float = 30.0,
    ) -> None:
        self._build = build
        self.site = site
        self.path = path
        self.grace_seconds = grace_seconds
        self.current = build(sitemap, None)
        self.generation = 1
        self._mtime = self._stat()
        self._retired: list[asyncio.Task[None]] = []

    def _stat(self) -> tuple[float | None, ...]:
        """The modification times of the sitemap file and of the permissions file it names."""
        if not self.path:
            return ()
        return tuple(_mtime(p) for p in (self.path, self.current.sitemap.permissions.file) if p)

    def reload(self) -> bool:
        """Load the sitemap file again; True when a new generation is in place."""
        if self.path is None:
            return False
        self._mtime = self._stat()
        try:
            sitemap = load_sitemap(self.path)
            if self.site not in {s.name for s in sitemap.sites}:
                raise ValueError(f"the new sitemap no longer has this node's site {self.site!r}")
            runtime = self._build(sitemap, self.current)
        except (SitemapError, SecretUnavailable, ValueError) as exc:
            log.error(
                "sitemap %s not reloaded, keeping the previous configuration: %s", self.path, exc
            )
            return False
        old, self.current = self.current, runtime
        self._mtime = self._stat()  # the new site map may name another permissions file
        self.generation += 1
        log.info("sitemap %s reloaded (generation %d)", self.path, self.generation)
        replaced = [s for kind, s in old.local.items() if runtime.local.get(kind) is not s]
        if replaced:
            self._retire(replaced)
        return True

    def _retire(self, sources: list[Source]) -> None:
        async def close_later() -> None:
            await asyncio.sleep(self.grace_seconds)
            for source in sources:
                await source.aclose()

        try:
            self._retired.append(asyncio.get_running_loop().create_task(close_later()))
        except RuntimeError:  # no loop (reload called outside the server): close nothing yet
            pass

    async def watch(self, interval: float) -> None:
        """Reload when the file's modification time changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.path is not None and self._stat() != self._mtime:
                self.reload()

    def install_sighup(self) -> None:
        """SIGHUP reloads too, where signals can be handled (the main thread)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, NotImplementedError, ValueError):
            log.debug("SIGHUP reload not available in this thread")

    async def aclose(self) -> None:
        for task in self._retired:
            task.cancel()
        for source in [*self.current.local.values(), *self.current.remote.values()]:
            await source.aclose()
        if self.current.changes is not None:
            await self.current.changes.aclose()


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def sitemap_path(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
