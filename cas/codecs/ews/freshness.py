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
#     <f:Mailbox index="0" source="cache" age="12.5" site="eu"/> ...
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
        if source in SOURCES and index >= 0 and age >= 0:
            found[index] = Freshness(source, age, item.get("site") or None)
    return found


def freshness_summary(results: Sequence[MailboxData | MailboxError]) -> str:
    """A one-line HTTP header value: counts per source and the oldest age, e.g.
    `cache=12, backend=3, stale-cache=1; max-age=812`."""
    counts: dict[str, int] = {}
    oldest = 0.0
    for result in results:
        if isinstance(result, MailboxData) and result.freshness is not None:
            counts[result.freshness.source] = counts.get(result.freshness.source, 0) + 1
            oldest = max(oldest, result.freshness.age_seconds)
    if not counts:
        return ""
    parts = ", ".join(f"{source}={n}" for source, n in sorted(counts.items()))
    return f"{parts}; max-age={oldest:.0f}"
