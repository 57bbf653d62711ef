"""Hostile requests to every front door of a real `cas serve` node over HTTPS.

Each case is one request a hostile or broken client could send: XML external entities and
entity bombs, deep nesting, oversize, cut and stalled bodies, CRLF and header injection in
addresses and query parameters, path tricks, odd Unicode and IDN addresses, forged peer
tokens and malformed credentials. The test counts them and requires, for each, an answer that
is not a 500 and no header it did not mean to send; and, for all of them together, no
traceback in the node's log and not one request to the canary server whose URL the hostile
bodies name (a node fetches only what the site map names).
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.cluster import Cluster, start_cluster
from tests.support.node import ThreadedServer, make_test_ca

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
POX_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AD_NS = "http://schemas.microsoft.com/exchange/2010/Autodiscover"
MAILBOX = "eu-ann@contoso.test"
MIN_CASES = 50


class Canary:
    """A loopback HTTP server hostile bodies point at; it counts every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    def app(self) -> Starlette:
        async def anything(request: Request) -> Response:
            self.hits.append(f"{request.method} {request.url.path}")
            return PlainTextResponse("canary")

        return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


@dataclass
class Node:
    cluster: Cluster
    url: str
    auth: tuple[str, str]
    canary: str
    hits: list[str]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("hostile")
    ca = make_test_ca(root / "tls")
    canary = Canary()
    with ThreadedServer(canary.app()) as server:
        cluster = start_cluster(
            root, ca, {"eu": ["ann"]}, nodes_per_site=1, settings={"max_body_bytes": 65536}
        )
        try:
            yield Node(cluster, cluster.sites["eu"][0].direct_url, cluster.client,
                       server.url, canary.hits)  # fmt: skip
        finally:
            cluster.stop()


def envelope(body: str, head: str = "", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}'
        f'<s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}">'
        f'<s:Header><t:RequestServerVersion Version="Exchange2016"/>{head}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def availability(address: str = MAILBOX, prolog: str = "", extra: str = "") -> bytes:
    return envelope(
        "<m:GetUserAvailabilityRequest>"
        "<t:TimeZone><t:Bias>0</t:Bias></t:TimeZone>"
        f"<m:MailboxDataArray><t:MailboxData><t:Email><t:Address>{address}</t:Address></t:Email>"
        f"<t:AttendeeType>Required</t:AttendeeType></t:MailboxData>{extra}</m:MailboxDataArray>"
        "<t:FreeBusyViewOptions><t:TimeWindow><t:StartTime>2024-03-04T00:00:00</t:StartTime>"
        "<t:EndTime>2024-03-05T00:00:00</t:EndTime></t:TimeWindow>"
        "<t:MergedFreeBusyIntervalInMinutes>60</t:MergedFreeBusyIntervalInMinutes>"
        "<t:RequestedView>FreeBusy</t:RequestedView></t:FreeBusyViewOptions>"
        "</m:GetUserAvailabilityRequest>",
        prolog=prolog,
    )


def pox(email: str, prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>{prolog}<Autodiscover xmlns="{POX_NS}"><Request>'
        f"<EMailAddress>{email}</EMailAddress><AcceptableResponseSchema>"
        "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def bomb(levels: int = 9) -> str:
    lines = ['<!ENTITY l0 "lol">']
    lines += [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, levels + 1)]
    return f"<!DOCTYPE s:Envelope [{''.join(lines)}]>"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    authenticated: bool = True


