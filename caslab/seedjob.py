"""`cas lab-seed`: fill a sitemap's calendars and old-server free/busy with demo events.

`seed_sitemap` waits for every site's CalDAV and legacy server, then fills the calendars with
`caslab.seed` events and publishes the legacy mailboxes' free/busy, as `cas lab` seeds its own
parts. Safe to run again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from urllib.parse import quote, unquote, urljoin

import httpx

from caslab.oldserver.process import LegacyServerError, publish_ics
from caslab.parts import LabInputError, LabPartError
from caslab.radicale import RadicaleError, calendar_url_for, ensure_calendar, put_event
from caslab.seed import SeedEvent, SeedMailbox, generate_calendar
from sitemap.load import SitemapError, load_sitemap
from sitemap.model import Mailbox, SecretUnavailable, Site, Sitemap

SEED_DAYS_BACK = 7  # the same range `cas lab` seeds (caslab.runner)
SEED_DAYS = 42
SEED_CONCURRENCY = 8  # Radicale's built-in server resets bursts of more (caslab.radicale)
WAIT_INTERVAL = 0.5
LEGACY_SEED_OFFSET = 1000  # rng_seed of a site's n-th legacy mailbox: 1000 + n, as `cas lab`


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What `seed_sitemap` wrote: calendars and their events, and legacy mailboxes published."""

    calendars: int
    events: int
    legacy: int


def seed_sitemap(
    path: str | Path, caldav_user: str, caldav_password: str, *, timeout: float = 60.0
) -> SeedReport:
    """Wait (at most `timeout` seconds) until every site's CalDAV and legacy server answers,
    then seed every modern mailbox's calendar and publish every legacy mailbox's free/busy over
    [today - 7 days, +42 days). PUTs replace, so a second run rewrites the same data.

    Raises `LabInputError` for an unusable sitemap, `LabPartError` when a server never answers
    or refuses a write."""
    try:
        sitemap = load_sitemap(path)
    except SitemapError as exc:
        raise LabInputError(str(exc)) from None
    return asyncio.run(_Seeder(sitemap, (caldav_user, caldav_password), timeout).run())


def _calendar_name(site: Site, mailbox: Mailbox) -> str:
    """The calendar collection's name, when the node reads it at `<caldav.url><address>/<name>/`
    (the layout `ensure_calendar` makes); `LabInputError` for any other layout."""
    assert site.caldav is not None
    config = site.caldav
    base = config.url if config.url.endswith("/") else config.url + "/"
    path = config.calendar_path.format(
        address=quote(mailbox.address, safe="@+"), local=quote(mailbox.local_part, safe="+")
    )
    wanted = mailbox.calendar_url or urljoin(base, path.lstrip("/"))
    name = unquote(wanted.rstrip("/").rsplit("/", 1)[-1])
    if calendar_url_for(base, mailbox.address, name).rstrip("/") != wanted.rstrip("/"):
        raise LabInputError(
            f"mailbox {mailbox.address}: its calendar is {wanted}; lab-seed makes calendars "
            "only at <caldav.url><address>/<name>/"
        )
    return name


