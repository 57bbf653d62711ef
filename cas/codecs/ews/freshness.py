"""Per-mailbox freshness on the EWS wire: a SOAP header in this project's own namespace.

It sits outside the SOAP Body, so the Body still validates against the EWS schema and clients
that do not know it (exchangelib, Outlook) ignore it. Nodes read it back from each other, so the
age a client sees is the age of the data, however many hops and caches it passed through.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from cas.errors import MailboxError
from cas.model.freebusy import SOURCES, Freshness, MailboxData

FRESHNESS_NS = "urn:x-cas:freshness:1"


def _f(name: str) -> str:
    return f"{{{FRESHNESS_NS}}}{name}"


# The header is written by `cas.codecs.ews.answer` with the rest of the answer:
#   <f:Freshness xmlns:f="urn:x-cas:freshness:1">
#     <f:Mailbox index="0" source="cache" age="812.5" site="eu" validated="2.1"
#                version="&quot;1733400000-17&quot;"/> ...
# `age`: seconds since the source read the data; `validated`: since it last confirmed it
# unchanged; `version`: the owning site's version of the mailbox's calendar (its change tag).
#   </f:Freshness>


def parse_freshness_header(envelope: etree._Element) -> dict[int, Freshness]:
    """The freshness a peer reported, by position; entries that do not parse are left out."""
    found: dict[int, Freshness] = {}
    for item in envelope.iter(_f("Mailbox")):
        try:
            index = int(item.get("index", ""))
            source = item.get("source", "")
            age = float(item.get("age", ""))
        except ValueError:
            continue
        validated = _seconds(item.get("validated"))
        if source in SOURCES and index >= 0 and age >= 0:
            version = item.get("version") or None
            found[index] = Freshness(source, age, item.get("site") or None, validated, version)
    return found


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def freshness_summary(results: Sequence[MailboxData | MailboxError]) -> str:
    """A one-line HTTP header value: counts per source, the oldest data and how long ago the
    least recently confirmed answer was vouched for, e.g.
    `cache=12, backend=3, stale-cache=1; max-age=812; max-unconfirmed=4`."""
    counts: dict[str, int] = {}
    oldest = unconfirmed = 0.0
    for result in results:
        if isinstance(result, MailboxData) and result.freshness is not None:
            f = result.freshness
            counts[f.source] = counts.get(f.source, 0) + 1
            oldest = max(oldest, f.age_seconds)
            unconfirmed = max(unconfirmed, f.current_within)
    if not counts:
        return ""
    parts = ", ".join(f"{source}={n}" for source, n in sorted(counts.items()))
    return f"{parts}; max-age={oldest:.0f}; max-unconfirmed={unconfirmed:.0f}"
