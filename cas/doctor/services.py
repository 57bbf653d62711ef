"""Doctor checks of what a site's nodes depend on: its CalDAV backend, old server and Redis.

Each check asks the smallest question that proves the service answers *and* accepts the
node's credentials, with the node's own settings (URLs, credentials, TLS and time limits):

* `caldav`: an authenticated `PROPFIND` (Depth 0, the ctag query the cache validates with) on
  the calendar of the site's first modern mailbox, its URL computed by `CalDavBackend`; with
  no modern mailbox, on the backend's base URL.
* `legacy`: `GET /public/?cmd=freebusy` for one hour of the site's first legacy mailbox,
  read with the same codec the node uses.
* `redis`: `PING` on a store built as the node builds it (`RedisStore.from_url`), then a
  second `PING` whose round trip is reported.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
from redis import exceptions as redis_exceptions

from cas.cache.store import RedisStore, parse_redis_url
from cas.codecs.public_freebusy import (
    LegacyItemError,
    LegacyQuery,
    LegacyResponseError,
    freebusy_query_params,
    parse_freebusy_response,
)
from cas.doctor.run import Check, Outcome, failed, passed
from cas.doctor.words import describe_error, within
from cas.model.freebusy import Window
from cas.sources.caldav import CalDavBackend
from cas.sources.davxml import CTAG_PROPFIND
from sitemap.model import CalDavBackendConfig, Mailbox, SecretRef, SecretUnavailable, Site

__all__ = ["backend_client", "caldav_check", "legacy_check", "redis_check"]

REASON_CHARS = 200
LEGACY_INTERVAL = 60  # one slot: the smallest answer an old server gives


def backend_client(config: CalDavBackendConfig) -> httpx.AsyncClient:
    """A client that verifies the backend as `CalDavBackend` does (`verify_tls`)."""
    verify: bool | ssl.SSLContext = (
        ssl.create_default_context(cafile=config.verify_tls)
        if isinstance(config.verify_tls, str)
        else config.verify_tls
    )
    return httpx.AsyncClient(verify=verify, trust_env=False)


def _auth(username: str | None, password: SecretRef | None) -> httpx.BasicAuth | None:
    if username is None:
        return None
    return httpx.BasicAuth(username, password.resolve() if password is not None else "")


def _reason(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:REASON_CHARS]


def _first(site: Site, mailboxes: Sequence[Mailbox], kind: str) -> Mailbox | None:
    return next((m for m in mailboxes if m.site == site.name and m.kind == kind), None)


# --- CalDAV --------------------------------------------------------------------------------


def caldav_check(site: Site, mailboxes: Sequence[Mailbox], client: httpx.AsyncClient) -> Check:
    assert site.caldav is not None
    config = site.caldav
    mailbox = _first(site, mailboxes, "modern")
    url = CalDavBackend(config, client=client).calendar_url(mailbox) if mailbox else config.url
    whose = f"{mailbox.address}'s calendar" if mailbox else "the base URL (no modern mailbox)"

    async def probe() -> Outcome:
        try:
            auth = _auth(config.username, config.password)
            async with asyncio.timeout(config.timeout_seconds):
                response = await client.request(
                    "PROPFIND",
                    url,
                    content=CTAG_PROPFIND,
                    headers={"Depth": "0", "Content-Type": 'application/xml; charset="utf-8"'},
                    auth=auth,
                )
        except SecretUnavailable as exc:
            return failed(f"CalDAV credentials unavailable: {exc}")
        except (httpx.HTTPError, TimeoutError) as exc:
            return failed(describe_error(exc, timeout=config.timeout_seconds))
        return _caldav_outcome(response.status_code, whose, config.username)

    return Check(site.name, "caldav", url, probe)


def _caldav_outcome(status: int, whose: str, username: str | None) -> Outcome:
    who = f"as {username}" if username else "without credentials"
    if status == 207:
        return passed(f"PROPFIND 207 on {whose} ({who})")
    if status in (401, 403):
        return failed(f"HTTP {status} from CalDAV: credentials refused ({who})")
    if status == 404:
        return failed(f"HTTP 404 from CalDAV: no calendar at this URL ({whose})")
    return failed(f"HTTP {status} from CalDAV (expected 207 Multi-Status)")


# --- the old server ------------------------------------------------------------------------


def _this_hour() -> Window:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return Window(start, start + timedelta(hours=1))


def legacy_check(site: Site, mailboxes: Sequence[Mailbox], client: httpx.AsyncClient) -> Check:
    assert site.legacy is not None
    config = site.legacy
    url = config.url if config.url.endswith("/") else config.url + "/"
    mailbox = _first(site, mailboxes, "legacy")

    async def probe() -> Outcome:
        window = _this_hour()
        users = (mailbox.address,) if mailbox else ()
        try:
            auth = _auth(config.username, config.password)
            async with asyncio.timeout(config.timeout_seconds):
                response = await client.get(
                    url,
                    params=tuple(freebusy_query_params(window, LEGACY_INTERVAL, users)),
                    headers={"Accept": "text/xml"},
                    auth=auth,
                )
        except SecretUnavailable as exc:
            return failed(f"old server credentials unavailable: {exc}")
        except (httpx.HTTPError, TimeoutError) as exc:
            return failed(describe_error(exc, timeout=config.timeout_seconds))
        if mailbox is None:
            return _bare_outcome(response)
        query = LegacyQuery(window.start, window.end, LEGACY_INTERVAL, users)
        return _legacy_outcome(response, query, mailbox.address)

    return Check(site.name, "legacy", url, probe)


def _bare_outcome(response: httpx.Response) -> Outcome:
    status = response.status_code
    note = "no legacy mailbox in this site to ask about"
    if status in (401, 403):
        return failed(f"HTTP {status} from the old server: credentials refused")
    if status >= 500:
        return failed(f"HTTP {status} from the old server: {_reason(response)}")
    return passed(f"answers (HTTP {status}); {note}")


def _legacy_outcome(response: httpx.Response, query: LegacyQuery, address: str) -> Outcome:
    status = response.status_code
    if status in (401, 403):
        return failed(f"HTTP {status} from the old server: credentials refused")
    if status != 200:
        return failed(f"HTTP {status} from the old server (expected 200): {_reason(response)}")
    try:
        answers = parse_freebusy_response(response.content, query)
    except LegacyResponseError as exc:
        return failed(f"HTTP 200, but not a free/busy answer: {exc}")
    answer = answers.get(address.casefold())
    if answer is None:
        return failed(f"the answer has no free/busy for {address}")
    if isinstance(answer, LegacyItemError):
        return failed(answer.message)
    if set(answer) == {"4"}:
        return passed(f"answers for {address}: no data (nothing published, or unknown there)")
    return passed(f"free/busy of {address} for this hour: {answer}")


# --- Redis ---------------------------------------------------------------------------------


def _redis_target(url: str) -> str:
    try:
        return parse_redis_url(url).describe()
    except ValueError:
        return url


def redis_check(site: Site, timeout_seconds: float) -> Check:
    """PING the site's Redis with the node's `redis_timeout_seconds` per call."""
    assert site.redis is not None
    url = site.redis

    async def probe() -> Outcome:
        try:
            password = site.redis_password.resolve() if site.redis_password else None
            store = RedisStore.from_url(url, password=password, timeout_seconds=timeout_seconds)
        except SecretUnavailable as exc:
            return failed(f"Redis password unavailable: {exc}")
        except ValueError as exc:
            return failed(str(exc))
        try:
            return await _ping_twice(store, timeout_seconds)
        finally:
            await store.aclose()

    return Check(site.name, "redis", _redis_target(url), probe)


async def _ping_twice(store: RedisStore, timeout_seconds: float) -> Outcome:
    try:
        async with asyncio.timeout(timeout_seconds * 2):  # connecting, then PING
            await store.client.ping()
        started = time.perf_counter()
        async with asyncio.timeout(timeout_seconds):
            await store.client.ping()
        round_trip = (time.perf_counter() - started) * 1000
    except redis_exceptions.TimeoutError:
        return failed(within(timeout_seconds))
    except redis_exceptions.AuthenticationError as exc:
        return failed(f"Redis refused the password: {exc}")
    except redis_exceptions.ResponseError as exc:
        return failed(f"Redis answered with an error: {exc}")
    except (redis_exceptions.RedisError, OSError, TimeoutError) as exc:
        return failed(describe_error(exc, timeout=timeout_seconds))
    return passed(f"PONG in {round_trip:.1f} ms")
