"""Making calendars the way CalDAV clients do: MKCALENDAR with properties (RFC 4791 §5.3.1).

Works on any server; `transparency` sets RFC 6638's `schedule-calendar-transp`. Radicale keeps
dead properties as text only (an element inside is dropped), so `transparency="text"` writes the
word `transparent` as the property's text, the only form of it Radicale can hand back.
"""

from __future__ import annotations

from typing import Literal

import httpx

Transparency = Literal["none", "element", "text"]


def mkcalendar_body(
    name: str, components: tuple[str, ...] | None, transparency: Transparency
) -> bytes:
    props = [f"<D:displayname>{name}</D:displayname>"]
    if components is not None:
        comps = "".join(f'<C:comp name="{c}"/>' for c in components)
        props.append(
            f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>"
        )
    if transparency == "element":
        props.append("<C:schedule-calendar-transp><C:transparent/></C:schedule-calendar-transp>")
    elif transparency == "text":
        props.append("<C:schedule-calendar-transp>transparent</C:schedule-calendar-transp>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<D:set><D:prop>{''.join(props)}</D:prop></D:set></C:mkcalendar>"
    ).encode()


async def make_calendar(
    client: httpx.AsyncClient,
    url: str,
    auth: tuple[str, str],
    *,
    components: tuple[str, ...] | None = None,
    transparency: Transparency = "none",
) -> str:
    """MKCALENDAR `url` (ending in /) with a display name and the given properties."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    response = await client.request(
        "MKCALENDAR",
        url,
        content=mkcalendar_body(name, components, transparency),
        headers={"Content-Type": 'application/xml; charset="utf-8"'},
        auth=auth,
    )
    assert response.status_code == 201, f"MKCALENDAR {url}: {response.status_code} {response.text}"
    return url


async def make_collection(client: httpx.AsyncClient, url: str, auth: tuple[str, str]) -> str:
    response = await client.request("MKCOL", url, auth=auth)
    assert response.status_code in (201, 405), f"MKCOL {url}: {response.status_code}"
    return url
