"""`cas lookup`: ask the cluster when people are free, finding it the way a real client does.

This module owns the client's side of the conversation: discovery, the HTTP calls and the
per-attendee results. The options and their checks live in `cas.client.options`; printing the
results (a timeline or JSON) lives in `cas.client.render`.

Theory of operation
-------------------
1. Where is EWS? `--url` says so and skips discovery. Otherwise Autodiscover servers are found
   for the domain of the first address: DNS SRV `_autodiscover._tcp.<domain>` through
   `sitemap.discovery.SrvResolver` (RFC 2782 order, each target's A/AAAA records), or the lab
   manifest's nodes when it names no DNS server. Each becomes
   `https://<ip>:<port>/autodiscover/autodiscover.svc`; they are tried in order, and one that
   does not answer (network error, HTTP error status, unreadable answer) is skipped for good.
2. GetUserSettings for every address; `RedirectAddress` is followed at most `MAX_REDIRECTS`
   times, and an address seen twice is a loop. An address Autodiscover cannot place gets a
   per-attendee error (never free time).
3. Addresses are grouped by their `ExternalEwsUrl`; each group gets GetUserAvailability
   requests of at most 100 mailboxes. A request that fails as a whole (network, 401, a SOAP
   fault, garbage) gives each of its mailboxes an error; when no EWS server answered at all,
   the lookup fails (exit 2).
4. Results go back in the order the addresses were given.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import httpx

from cas import __version__
from cas.client.options import AUTODISCOVER_PATH, LookupFailed, LookupOptions, options_from_args
from cas.client.result import Attendee, LookupResult
from cas.codecs.autodiscover.client import (
    AutodiscoverError,
    AutodiscoverProtocolError,
    UserSettingsAnswer,
    UserSettingsResult,
    parse_get_user_settings_response,
    render_get_user_settings_request,
)
from cas.codecs.autodiscover.model import NotFound, Redirect
from cas.codecs.ews.client import (
    EwsFaultError,
    EwsProtocolError,
    parse_get_user_availability_response,
    render_get_user_availability_request,
)
from cas.errors import MailboxError
from cas.model.availability import AvailabilityRequest, MailboxQuery, MailboxResult
from sitemap.discovery import DiscoveryError, SrvResolver
from sitemap.model import DnsConfig

MAX_REDIRECTS = 10
MAX_MAILBOXES_PER_REQUEST = 100
AUTODISCOVER_CONCURRENCY = 8
XML = "text/xml; charset=utf-8"

# Autodiscover codes saying "no reachable mailbox by that address"; any other is server trouble.
_UNKNOWN_ADDRESS_CODES = frozenset(
    {"InvalidUser", "InvalidRequest", "InvalidDomain", "InvalidSetting", "NotFederated",
     "RedirectUrl", "SettingIsNotAvailable"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one address is asked: an EWS URL and mailbox, or already an error."""

    ews_url: str | None
    mailbox: str
    display_name: str | None = None
    error: MailboxError | None = None


# ---- HTTP -------------------------------------------------------------------------------------