def cases(canary: str) -> list[Case]:
    ews, ad_json = "/EWS/Exchange.asmx", "/autodiscover/autodiscover.json/v1.0/"
    xml = (("Content-Type", "text/xml; charset=utf-8"),)
    c: list[Case] = []

    def ews_case(
        name: str,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = xml,
        authenticated: bool = True,
    ) -> None:
        c.append(Case(name, "POST", ews, body, headers, authenticated))

    # XML: external entities, entity expansion, DTDs, XInclude, nesting, encodings
    ews_case(
        "xxe file",
        availability("&x;", '<!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
    )
    ews_case(
        "xxe url", availability("&x;", f'<!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "{canary}/xxe">]>')
    )
    ews_case(
        "xxe parameter entity",
        availability(MAILBOX, f'<!DOCTYPE s:Envelope [<!ENTITY % p SYSTEM "{canary}/dtd"> %p;]>'),
    )
    ews_case(
        "external dtd", availability(MAILBOX, f'<!DOCTYPE s:Envelope SYSTEM "{canary}/ext.dtd">')
    )
    ews_case("billion laughs", availability("&l9;", bomb()))
    ews_case(
        "quadratic blowup",
        availability("&a;" * 2000, f'<!DOCTYPE s:Envelope [<!ENTITY a "{"x" * 20000}">]>'),
    )
    ews_case(
        "xinclude",
        availability(
            f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{canary}/xi" parse="text"/>'
        ),
    )
    ews_case(
        "schema location",
        availability(MAILBOX).replace(
            b"<s:Body>",
            f'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{M} {canary}/xsd">'.encode(),
        ),
    )
    ews_case("deep nesting", envelope("<a>" * 5000 + "</a>" * 5000))
    ews_case("very deep nesting", envelope("<a>" * 20000))
    ews_case(
        "many attributes", envelope("<a " + " ".join(f'a{i}="{i}"' for i in range(3000)) + "/>")
    )
    ews_case(
        "utf-16 declared, utf-8 sent",
        availability(MAILBOX).replace(b'encoding="utf-8"', b'encoding="utf-16"'),
    )
    ews_case(
        "invalid utf-8",
        availability("ann\xff\xfe@contoso.test".encode("latin-1").decode("latin-1")).replace(
            b"ann\xc3\xbf\xc3\xbe", b"ann\xff\xfe"
        ),
    )
    ews_case("nul character reference", availability("ann&#0;@contoso.test"))
    ews_case("cdata close", availability("]]>"))
    ews_case("not xml", b"\x00\x01\x02 not xml at all")
    ews_case("empty body", b"")
    ews_case("json to ews", b'{"schedules": []}')
    ews_case(
        "processing instruction", availability(MAILBOX, f'<?xml-stylesheet href="{canary}/xsl"?>')
    )
    # addresses: injection, Unicode, IDN, sizes
    ews_case("crlf in address", availability("ann@contoso.test\r\nX-Injected: yes"))
    ews_case("encoded crlf in address", availability("ann@contoso.test&#13;&#10;X-Injected: yes"))
    ews_case("idn address", availability("ann@bücher.test"))
    ews_case("punycode address", availability("ann@xn--bcher-kva.test"))
    ews_case("rtl override", availability("ann\u202e@contoso.test"))
    ews_case("zero width joiner", availability("a\u200dnn@contoso.test"))
    ews_case("fullwidth at", availability("ann\uff20contoso.test"))
    ews_case("cyrillic homoglyph", availability("\u0430nn@contoso.test"))
    ews_case("combining marks", availability("a" + "\u0301" * 500 + "@contoso.test"))
    ews_case("long address", availability("a" * 20000 + "@contoso.test"))
    ews_case("url as address", availability(f"{canary}/address"))
    ews_case("sql-ish address", availability("' OR 1=1 --@contoso.test"))
    ews_case("oversize sent", availability(MAILBOX, "<!--" + "x" * 200_000 + "-->"))
    # credentials and forged peers
    ews_case(
        "forged peer token",
        availability(),
        headers=(*xml, ("X-CAS-Forwarded", "v1.AAAA.BBBB")),
        authenticated=False,
    )
    ews_case("garbage budget", availability(), headers=(*xml, ("X-CAS-Budget-Ms", "-1e309")))
    ews_case("no credentials", availability(), authenticated=False)
    ews_case(
        "basic not base64",
        availability(),
        headers=(*xml, ("Authorization", "Basic %%%")),
        authenticated=False,
    )
    ews_case(
        "basic binary",
        availability(),
        headers=(*xml, ("Authorization", "Basic " + base64.b64encode(b"\xff\x00:\xfe").decode())),
        authenticated=False,
    )
    ews_case(
        "huge authorization",
        availability(),
        headers=(*xml, ("Authorization", "Basic " + "QUFB" * 5000)),
        authenticated=False,
    )
    ews_case(
        "bearer not accepted",
        availability(),
        headers=(*xml, ("Authorization", "Bearer a.b.c")),
        authenticated=False,
    )
    ews_case(
        "unknown scheme",
        availability(),
        headers=(*xml, ("Authorization", "NTLM TlRMTVNTUAAB")),
        authenticated=False,
    )
    # Autodiscover SOAP and POX
    c.append(
        Case(
            "pox xxe",
            "POST",
            "/autodiscover/autodiscover.xml",
            pox("&x;", f'<!DOCTYPE A [<!ENTITY x SYSTEM "{canary}/pox">]>'),
            xml,
        )
    )
    c.append(
        Case(
            "pox bomb",
            "POST",
            "/autodiscover/autodiscover.xml",
            pox("&l9;", bomb().replace("s:Envelope", "Autodiscover")),
            xml,
        )
    )
    c.append(
        Case(
            "pox crlf email",
            "POST",
            "/autodiscover/autodiscover.xml",
            pox("ann@contoso.test\r\nLocation: http://evil.test/"),
            xml,
        )
    )
    c.append(
        Case("pox idn email", "POST", "/autodiscover/autodiscover.xml", pox("ann@bücher.test"), xml)
    )
    c.append(
        Case(
            "soap autodiscover xxe",
            "POST",
            "/autodiscover/autodiscover.svc",
            f'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "{canary}/ad">]>'
            f'<s:Envelope xmlns:s="{S}" xmlns:a="{AD_NS}"><s:Body><a:GetUserSettingsRequestMessage>'
            "<a:Request><a:Users><a:User><a:Mailbox>&x;</a:Mailbox></a:User></a:Users>"
            "<a:RequestedSettings><a:Setting>ExternalEwsUrl</a:Setting></a:RequestedSettings>"
            "</a:Request></a:GetUserSettingsRequestMessage></s:Body></s:Envelope>".encode(),
            xml,
        )
    )
    # Autodiscover JSON: path tricks and injection in the path and the query
    for name, tail in [
        ("json dot dot", "..%2f..%2fetc%2fpasswd?Protocol=EWS"),
        ("json nul", "ann%00@contoso.test?Protocol=EWS"),
        ("json crlf address", "ann@contoso.test%0d%0aLocation:%20http://evil.test/?Protocol=EWS"),
        ("json crlf protocol", f"{MAILBOX}?Protocol=EWS%0d%0aSet-Cookie:%20a=b"),
        ("json url address", f"{canary.replace('://', '%3a%2f%2f')}%2fjson?Protocol=EWS"),
        ("json idn", "ann@b%C3%BCcher.test?Protocol=EWS"),
        ("json long", "a" * 6000 + "@contoso.test?Protocol=EWS"),
        ("json surrogate", "%ED%A0%80@contoso.test?Protocol=EWS"),
        ("json bad percent", "%zz%@contoso.test?Protocol=EWS"),
        (
            "json repeated protocol",
            f"{MAILBOX}?Protocol=EWS&Protocol=ActiveSync&Protocol=" + "x" * 3000,
        ),
    ]:
        c.append(Case(name, "GET", ad_json + tail, authenticated=False))
    # the legacy door
    for name, query in [
        (
            "legacy crlf user",
            "cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=60&u=SMTP:ann@contoso.test%0d%0aX-Injected:%20yes",
        ),
        ("legacy bad times", "cmd=freebusy&start=yesterday&end=%00&interval=60&u=SMTP:" + MAILBOX),
        (
            "legacy huge interval",
            "cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=99999999999999999999&u=SMTP:"
            + MAILBOX,
        ),
        (
            "legacy many users",
            "cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=60&"
            + "&".join(f"u=SMTP:u{i}@contoso.test" for i in range(500)),
        ),
        (
            "legacy url user",
            f"cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=60&u={canary}/legacy",
        ),
        (
            "legacy surrogate user",
            "cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=60&u=SMTP:%ED%A0%80@contoso.test",
        ),
        ("legacy no cmd", "u=SMTP:" + MAILBOX),
        (
            "legacy idn user",
            "cmd=freebusy&start=2024-03-04T00:00:00Z&end=2024-03-05T00:00:00Z&interval=60&u=SMTP:ann@b%C3%BCcher.test",
        ),
    ]:
        c.append(Case(name, "GET", "/public/?" + query))
    c.append(Case("legacy path dot dot", "GET", "/public/../../etc/passwd?cmd=freebusy"))
    c.append(Case("legacy encoded dot dot", "GET", "/public/%2e%2e/%2e%2e/etc/passwd"))
    # the JSON API
    api = (("Content-Type", "application/json"),)
    for name, body in [
        ("api deep arrays", b"[" * 100_000 + b"]" * 100_000),
        ("api deep objects", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
        (
            "api huge number",
            b'{"schedules":["a@contoso.test"],"availabilityViewInterval":1e999999}',
        ),
        ("api nan", b'{"schedules":["a@contoso.test"],"availabilityViewInterval":NaN}'),
        (
            "api zone path",
            b'{"schedules":["a@contoso.test"],"startTime":{"dateTime":"2024-03-04T00:00:00","timeZone":"../../../../etc/passwd"},"endTime":{"dateTime":"2024-03-05T00:00:00"}}',
        ),
        (
            "api crlf schedule",
            b'{"schedules":["a@contoso.test\\r\\nX-Injected: yes"],"startTime":{"dateTime":"2024-03-04T00:00:00"},"endTime":{"dateTime":"2024-03-05T00:00:00"}}',
        ),
        (
            "api url schedule",
            b'{"schedules":["'
            + canary.encode()
            + b'/api"],"startTime":{"dateTime":"2024-03-04T00:00:00"},"endTime":{"dateTime":"2024-03-05T00:00:00"}}',
        ),
        (
            "api lone surrogate",
            b'{"schedules":["\\ud800@contoso.test"],"startTime":{"dateTime":"2024-03-04T00:00:00"},"endTime":{"dateTime":"2024-03-05T00:00:00"}}',
        ),
        ("api not utf-8", b'{"schedules":["\xff\xfe"]}'),
    ]:
        c.append(Case(name, "POST", "/api/v1/availability", body, api))
    # paths and methods
    for name, method, path in [
        ("ews dot dot", "POST", "/EWS/../../etc/passwd"),
        ("ews double slash", "POST", "//EWS//Exchange.asmx"),
        ("encoded slash", "GET", "/autodiscover%2fautodiscover.json"),
        ("long path", "GET", "/" + "a/" * 3000),
        ("nul in path", "GET", "/healthz%00.html"),
        ("trace", "TRACE", "/EWS/Exchange.asmx"),
        ("put", "PUT", "/EWS/Exchange.asmx"),
        ("get on ews", "GET", "/EWS/Exchange.asmx"),
        ("admin without token", "POST", "/api/v1/cache/invalidate"),
    ]:
        c.append(Case(name, method, path, b"", authenticated=False))
    return c


def send(client: httpx.Client, node: Node, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    auth = node.auth if case.authenticated and "Authorization" not in headers else None
    return client.request(
        case.method, node.url + case.path, content=case.body, headers=headers, auth=auth
    )


def raw_exchange(node: Node, payload: bytes, *, stall: float = 0.0, hang_up: bool = False) -> bytes:
    """Send raw bytes over TLS (what httpx will not send); stall, or stop sending (`hang_up`),
    then read the reply's head."""
    port = int(node.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(node.cluster.ca.ca_pem))
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as plain, \
            context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:  # fmt: skip
        tls.sendall(payload)
        time.sleep(stall)
        if hang_up:
            tls.shutdown(socket.SHUT_WR)
        try:
            while chunk := tls.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    """The status of a raw reply; 0 when the server closed without one."""
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_hostile_requests_get_clear_answers_and_never_a_500(node: Node) -> None:
    all_cases = cases(node.canary)
    statuses: dict[str, int] = {}
    soap_faults: dict[str, str | None] = {}
    with httpx.Client(verify=str(node.cluster.ca.ca_pem), trust_env=False, timeout=60) as client:
        for case in all_cases:
            response = send(client, node, case)
            statuses[case.name] = response.status_code
            if response.status_code == 500:
                soap_faults[case.name] = fault_code(response)
            injected = [k for k in response.headers if k.lower() in ("x-injected", "set-cookie")]
            assert not injected, f"{case.name}: header injected: {injected}"
            location = response.headers.get("location", "")
            assert "evil" not in location, f"{case.name}: Location {location!r}"
            assert b"Traceback" not in response.content, case.name
            assert b"root:x:0:0" not in response.content, f"{case.name}: /etc/passwd leaked"
            assert b"lollollol" not in response.content, f"{case.name}: entities expanded"
        # a request whose body stops short and whose sender hangs up
        cut = raw_exchange(node, b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                           b"Content-Type: text/xml\r\nAuthorization: Basic "
                           + base64.b64encode(":".join(node.auth).encode()) + b"\r\n\r\n<s:Env", hang_up=True)  # fmt: skip
        statuses["cut body"] = status_of(cut)
        # a declared length far past the limit, refused before it is read
        big = raw_exchange(node, b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                           b"Content-Type: text/xml\r\nAuthorization: Basic "
                           + base64.b64encode(":".join(node.auth).encode()) + b"\r\n\r\n<x/>")  # fmt: skip
        statuses["oversize declared"] = (
            int(big.split(b" ", 2)[1]) if big.startswith(b"HTTP/") else 0
        )
        assert statuses["oversize declared"] == 413
        # header injection at the HTTP layer itself
        raw = raw_exchange(
            node, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: b\r\n\r\n"
        )
        statuses["bare cr in header"] = (
            int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
        )
        # a stalled body does not hold up others

        stalled = threading.Thread(target=raw_exchange, args=(node, b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 100\r\n\r\n<a>"), kwargs={"stall": 3.0})  # fmt: skip
        stalled.start()
        health = client.get(node.url + "/healthz")
        stalled.join()
        assert health.status_code == 200
        statuses["stalled body (others still served)"] = health.status_code
    hung_up = statuses.pop("cut body")  # its sender left: no answer is owed (0), or a 4xx
    assert hung_up == 0 or 400 <= hung_up < 500
    count = len(statuses) + 1
    print(f"\nhostile requests sent: {count}; statuses: {sorted(set(statuses.values()))}; "
          f"EWS SOAP faults (HTTP 500 by the EWS contract): {soap_faults}")  # fmt: skip
    assert count >= MIN_CASES
    # EWS answers a well-formed SOAP request with a wrong value by a SOAP fault, which SOAP 1.1
    # sends with HTTP 500 and EWS clients read only then (see cas/errors.py); every other 500
    # (not a fault, or ErrorInternalServerError: a bug) is a failure.
    unexplained = {
        name: status
        for name, status in statuses.items()
        if status >= 500 and soap_faults.get(name) in (None, "ErrorInternalServerError")
    }
    assert unexplained == {}, unexplained
    assert all(s != 0 for s in statuses.values()), statuses


def fault_code(response: httpx.Response) -> str | None:
    """The EWS ResponseCode of a SOAP fault answer, or None when it is not one."""
    from lxml import etree

    try:
        root = etree.fromstring(response.content)
    except etree.XMLSyntaxError:
        return None
    code = root.find(
        f".//{{{S}}}Fault//{{http://schemas.microsoft.com/exchange/services/2006/errors}}ResponseCode"
    )
    return code.text if code is not None else None


def test_the_node_logged_no_traceback_and_fetched_nothing(node: Node) -> None:
    with httpx.Client(verify=str(node.cluster.ca.ca_pem), trust_env=False, timeout=60) as client:
        for case in cases(node.canary):  # again, in case this test runs alone
            send(client, node, case)
    log = node.cluster.sites["eu"][0].log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert node.hits == [], f"the node fetched URLs taken from requests: {node.hits}"
    assert node.auth[1] not in log


def test_a_sane_request_still_works_after_all_that(node: Node) -> None:
    with httpx.Client(verify=str(node.cluster.ca.ca_pem), trust_env=False, timeout=60) as client:
        response = client.post(node.url + "/EWS/Exchange.asmx", content=availability(),
                               headers={"Content-Type": "text/xml"}, auth=node.auth)  # fmt: skip
    assert response.status_code == 200 and b"NoError" in response.content
