"""A small authoritative DNS responder on loopback, for tests and for `cas lab`.

`DnsResponder` serves a zone that can be changed while it runs (SRV, A and AAAA records, each
with its TTL), over UDP and TCP on 127.0.0.1 and one free port, from a background thread. It can
also be told to fail for a name (answer SERVFAIL or another rcode) or to stay silent (so
resolvers time out). Names it does not hold get NXDOMAIN. It answers loopback clients only
(unless made with `allow_any_address=True`, which only `cas lab-dns` uses, to serve a container
network) and is built on dnspython alone::

    with DnsResponder() as dns_server:
        dns_server.set_srv("_cas._tcp.eu.lab.test", [(0, 10, 8443, "node1.eu.lab.test")], ttl=30)
        dns_server.set_a("node1.eu.lab.test", ["127.0.0.1"], ttl=30)
        ...  # resolve at 127.0.0.1, port dns_server.port
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

__all__ = ["DnsResponder", "SrvRecord"]

SrvRecord = tuple[int, int, int, str]
"""(priority, weight, port, target) of one SRV record, in RFC 2782 field order."""

log = logging.getLogger(__name__)

_IN = dns.rdataclass.IN
_TCP_TIMEOUT = 2.0  # seconds a TCP client may take to send its one query


class DnsResponder:
    """An authoritative responder for a mutable zone on `host` (loopback) and a free port.

    `allow_any_address=True` lifts the loopback rule for both the address it listens on and
    the clients it answers (`cas lab-dns` in a container); never the default.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, allow_any_address: bool = False
    ) -> None:
        if not allow_any_address and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"DnsResponder serves loopback only, not {host!r}")
        self.host, self._wanted_port = host, port
        self._any_client = allow_any_address
        self._lock = threading.Lock()
        self._zone: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self._failures: dict[dns.name.Name, dns.rcode.Rcode | None] = {}  # None: silent
        self._queries: list[tuple[str, str]] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- the zone ---------------------------------------------------------------------------

    def set_srv(self, name: str, records: Iterable[SrvRecord], ttl: int = 60) -> None:
        """Replace the SRV records of `name`; an empty list leaves the name with no SRV data."""
        rdatas = [
            dns.rdtypes.IN.SRV.SRV(
                _IN, dns.rdatatype.SRV, priority, weight, port, _absolute(target)
            )
            for priority, weight, port, target in records
        ]
        self._put(name, dns.rdatatype.SRV, rdatas, ttl)

    def set_a(self, name: str, addresses: Iterable[str], ttl: int = 60) -> None:
        """Replace the IPv4 addresses of `name`."""
        rdatas = [dns.rdtypes.IN.A.A(_IN, dns.rdatatype.A, ip) for ip in addresses]
        self._put(name, dns.rdatatype.A, rdatas, ttl)

    def set_aaaa(self, name: str, addresses: Iterable[str], ttl: int = 60) -> None:
        """Replace the IPv6 addresses of `name`."""
        rdatas = [dns.rdtypes.IN.AAAA.AAAA(_IN, dns.rdatatype.AAAA, ip) for ip in addresses]
        self._put(name, dns.rdatatype.AAAA, rdatas, ttl)

    def remove(self, name: str) -> None:
        """Forget `name` (all its records): it gets NXDOMAIN from now on."""
        with self._lock:
            self._zone.pop(_absolute(name), None)

    def fail(self, name: str, rcode: dns.rcode.Rcode = dns.rcode.SERVFAIL) -> None:
        """Answer every query for `name` with `rcode` (SERVFAIL by default) until `heal`."""
        with self._lock:
            self._failures[_absolute(name)] = rcode

    def silence(self, name: str) -> None:
        """Drop every query for `name` until `heal`, so resolvers time out."""
        with self._lock:
            self._failures[_absolute(name)] = None

    def heal(self, name: str) -> None:
        """Answer `name` from the zone again after `fail` or `silence`."""
        with self._lock:
            self._failures.pop(_absolute(name), None)

    @property
    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every query received so far, oldest first."""
        with self._lock:
            return list(self._queries)

    def _put(self, name: str, rdtype: int, rdatas: Sequence[dns.rdata.Rdata], ttl: int) -> None:
        owner = _absolute(name)
        rrset = dns.rrset.RRset(owner, _IN, dns.rdatatype.RdataType.make(rdtype))
        for rdata in rdatas:
            rrset.add(rdata, ttl)
        rrset.update_ttl(ttl)
        with self._lock:
            self._zone.setdefault(owner, {})[rdtype] = rrset

    # --- serving ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("the responder is not started")
        port: int = self._udp.getsockname()[1]
        return port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Self:
        """Bind UDP and TCP on the same port and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("the responder is already started")
        self._udp, self._tcp = self._bind()
        self._wake = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"dns-responder-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for the thread, and close the sockets. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is not None and self._wake is not None:
            self._stopping.set()
            self._wake[1].send(b"x")
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp, *(self._wake or ())):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):  # a free UDP port may be taken for TCP: try another
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self._wanted_port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(16)
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
                if self._wanted_port:
                    raise
        raise OSError("no free port for both UDP and TCP on " + self.host)

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
            selector.register(self._tcp, selectors.EVENT_READ, self._on_tcp)
            selector.register(self._wake[0], selectors.EVENT_READ, None)
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=1.0):
                    if key.data is not None and not self._stopping.is_set():
                        try:
                            key.data()
                        except OSError as exc:  # one bad client never stops the responder
                            log.debug("DNS responder: %s", exc)

    def _on_udp(self) -> None:
        assert self._udp is not None
        wire, client = self._udp.recvfrom(65535)
        if not (self._any_client or _loopback(client[0])):
            return
        reply = self._answer(wire, tcp=False)
        if reply is not None:
            self._udp.sendto(reply, client)

    def _on_tcp(self) -> None:
        assert self._tcp is not None
        conn, client = self._tcp.accept()
        with conn:
            if not (self._any_client or _loopback(client[0])):
                return
            conn.settimeout(_TCP_TIMEOUT)
            (length,) = struct.unpack("!H", _read_exactly(conn, 2))
            reply = self._answer(_read_exactly(conn, length), tcp=True)
            if reply is not None:
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS message: ignore it
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self._queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
            if question.name in self._failures:
                rcode = self._failures[question.name]
                if rcode is None:
                    return None
                response.set_rcode(rcode)
            elif question.name not in self._zone:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                rrset = self._zone[question.name].get(question.rdtype)
                if rrset is not None and len(rrset) > 0:
                    response.answer.append(rrset.copy())
        limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
        return response.to_wire(max_size=limit, prefer_truncation=True)


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name, origin=dns.name.root)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _read_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection mid-message")
        data += chunk
    return data
