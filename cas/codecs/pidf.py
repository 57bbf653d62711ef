"""A presence view as a PIDF document (RFC 3863) with RPID activities (RFC 4480).

What SIP (SIMPLE) and XMPP gateways read::

    <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:ann@contoso.test">
      <tuple id="calendar">
        <status>
          <basic>open</basic>
          <rpid:activities from="2030-01-07T09:00:00Z" until="2030-01-07T10:00:00Z">
            <rpid:meeting/>
          </rpid:activities>
        </status>
        <note>Planning (Room 1)</note>          only where the requester may see them
        <timestamp>2030-01-07T09:12:03Z</timestamp>
      </tuple>
      <dm:person id="p">                        the same activities where RFC 4479 readers look
        <rpid:activities ...><rpid:meeting/></rpid:activities>
      </dm:person>
    </presence>

States: Available has no activity (`basic` open); In a meeting `meeting`; Busy `busy`; Away
`away` (`basic` stays open: the person can still be written to); Unknown `unknown` and no
`basic` at all (nothing is known of reachability either). Pure; built with lxml.
"""

from __future__ import annotations

from lxml import etree

from cas.codecs.presence_json import instant
from cas.model.busy import Presence
from cas.presence.state import PresenceView

PIDF_MEDIA_TYPE = "application/pidf+xml"
PIDF = "urn:ietf:params:xml:ns:pidf"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"
DM = "urn:ietf:params:xml:ns:pidf:data-model"
NSMAP = {None: PIDF, "rpid": RPID, "dm": DM}

ACTIVITY: dict[Presence, str | None] = {
    Presence.AVAILABLE: None,
    Presence.IN_A_MEETING: "meeting",
    Presence.BUSY: "busy",
    Presence.AWAY: "away",
    Presence.UNKNOWN: "unknown",
}


def _activities(view: PresenceView) -> etree._Element | None:
    name = ACTIVITY[view.state]
    if name is None:
        return None
    element = etree.Element(f"{{{RPID}}}activities", nsmap=NSMAP)
    if view.since is not None:
        element.set("from", instant(view.since) or "")
    if view.until is not None:
        element.set("until", instant(view.until) or "")
    etree.SubElement(element, f"{{{RPID}}}{name}")
    return element


def _note(view: PresenceView) -> str | None:
    if view.subject and view.location:
        return f"{view.subject} ({view.location})"
    return view.subject or view.location or None


def render_pidf(view: PresenceView) -> bytes:
    """The PIDF document of one view (see the module docstring)."""
    root = etree.Element(f"{{{PIDF}}}presence", nsmap=NSMAP)
    root.set("entity", f"pres:{view.address}")
    tuple_ = etree.SubElement(root, f"{{{PIDF}}}tuple", id="calendar")
    status = etree.SubElement(tuple_, f"{{{PIDF}}}status")
    if view.state is not Presence.UNKNOWN:
        etree.SubElement(status, f"{{{PIDF}}}basic").text = "open"
    activities = _activities(view)
    if activities is not None:
        status.append(activities)
    note = _note(view)
    if note is not None:
        etree.SubElement(tuple_, f"{{{PIDF}}}note").text = note
    etree.SubElement(tuple_, f"{{{PIDF}}}timestamp").text = instant(view.at)
    if activities is not None:
        person = etree.SubElement(root, f"{{{DM}}}person", id="p")
        person.append(etree.fromstring(etree.tostring(activities)))
    document: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return document
