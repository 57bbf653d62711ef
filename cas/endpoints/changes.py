"""The doors changes come through: a backend's storage hook, and the other sites' nodes.

* `POST /api/v1/changes` — a backend says something changed. Bearer token: the change token
  (`change_token_file`) or the admin token. Body: JSON `{"paths": [...]}` and/or
  `{"addresses": [...]}`, or a form with `path=` (what a storage hook sends with `curl
  --data-urlencode`). Each path is mapped to the site's mailbox whose calendar holds it;
  their cached data is dropped and the other sites are told (`cas.changes.ChangeFeed`).
* `POST /api/v1/internal/changes` — another site's node says mailboxes changed (signed, as
  forwarded lookups are): this node's site drops what it holds of them (its own data for its
  mailboxes, its copies of other sites' answers otherwise). Nothing is announced further.
* `POST /api/v1/internal/versions` — another site's node asks for the current versions of
  this site's mailboxes, to confirm its copies (signed). Each is confirmed with the backend at
  most once per validation interval.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cas.endpoints.body import read_body
from cas.errors import InvalidValue, RequestFault, Unauthorized
from cas.model.ask import Ask
from cas.model.availability import FreeBusyView
from cas.model.freebusy import Window
from cas.model.projection import Proof, Requester
from cas.observability import adopt, current_request_id
from cas.runtime import Runtime
from cas.trust import HEADER, ForgedRequest, PeerTrust
from sitemap.model import Mailbox

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
MAX_ITEMS = 1000
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cas-changes"'}


class ChangesDisabled(RequestFault):
    code = "ChangesDisabled"
    http_status = 404


def _strings(doc: dict[str, Any], name: str) -> list[str]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue(f"'{name}' must be a list of strings.")
    if len(value) > MAX_ITEMS:
        raise InvalidValue(f"'{name}' names more than {MAX_ITEMS} items.")
    return value


def _document(request: Request, body: bytes) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            pairs = parse_qsl(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise InvalidValue("The form is not valid: path=<changed path>.") from None
        return {
            "paths": [v for k, v in pairs if k == "path"],
            "addresses": [v for k, v in pairs if k == "address"],
        }
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidValue(
            'The body must be JSON: {"paths": [...]} or {"addresses": [...]}.'
        ) from None
    if not isinstance(doc, dict):
        raise InvalidValue("The body must be a JSON object.")
    return doc


class ChangeEndpoints:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        site: str,
        tokens: list[str],
        trust: PeerTrust | None,
    ) -> None:
        self.runtime = runtime
        self.site = site
        self.tokens = [t.encode() for t in tokens]
        self.trust = trust

    async def changed(self, request: Request) -> Response:
        """A backend's storage hook: the changed paths or addresses of this site."""
        if not self.tokens:
            raise ChangesDisabled("No change or admin token is configured on this node.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.encode(), t) for t in self.tokens
        ):
            raise Unauthorized("A valid change token is required.", CHALLENGE)
        doc = _document(request, await read_body(request, MAX_BODY))
        runtime = self.runtime()
        found: dict[str, Mailbox] = {}
        unknown: list[str] = []
        for path in _strings(doc, "paths"):
            mailbox = runtime.availability.mailbox_for(path)
            if mailbox is None:
                unknown.append(path)
            else:
                found.setdefault(mailbox.address, mailbox)
        for address in _strings(doc, "addresses"):
            mailbox = runtime.sitemap.lookup(address)
            if mailbox is None or mailbox.site != self.site:
                unknown.append(address)
            else:
                found.setdefault(mailbox.address, mailbox)
        if runtime.changes is None:
            raise ChangesDisabled("This node does not take changes.")
        dropped = await runtime.changes.pushed(list(found.values()))
        if found:
            log.info("change pushed for %s", ", ".join(found))
        return JSONResponse({"changed": list(found), "keys": dropped, "unknown": unknown})

    def _peer(self, request: Request, body: bytes) -> None:
        if self.trust is None:
            raise ForgedRequest("this node accepts no node-to-node calls (no cluster secret)", 401)
        claims = self.trust.verify(
            request.headers.get(HEADER), method="POST", path=request.url.path, body=body
        )
        adopt(claims.request_id)

    async def internal_changes(self, request: Request) -> Response:
        body = await read_body(request, MAX_BODY)
        self._peer(request, body)
        runtime = self.runtime()
        dropped = 0
        for address in _strings(_document(request, body), "addresses"):
            mailbox = runtime.sitemap.lookup(address)
            if mailbox is not None:
                dropped += await runtime.availability.forget(mailbox)
        return JSONResponse({"dropped": dropped})

    async def internal_versions(self, request: Request) -> Response:
        body = await read_body(request, MAX_BODY)
        self._peer(request, body)
        runtime = self.runtime()
        mailboxes = []
        doc = _document(request, body)
        for address in _strings(doc, "addresses"):
            mailbox = runtime.sitemap.lookup(address)
            if mailbox is not None and mailbox.site == self.site:
                mailboxes.append(mailbox)
        ask = _version_ask(runtime, doc, current_request_id() or "-")
        versions = await runtime.availability.versions(mailboxes, ask)
        return JSONResponse(
            {"versions": {m.address: versions.get(m.address.casefold()) for m in mailboxes}}
        )


def _version_ask(runtime: Runtime, doc: dict[str, Any], request_id: str) -> Ask:
    """The ask versions are looked up under: the window of the copy being confirmed (so the
    entries of those days are found), else today; this node's timeout."""
    start, end = doc.get("start"), doc.get("end")
    try:
        window = Window(dt.datetime.fromisoformat(str(start)), dt.datetime.fromisoformat(str(end)))
    except (TypeError, ValueError):
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        window = Window(today, today + dt.timedelta(days=1))
    timeout = runtime.availability.timeout_seconds
    peer = Requester(None, proof=Proof.PEER)
    return Ask(
        window, 60, FreeBusyView.MERGED_ONLY, dt.UTC, peer, time.monotonic() + timeout, timeout,
        request_id=request_id,
    )  # fmt: skip
