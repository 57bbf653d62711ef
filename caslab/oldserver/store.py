"""The old server's public-folder free/busy store: one message per user, persisted as JSON files.

This module owns what the legacy emulator keeps (docs/protocols.md §5): per user, one
`FreeBusyMessage` in the folder of the user's administrative group, subject
`USER-/CN=RECIPIENTS/CN=<ALIAS>`, with busy, tentative and OOF time as MS-OXOPFFB month blocks
(`caslab.oldserver.months`) and the published range in minutes since 1601. `merged_digits` turns a
message into the `/public` digit string; `FreeBusyStore` keeps messages on disk.

Theory of operation
-------------------
* **Duplicates.** Exchange 2003 could end up with two messages for one user, the second named with
  a `-2` suffix (then `-3`, ...). Readers resolved that by keeping the **earliest** message (by its
  creation time, then by suffix). `publish(..., duplicate=True)` emulates the bug by writing a new
  suffixed copy; a plain `publish` updates the earliest copy in place, which is what the winner's
  owner would have done.
* **Partial slots.** A slot of the digit string is `4` (no data) unless it lies **entirely** inside
  [publish start, publish end): unknown time is never free, and `4` is the highest digit, so it
  wins over busy time in the same slot (the same rule `cas.model.freebusy` applies to coverage).
* **Persistence.** Each message is one JSON file under
  `<folder>/<EX:admin group>/<subject>[-N].json` (`/` spelled `_xF8FF_` as in the old WebDAV URLs,
  other unsafe characters percent-encoded). Files are written to a temporary file in the same
  folder and renamed over the old one, so a crash leaves either the old or the new message. A new
  store on the same folder reloads everything; an unreadable file is logged and skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cas.model.freebusy import BusyType, Event, Window, merged_free_busy
from caslab.oldserver.months import (
    Interval,
    MonthBlocks,
    clip,
    decode_months,
    encode_months,
    from_minutes_since_1601,
    minutes_since_1601,
    normalize,
)

logger = logging.getLogger(__name__)

FILE_FORMAT = 1
_WEBDAV_SLASH = "_xF8FF_"


class LegacyDnError(ValueError):
    """A legacy DN that is not `/o=<org>[/ou=<group>...]/cn=<...>`."""


def _dn_parts(legacy_dn: str) -> tuple[str, tuple[str, ...]]:
    """(folder, cn values) of a DN: `/o=C/ou=EU/cn=Recipients/cn=ann` -> (`/o=C/ou=EU`, ...)."""
    dn = legacy_dn.strip()
    if not dn.casefold().startswith("/o="):
        raise LegacyDnError(f"a legacy DN starts with '/o=': {legacy_dn!r}")
    segments = dn.split("/")[1:]
    if any("=" not in s or not s.split("=", 1)[1] for s in segments):
        raise LegacyDnError(f"every part of a legacy DN is name=value: {legacy_dn!r}")
    cns = [i for i, s in enumerate(segments) if s.split("=", 1)[0].strip().casefold() == "cn"]
    if not cns:
        raise LegacyDnError(f"a legacy DN names the user with '/cn=': {legacy_dn!r}")
    folder = "/" + "/".join(segments[: cns[0]])
    return folder, tuple(s.split("=", 1)[1] for s in segments[cns[0] :])


def message_subject(legacy_dn: str) -> str:
    """`USER-/CN=RECIPIENTS/CN=ANN` for `/o=Contoso/ou=EU/cn=Recipients/cn=ann`."""
    _, cns = _dn_parts(legacy_dn)
    return "USER-" + "".join(f"/CN={cn}" for cn in cns).upper()


def message_folder(legacy_dn: str) -> str:
    """The administrative group of a legacy DN: `/o=Contoso/ou=EU`."""
    return _dn_parts(legacy_dn)[0]


@dataclass(frozen=True, slots=True)
class FreeBusyMessage:
    """One user's public-folder free/busy message (the properties an emulator needs).

    Busy classes map to MS-OXOPFFB property pairs: `busy` (0x6853/0x6854), `tentative`
    (0x6851/0x6852), `oof` (0x6855/0x6856); `merged` (0x684F/0x6850) is derived.
    """

    legacy_dn: str
    publish_start: int  # PidTagFreeBusyPublishStart, minutes since 1601
    publish_end: int  # PidTagFreeBusyPublishEnd
    busy: tuple[MonthBlocks, ...] = ()
    tentative: tuple[MonthBlocks, ...] = ()
    oof: tuple[MonthBlocks, ...] = ()
    created: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    updated: datetime | None = None
    duplicate: int = 1  # 1 = the original; 2 = the "-2" copy, ...

    def __post_init__(self) -> None:
        _dn_parts(self.legacy_dn)
        if self.publish_end < self.publish_start:
            raise ValueError("publish end is before publish start")
        if self.duplicate < 1:
            raise ValueError(f"duplicate counter must be at least 1, got {self.duplicate}")

    @property
    def folder(self) -> str:
        return message_folder(self.legacy_dn)

    @property
    def base_subject(self) -> str:
        return message_subject(self.legacy_dn)

    @property
    def subject(self) -> str:
        """The subject, with the `-N` suffix of a duplicate."""
        suffix = f"-{self.duplicate}" if self.duplicate > 1 else ""
        return self.base_subject + suffix

    @property
    def key(self) -> tuple[str, str]:
        """What makes two messages copies of one user's message: folder and subject, any case."""
        return (self.folder.casefold(), self.base_subject)

    @property
    def published(self) -> Interval:
        return (
            from_minutes_since_1601(self.publish_start),
            from_minutes_since_1601(self.publish_end),
        )

    @property
    def merged(self) -> tuple[MonthBlocks, ...]:
        """Busy or OOF time (tentative excluded), as the merged property pair holds it."""
        return tuple(encode_months(decode_months(self.busy) + decode_months(self.oof)))

    def intervals(self) -> dict[BusyType, list[Interval]]:
        return {
            BusyType.TENTATIVE: decode_months(self.tentative),
            BusyType.BUSY: decode_months(self.busy),
            BusyType.OOF: decode_months(self.oof),
        }