class _Seeder:
    """One `seed_sitemap` run: the waits, then one task per mailbox under a shared gate."""

    def __init__(self, sitemap: Sitemap, auth: tuple[str, str], timeout: float) -> None:
        self.sitemap, self.auth, self.timeout = sitemap, auth, timeout
        self.start = datetime.now(UTC).date() - timedelta(days=SEED_DAYS_BACK)
        self.publish_start = datetime.combine(self.start, time(0), UTC)
        self.publish_end = self.publish_start + timedelta(days=SEED_DAYS)
        self.calendars = self.events = self.legacy = 0

    def _jobs(self) -> list[tuple[Site, Mailbox, SeedMailbox, int]]:
        jobs = []
        for site in self.sitemap.sites:
            counts = {"modern": 0, "legacy": LEGACY_SEED_OFFSET}
            for mailbox in self.sitemap.mailboxes_of(site.name):
                legacy = mailbox.kind == "legacy"
                n = counts[mailbox.kind]
                counts[mailbox.kind] += 1
                if (site.legacy if legacy else site.caldav) is None:
                    raise LabInputError(
                        f"{self.sitemap.source}: mailbox {mailbox.address} is {mailbox.kind}, "
                        f"but site {site.name} has no {'legacy' if legacy else 'caldav'} server"
                    )
                if not legacy:
                    _calendar_name(site, mailbox)
                zone = mailbox.timezone or site.timezone
                seed = SeedMailbox(mailbox.address, mailbox.display_name or mailbox.address, zone)
                jobs.append((site, mailbox, seed, n))
        return jobs

    async def run(self) -> SeedReport:
        jobs = self._jobs()
        gate = asyncio.Semaphore(SEED_CONCURRENCY)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            await self._wait_for_servers(client)

            async def one(site: Site, mailbox: Mailbox, seed: SeedMailbox, n: int) -> None:
                async with gate:
                    if mailbox.kind == "legacy":
                        await self._publish_legacy(site, seed, n)
                    else:
                        await self._fill_calendar(client, site, mailbox, seed, n)

            await asyncio.gather(*(one(*job) for job in jobs))
        return SeedReport(self.calendars, self.events, self.legacy)

    async def _wait_for_servers(self, client: httpx.AsyncClient) -> None:
        """Any HTTP answer counts (401 and 400 too); give up after `timeout` seconds."""
        deadline = monotonic() + self.timeout
        targets: dict[str, str] = {}
        for site in self.sitemap.sites:
            if site.caldav is not None:
                targets.setdefault(site.caldav.url, f"site {site.name}'s CalDAV server")
            if site.legacy is not None:
                targets.setdefault(site.legacy.url, f"site {site.name}'s legacy server")

        async def wait(url: str, label: str) -> None:
            while True:
                try:
                    await client.request("OPTIONS", url, timeout=2.0)
                    return
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__} {exc}".strip()
                if monotonic() >= deadline:
                    raise LabPartError(
                        f"{label} at {url} did not answer within {self.timeout:g} s ({last})"
                    )
                await asyncio.sleep(WAIT_INTERVAL)

        await asyncio.gather(*(wait(url, label) for url, label in targets.items()))

    def _events(self, seed: SeedMailbox, n: int) -> list[SeedEvent]:
        return generate_calendar(seed, start=self.start, days=SEED_DAYS, rng_seed=n)

    async def _fill_calendar(
        self, client: httpx.AsyncClient, site: Site, mailbox: Mailbox, seed: SeedMailbox, n: int
    ) -> None:
        assert site.caldav is not None
        name = _calendar_name(site, mailbox)
        try:
            url = await ensure_calendar(client, site.caldav.url, mailbox.address, self.auth, name)
            for event in self._events(seed, n):
                await put_event(client, url, event.uid, event.ics, self.auth)
                self.events += 1
        except RadicaleError as exc:
            raise LabPartError(f"site {site.name}, mailbox {mailbox.address}: {exc}") from None
        self.calendars += 1

    async def _publish_legacy(self, site: Site, seed: SeedMailbox, n: int) -> None:
        assert site.legacy is not None
        config = site.legacy
        auth = None
        if config.username and config.password is not None:
            try:
                auth = httpx.BasicAuth(config.username, config.password.resolve())
            except SecretUnavailable as exc:
                raise LabInputError(f"site {site.name}'s legacy password: {exc}") from None
        # Every event is a whole VCALENDAR: the endpoint reads several in one body, and a PUT
        # replaces the mailbox's stored message, so all the events go in one PUT.
        text = "".join(event.ics for event in self._events(seed, n))
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=30, auth=auth) as client:
                await publish_ics(
                    client, config.url, seed.address, text,
                    publish_start=self.publish_start, publish_end=self.publish_end,
                    tz=seed.timezone,
                )  # fmt: skip
        except (LegacyServerError, httpx.HTTPError) as exc:
            raise LabPartError(f"site {site.name}, mailbox {seed.address}: {exc}") from None
        self.legacy += 1
