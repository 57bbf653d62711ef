"""The built-in kinds of local source, in one table: which sitemap section configures each,
which kind of mailbox it answers, and how it is built.

A new kind of backend (an EWS upstream, an iCalendar feed) is one module in `cas.sources`, its
configuration section in the sitemap (`sitemap/_sites.py` declares and checks its fields, since
`sitemap` never imports `cas`), and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cas.settings import Settings
from cas.sources.base import ReaderSource, Source
from sitemap.model import Site


@dataclass(frozen=True, slots=True)
class SourceKind:
    name: str  # also the source's name in logs and metrics
    mailbox_kind: str  # the directory's kind of mailbox it answers ("modern", "legacy")
    configured: Callable[[Site], bool]
    build: Callable[[Site, Settings], Source]


def _caldav(site: Site, settings: Settings) -> Source:
    from cas.sources.caldav import CalDavBackend

    reader = CalDavBackend.for_site(site)
    return ReaderSource(
        reader, name="caldav", site=site.name, concurrency=settings.backend_concurrency
    )


def _oldserver(site: Site, settings: Settings) -> Source:
    from cas.sources.oldserver import OldServerSource

    return OldServerSource.for_site(site, concurrency=settings.oldserver_concurrency)


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("caldav", "modern", lambda site: site.caldav is not None, _caldav),
    SourceKind("oldserver", "legacy", lambda site: site.legacy is not None, _oldserver),
)


def local_sources(site: Site, settings: Settings) -> dict[str, Source]:
    """The site's own sources by the kind of mailbox they answer, as its sitemap entry says."""
    return {
        kind.mailbox_kind: kind.build(site, settings)
        for kind in SOURCE_KINDS
        if kind.configured(site)
    }
