"""The old-server emulator: an Exchange 2003 style `/public` free/busy front over `FreeBusyStore`.

`create_legacy_app(store, directory)` builds the Starlette app `cas legacy-server` runs:

    GET  /public/?cmd=freebusy&start=&end=&interval=&u=SMTP:...   (also /public, Cmd=, endt=)
         -> 200 text/xml `WM` answer: "All Attendees" first, then one item per user in order.
            Another or no `cmd` -> 400; a bad query -> 400 with the reason (`cas.codecs.public_freebusy`).
    POST /public/publish           JSON {"address"|"legacy_dn", "busy": [[start, end], ...],
                                   "tentative": [...], "oof": [...], "publish_start",
                                   "publish_end", "duplicate": false}; ISO 8601 times
    PUT  /public/publish/{address}.ics?publish_start=&publish_end=[&tz=UTC][&duplicate=1]
                                   text/calendar, expanded over [publish_start, publish_end)
                                   with `cas.sources.ical` (Tentative, Busy, OOF kept; Free,
                                   WorkingElsewhere and cancelled events dropped)
    GET  /healthz                  -> {"status": "ok", "messages": N}

Publishing answers 200 with a JSON summary of the stored message; bad input is a 400 and an
address the directory does not know a 404, each with a one-line message.

Unknown users: an address the directory does not know, and a known user without a message, both
get an item whose `fbdata` is all `4` ("no data"). That keeps DavMail's "last fbdata" rule and
its "leading 4 = unknown attendee" check right, Zimbra reads it as NODATA, and the node's client
keeps the `4`s as no data, never free. Credentials are not checked (a lab component).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cas.codecs.public_freebusy import (
    LegacyItem,
    LegacyQueryError,
    parse_freebusy_query,
    parse_time,
    render_freebusy_response,
)
from cas.model.freebusy import BusyType, Window
from cas.sources.ical import CalendarDataError, events_from_calendar
from caslab.oldserver.directory import DirectoryEntry
from caslab.oldserver.months import Interval
from caslab.oldserver.process import LegacyServer  # re-exported: the emulator as a subprocess
from caslab.oldserver.store import FreeBusyMessage, FreeBusyStore, LegacyDnError, merged_digits

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_INTERVALS = 50_000
# Old connectors served up to 389 days; the emulator answers any window up to this long.
MAX_WINDOW_DAYS = 400
_CLASSES = {"busy": BusyType.BUSY, "tentative": BusyType.TENTATIVE, "oof": BusyType.OOF}


class BadInput(Exception):
    """Input the emulator refuses; `status` and the message go back to the caller."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadInput(f"body larger than {MAX_BODY_BYTES} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadInput(f"body larger than {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _intervals(raw: Any, name: str) -> list[Interval]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_INTERVALS:
        raise BadInput(f"{name} must be a list of [start, end] pairs (at most {MAX_INTERVALS})")
    out: list[Interval] = []
    for index, pair in enumerate(raw):
        well_formed = isinstance(pair, list) and len(pair) == 2
        if not (well_formed and all(isinstance(x, str) for x in pair)):
            raise BadInput(f"{name}[{index}] must be [start, end] as ISO 8601 strings")
        try:
            start, end = (parse_time(t, f"{name}[{index}]") for t in pair)
        except LegacyQueryError as exc:
            raise BadInput(exc.message) from None
        if end < start:
            raise BadInput(f"{name}[{index}] ends before it starts")
        out.append((start, end))
    return out


def _summary(message: FreeBusyMessage, address: str | None) -> dict[str, Any]:
    start, end = message.published
    return {
        "address": address,
        "legacy_dn": message.legacy_dn,
        "folder": message.folder,
        "subject": message.subject,
        "duplicate": message.duplicate,
        "created": message.created.isoformat(),
        "publish_start": start.isoformat(),
        "publish_end": end.isoformat(),
        "months": {
            "busy": [v for v, _ in message.busy],
            "tentative": [v for v, _ in message.tentative],
            "oof": [v for v, _ in message.oof],
        },
    }


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() in {"1", "true", "yes", "on"}
    return bool(value)


def create_legacy_app(
    store: FreeBusyStore,
    directory: Mapping[str, DirectoryEntry | tuple[str, str]],
    *,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> Starlette:
    """The emulator app over `store`; `directory` maps casefolded SMTP address -> (DN, name)."""
    entries = {k.casefold(): DirectoryEntry(*v) for k, v in directory.items()}

    def dn_of(address: str) -> str:
        entry = entries.get(address.strip().casefold())
        if entry is None:
            raise BadInput(f"{address} is not in the old server's directory", 404)
        return entry.legacy_dn

    async def freebusy(request: Request) -> Response:
        commands = [v for k, v in request.query_params.multi_items() if k.casefold() == "cmd"]
        if not commands:
            raise BadInput("cmd is missing; this front answers cmd=freebusy")
        if commands[0].strip().casefold() != "freebusy":
            raise BadInput(f"cmd={commands[0]} is not supported; this front answers cmd=freebusy")
        try:
            query = parse_freebusy_query(request.query_params, max_window_days=max_window_days)
        except LegacyQueryError as exc:
            raise BadInput(exc.message) from None
        window = query.window
        items: list[LegacyItem] = []
        for user in query.users:
            entry = entries.get(user.casefold())
            message = store.lookup(entry.legacy_dn) if entry is not None else None
            name = entry.display_name if entry is not None else user
            digits = merged_digits(message, window, query.interval_minutes)
            items.append(LegacyItem(name, user, digits))
        body = render_freebusy_response(query, items)
        return Response(body, media_type="text/xml; charset=utf-8")

    async def publish_json(request: Request) -> Response:
        try:
            payload = json.loads(await _read_body(request))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadInput("body must be a JSON object")
        address = payload.get("address")
        legacy_dn = payload.get("legacy_dn")
        if isinstance(address, str) and address.strip():
            legacy_dn = dn_of(address)
        elif not (isinstance(legacy_dn, str) and legacy_dn.strip()):
            raise BadInput('name the user with "address" or "legacy_dn"')
        start, end = _publish_range(payload)
        classes = {name: _intervals(payload.get(name), name) for name in _CLASSES}
        message = await _publish(store, legacy_dn, classes, start, end, payload.get("duplicate"))
        return JSONResponse(_summary(message, address))

    async def publish_ics(request: Request) -> Response:
        name = request.path_params["name"]
        if not name.casefold().endswith(".ics"):
            raise BadInput("publish an .ics as /public/publish/{address}.ics")
        address = name[:-4]
        legacy_dn = dn_of(address)
        start, end = _publish_range(request.query_params)
        try:
            text = (await _read_body(request)).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("the calendar is not UTF-8 text") from None
        tz = request.query_params.get("tz", "UTC")
        try:
            events = events_from_calendar([text], Window(start, end), tz)
        except CalendarDataError as exc:
            raise BadInput(f"unusable calendar: {exc}") from None
        classes: dict[str, list[Interval]] = {name: [] for name in _CLASSES}
        for event in events:
            for cls, busy_type in _CLASSES.items():
                if event.busy_type is busy_type and event.end > event.start:
                    classes[cls].append((event.start, event.end))
        duplicate = request.query_params.get("duplicate")
        message = await _publish(store, legacy_dn, classes, start, end, duplicate)
        return JSONResponse(_summary(message, address))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "messages": len(store)})

    async def bad_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadInput)
        return PlainTextResponse(exc.message + "\n", status_code=exc.status)

    routes = [
        Route("/public/", freebusy, methods=["GET"]),
        Route("/public", freebusy, methods=["GET"]),
        Route("/public/publish", publish_json, methods=["POST"]),
        Route("/public/publish/{name}", publish_ics, methods=["PUT"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={BadInput: bad_input})


def _publish_range(source: Mapping[str, Any]) -> tuple[datetime, datetime]:
    texts = [source.get(name) for name in ("publish_start", "publish_end")]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise BadInput("publish_start and publish_end are required ISO 8601 times")
    try:
        start, end = (parse_time(t, n) for t, n in zip(texts, ("publish_start", "publish_end")))
    except LegacyQueryError as exc:
        raise BadInput(exc.message) from None
    if not start < end:
        raise BadInput("publish_start must be before publish_end")
    return start, end


async def _publish(
    store: FreeBusyStore,
    legacy_dn: str,
    classes: Mapping[str, Sequence[Interval]],
    start: datetime,
    end: datetime,
    duplicate: Any,
) -> FreeBusyMessage:
    def write() -> FreeBusyMessage:
        return store.publish(
            legacy_dn,
            busy=classes["busy"],
            tentative=classes["tentative"],
            oof=classes["oof"],
            publish_start=start,
            publish_end=end,
            duplicate=_truthy(duplicate),
        )

    try:
        return await run_in_threadpool(write)
    except (LegacyDnError, ValueError) as exc:
        raise BadInput(str(exc)) from None


def run_legacy_server(data: str, directory_file: str, host: str, port: int) -> int:
    """Serve the emulator until interrupted (`cas legacy-server`). Raises `DirectoryFileError`."""
    import uvicorn

    from caslab.oldserver.directory import load_directory

    directory = load_directory(directory_file)
    store = FreeBusyStore(data)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.info(
        "legacy server: %d directory entries, %d stored messages, http://%s:%d/public/",
        len(directory),
        len(store),
        host,
        port,
    )
    app = create_legacy_app(store, directory)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


__all__ = ["MAX_WINDOW_DAYS", "LegacyServer", "create_legacy_app", "run_legacy_server"]