def build_message(
    legacy_dn: str,
    *,
    busy: Iterable[Interval] = (),
    tentative: Iterable[Interval] = (),
    oof: Iterable[Interval] = (),
    publish_start: datetime,
    publish_end: datetime,
    created: datetime,
    duplicate: int = 1,
) -> FreeBusyMessage:
    """A message for `legacy_dn`; intervals outside the published range are dropped."""
    if not publish_start < publish_end:
        raise ValueError(f"publish start {publish_start} is not before publish end {publish_end}")
    # Round the range inwards, so the message never claims knowledge of a partial minute.
    start = minutes_since_1601(publish_start)
    if from_minutes_since_1601(start) < publish_start:
        start += 1
    end = minutes_since_1601(publish_end)
    lo, hi = from_minutes_since_1601(start), from_minutes_since_1601(max(start, end))

    def blocks(intervals: Iterable[Interval]) -> tuple[MonthBlocks, ...]:
        return tuple(encode_months(clip(normalize(intervals), lo, hi)))

    return FreeBusyMessage(
        legacy_dn=legacy_dn.strip(),
        publish_start=start,
        publish_end=max(start, end),
        busy=blocks(busy),
        tentative=blocks(tentative),
        oof=blocks(oof),
        created=created,
        duplicate=duplicate,
    )


def merged_digits(message: FreeBusyMessage | None, window: Window, interval_minutes: int) -> str:
    """The `/public` digit string of `message` over `window` (see "Partial slots" above).

    No message at all gives all `4`s.
    """
    if message is None:
        return merged_free_busy((), window, interval_minutes, coverage=())
    events = [
        Event(start, end, busy_type)
        for busy_type, intervals in message.intervals().items()
        for start, end in intervals
    ]
    return merged_free_busy(events, window, interval_minutes, coverage=[message.published])


# --- JSON ------------------------------------------------------------------------------------


def _blocks_json(pairs: Iterable[MonthBlocks]) -> list[list[Any]]:
    return [[value, base64.b64encode(data).decode("ascii")] for value, data in pairs]


def _blocks_from_json(raw: Any) -> tuple[MonthBlocks, ...]:
    return tuple((int(value), base64.b64decode(data, validate=True)) for value, data in raw)


def message_to_json(message: FreeBusyMessage) -> dict[str, Any]:
    return {
        "format": FILE_FORMAT,
        "legacy_dn": message.legacy_dn,
        "folder": message.folder,
        "subject": message.subject,
        "duplicate": message.duplicate,
        "created": message.created.isoformat(),
        "updated": message.updated.isoformat() if message.updated else None,
        "publish_start": message.publish_start,
        "publish_end": message.publish_end,
        "busy": _blocks_json(message.busy),
        "tentative": _blocks_json(message.tentative),
        "oof": _blocks_json(message.oof),
        "merged": _blocks_json(message.merged),  # informational; derived on load
    }