def _http_client(
    options: LookupOptions, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if options.ca_file:
        try:
            verify = ssl.create_default_context(cafile=options.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise LookupFailed(
                f"--ca {options.ca_file}: cannot load the CA certificate: {exc}"
            ) from None
    auth = httpx.BasicAuth(options.username, options.password or "") if options.username else None
    return httpx.AsyncClient(
        verify=verify,
        auth=auth,
        timeout=options.timeout_seconds,
        trust_env=False,  # no proxies from the environment: lab traffic stays where it is sent
        follow_redirects=False,
        transport=transport,
        headers={"Content-Type": XML, "User-Agent": f"cas-lookup/{__version__}"},
    )


def _transport_problem(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        text += " (is --ca the CA that signed the server's certificate?)"
    return text


# ---- discovery --------------------------------------------------------------------------------


async def autodiscover_urls(
    options: LookupOptions, resolver: SrvResolver | None = None
) -> list[str]:
    """Autodiscover URLs to try, in order, for the domain of the first address."""
    if options.dns is None and options.manifest_nodes:
        return [node.rstrip("/") + AUTODISCOVER_PATH for node in options.manifest_nodes]
    domain = options.addresses[0].rpartition("@")[2]
    name = f"_autodiscover._tcp.{domain}"
    if resolver is None:
        config = None
        if options.dns is not None:
            config = DnsConfig(nameservers=(options.dns[0],), port=options.dns[1])
        resolver = SrvResolver(config)
    try:
        nodes = await resolver.resolve(name)
    except DiscoveryError as exc:
        where = f" at {options.dns[0]}:{options.dns[1]}" if options.dns else ""
        raise LookupFailed(f"Autodiscover discovery failed: DNS SRV {exc}{where}") from None
    if not nodes:
        raise LookupFailed(f"Autodiscover discovery failed: DNS SRV {name} names no server")
    return [node.url + AUTODISCOVER_PATH for node in nodes]


class Autodiscover:
    """GetUserSettings against a list of servers, failing over in order and staying there."""

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str]) -> None:
        self.client, self.urls = client, list(urls)
        self.index = 0
        self.problems: dict[str, str] = {}

    async def ask(self, address: str) -> UserSettingsResult:
        """The answer about `address`; `AutodiscoverError` passes; no server: `LookupFailed`."""
        while (index := self.index) < len(self.urls):
            url = self.urls[index]
            problem = await self._try(url, address)
            if not isinstance(problem, str):
                return problem
            self.problems.setdefault(url, problem)
            self.index = max(self.index, index + 1)
        tried = "; ".join(f"{url}: {why}" for url, why in self.problems.items())
        raise LookupFailed(f"no Autodiscover server answered ({tried or 'none to try'})")

    async def _try(self, url: str, address: str) -> UserSettingsResult | str:
        body = render_get_user_settings_request(address, url=url)
        try:
            response = await self.client.post(url, content=body)
        except httpx.HTTPError as exc:
            return _transport_problem(exc)
        if response.status_code == 401:
            return "HTTP 401: the server refused the credentials (--user / --password-env)"
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        try:
            return parse_get_user_settings_response(response.content, address=address)
        except AutodiscoverProtocolError as exc:
            return f"unreadable answer: {exc.message}"

    async def resolve(self, address: str) -> _Target:
        """Follow redirects from `address` to its EWS URL, or to the error that stops it."""
        chain = [address]
        for _ in range(MAX_REDIRECTS + 1):
            current = chain[-1]
            try:
                answer = await self.ask(current)
            except AutodiscoverError as exc:
                code = ("ErrorMailRecipientNotFound" if exc.code in _UNKNOWN_ADDRESS_CODES
                        else "ErrorProxyRequestProcessingFailed")  # fmt: skip
                return _Target(None, current, error=MailboxError(code, f"Autodiscover: {exc}"))
            if isinstance(answer, UserSettingsAnswer):
                return _Target(answer.ews_url, answer.address, answer.display_name)
            if isinstance(answer, NotFound):
                return _unknown(current, f"Autodiscover does not know {current}.")
            assert isinstance(answer, Redirect)
            looped = answer.address.casefold() in {a.casefold() for a in chain}
            chain.append(answer.address)
            if looped:
                return _unknown(current, f"Autodiscover redirects in a loop: {_route(chain)}.")
        message = f"Autodiscover redirected more than {MAX_REDIRECTS} times: {_route(chain)}."
        return _unknown(chain[-1], message)


def _route(chain: list[str]) -> str:
    return " → ".join(chain)


def _unknown(address: str, message: str) -> _Target:
    return _Target(None, address, error=MailboxError("ErrorMailRecipientNotFound", message))


# ---- availability -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """Why one GetUserAvailability failed as a whole; `refused` when a server did answer."""

    message: str
    refused: bool = False


def explain_fault(fault: EwsFaultError, options: LookupOptions) -> str:
    """A server's refusal in the user's terms, with what to change."""
    if fault.code == "ErrorTimeIntervalTooBig":
        allowed = re.search(r"allowed limit = (\d+) days", fault.message)
        days = options.window.duration.total_seconds() / 86400
        most = f"at most {allowed.group(1)} days" if allowed else "a shorter window"
        return (
            f"the window asked for is {days:g} days and the server allows {most} "
            "(ask for less with --days, or --start and --end)"
        )
    if fault.code == "ErrorMailboxDataArrayTooBig":
        return f"the server takes fewer mailboxes per request ({fault.message})"
    return f"{fault.code}: {fault.message}" if fault.message else fault.code


async def ask_availability(
    client: httpx.AsyncClient, url: str, mailboxes: Sequence[str], options: LookupOptions
) -> tuple[list[MailboxResult], BatchFailure | None]:
    """One GetUserAvailability to `url`: results in order, and what failed if it failed whole."""
    request = AvailabilityRequest(
        tuple(MailboxQuery(address) for address in mailboxes),
        options.window,
        options.interval_minutes,
        options.view,
        options.tz,
    )
    problem: str
    refused = False
    code = "ErrorFreeBusyGenerationFailed"
    try:
        response = await client.post(url, content=render_get_user_availability_request(request))
    except httpx.TimeoutException as exc:
        code, problem = "ErrorTimeoutExpired", f"no answer in time: {_transport_problem(exc)}"
    except httpx.HTTPError as exc:
        code, problem = "ErrorProxyRequestProcessingFailed", _transport_problem(exc)
    else:
        if response.status_code == 401:
            refused = True
            problem = "HTTP 401: the server refused the credentials (--user / --password-env)"
        else:
            try:
                return parse_get_user_availability_response(response.content, request), None
            except EwsFaultError as exc:
                refused = True
                problem = f"the server refused the request: {explain_fault(exc, options)}"
            except EwsProtocolError as exc:
                problem = f"HTTP {response.status_code}, unreadable answer: {exc.message}"
    message = f"{url}: {problem}"
    return [MailboxError(code, message) for _ in mailboxes], BatchFailure(message, refused)


def _chunks(indexes: list[int]) -> list[list[int]]:
    step = MAX_MAILBOXES_PER_REQUEST
    return [indexes[i : i + step] for i in range(0, len(indexes), step)]


async def lookup_availability(
    options: LookupOptions,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: SrvResolver | None = None,
) -> LookupResult:
    """Discover, ask and merge (see the module docstring); `LookupFailed` when nothing answers."""
    async with _http_client(options, transport) as client:
        if options.ews_url is not None:
            targets = [_Target(options.ews_url, address) for address in options.addresses]
        else:
            autodiscover = Autodiscover(client, await autodiscover_urls(options, resolver))
            gate = asyncio.Semaphore(AUTODISCOVER_CONCURRENCY)

            async def resolve(address: str) -> _Target:
                async with gate:
                    return await autodiscover.resolve(address)

            targets = list(await asyncio.gather(*(resolve(a) for a in options.addresses)))

        groups: dict[str, list[int]] = {}
        for index, target in enumerate(targets):
            if target.error is None and target.ews_url is not None:
                groups.setdefault(target.ews_url, []).append(index)
        batches = [(url, chunk) for url, indexes in groups.items() for chunk in _chunks(indexes)]
        answers = await asyncio.gather(
            *(ask_availability(client, url, [targets[i].mailbox for i in chunk], options)
              for url, chunk in batches)
        )  # fmt: skip

    failures = [failure for _, failure in answers if failure is not None]
    if batches and len(failures) == len(batches):
        refusals = [f.message for f in failures if f.refused]
        if refusals:
            raise LookupFailed("; ".join(dict.fromkeys(refusals)))
        messages = [f.message for f in failures]
        raise LookupFailed("no EWS server answered: " + "; ".join(dict.fromkeys(messages)))
    results: dict[int, MailboxResult] = {}
    for (_, chunk), (chunk_results, _) in zip(batches, answers, strict=True):
        results.update(zip(chunk, chunk_results, strict=True))
    attendees = []
    for index, (address, target) in enumerate(zip(options.addresses, targets, strict=True)):
        result = target.error if target.error is not None else results[index]
        attendees.append(
            Attendee(address, result, target.ews_url, target.mailbox, target.display_name)
        )
    return LookupResult(options, tuple(attendees))


def run_lookup(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """`cas lookup`: options, lookup, printing; the exit status (0 all answered, 1 some not)."""
    from cas.client.render import print_json, print_timeline

    if getattr(args, "presence", False):
        from cas.client.presence import run_presence_lookup

        return run_presence_lookup(args, stdout=stdout)
    options = options_from_args(args)
    result = asyncio.run(lookup_availability(options))
    out = stdout or sys.stdout
    if options.as_json:
        print_json(result, out)
    else:
        print_timeline(result, out)
    return result.exit_code


__all__ = [
    "Attendee",
    "Autodiscover",
    "LookupResult",
    "ask_availability",
    "autodiscover_urls",
    "lookup_availability",
    "run_lookup",
]