def message_from_json(raw: dict[str, Any]) -> FreeBusyMessage:
    if raw.get("format") != FILE_FORMAT:
        raise ValueError(f"unknown file format {raw.get('format')!r}")
    message = FreeBusyMessage(
        legacy_dn=str(raw["legacy_dn"]),
        publish_start=int(raw["publish_start"]),
        publish_end=int(raw["publish_end"]),
        busy=_blocks_from_json(raw.get("busy", [])),
        tentative=_blocks_from_json(raw.get("tentative", [])),
        oof=_blocks_from_json(raw.get("oof", [])),
        created=datetime.fromisoformat(raw["created"]),
        updated=datetime.fromisoformat(raw["updated"]) if raw.get("updated") else None,
        duplicate=int(raw.get("duplicate", 1)),
    )
    message.intervals()  # validates every block
    return message


def _fs_name(text: str) -> str:
    return quote(text.replace("/", _WEBDAV_SLASH), safe="=:-_ .,@")


# --- the store -------------------------------------------------------------------------------


class FreeBusyStore:
    """Free/busy messages in a folder on disk, indexed in memory by (admin group, subject)."""

    def __init__(self, folder: str | Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._messages: dict[tuple[str, str], list[FreeBusyMessage]] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self.folder.rglob("*.json")):
            if path.name.startswith(".tmp-"):
                continue
            try:
                message = message_from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("skipping unreadable free/busy message %s: %s", path, exc)
                continue
            self._messages.setdefault(message.key, []).append(message)
        for copies in self._messages.values():
            copies.sort(key=_age)

    def path_of(self, message: FreeBusyMessage) -> Path:
        group = _fs_name("EX:" + message.folder.casefold())
        return self.folder / group / f"{_fs_name(message.subject)}.json"

    def _write(self, message: FreeBusyMessage) -> None:
        target = self.path_of(message)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(message_to_json(message), indent=1).encode("utf-8")
        fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def publish(
        self,
        legacy_dn: str,
        busy: Iterable[Interval] = (),
        tentative: Iterable[Interval] = (),
        oof: Iterable[Interval] = (),
        *,
        publish_start: datetime,
        publish_end: datetime,
        duplicate: bool = False,
    ) -> FreeBusyMessage:
        """Write a user's free/busy; with `duplicate=True` add a `-N` copy instead of updating.

        Raises `LegacyDnError` or `ValueError` for bad input.
        """
        now = self._clock()
        message = build_message(
            legacy_dn,
            busy=busy,
            tentative=tentative,
            oof=oof,
            publish_start=publish_start,
            publish_end=publish_end,
            created=now,
        )
        with self._lock:
            copies = self._messages.setdefault(message.key, [])
            before = list(copies)
            if copies and duplicate:
                message = replace(message, duplicate=max(m.duplicate for m in copies) + 1)
                copies.append(message)
            elif copies:
                winner = copies[0]
                message = replace(
                    message, created=winner.created, duplicate=winner.duplicate, updated=now
                )
                copies[0] = message
            else:
                copies.append(message)
            try:
                self._write(message)
            except OSError:
                copies[:] = before
                raise
            copies.sort(key=_age)
        return message

    def lookup(self, legacy_dn: str) -> FreeBusyMessage | None:
        """The user's message; of several copies the earliest (by creation time, then suffix)."""
        copies = self.copies(legacy_dn)
        return copies[0] if copies else None

    def copies(self, legacy_dn: str) -> list[FreeBusyMessage]:
        """Every copy of the user's message, earliest first."""
        key = (message_folder(legacy_dn).casefold(), message_subject(legacy_dn))
        with self._lock:
            return list(self._messages.get(key, ()))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._messages.values())


def _age(message: FreeBusyMessage) -> tuple[datetime, int]:
    return (message.created, message.duplicate)


__all__ = [  # the month-block functions are re-exported for callers of the store
    "FreeBusyMessage",
    "FreeBusyStore",
    "LegacyDnError",
    "build_message",
    "decode_months",
    "encode_months",
    "from_minutes_since_1601",
    "merged_digits",
    "message_folder",
    "message_from_json",
    "message_subject",
    "message_to_json",
    "minutes_since_1601",
]
