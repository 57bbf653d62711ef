"""The loopback DNS responder: what it answers, over UDP and TCP, and that it stops cleanly."""

from __future__ import annotations

import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from caslab.dnsserver import DnsResponder


def ask(server: DnsResponder, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=server.port, timeout=1.0)


def test_answers_authoritatively_with_the_records_and_ttl_set(responder: DnsResponder) -> None:
    responder.set_srv("_cas._tcp.eu.lab.test", [(1, 5, 8443, "n1.eu.lab.test")], ttl=42)
    reply = ask(responder, "_cas._tcp.eu.lab.test", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    [rrset] = reply.answer
    assert rrset.ttl == 42
    assert [r.to_text() for r in rrset] == ["1 5 8443 n1.eu.lab.test."]


def test_names_are_matched_ignoring_case_and_a_final_dot(responder: DnsResponder) -> None:
    responder.set_a("Node1.Lab.Test.", ["127.0.0.1"])
    assert ask(responder, "node1.lab.test", "A").answer


def test_unknown_names_get_nxdomain_and_missing_types_no_data(responder: DnsResponder) -> None:
    responder.set_a("n1.lab.test", ["127.0.0.1"])
    assert ask(responder, "nobody.lab.test", "A").rcode() == dns.rcode.NXDOMAIN
    reply = ask(responder, "n1.lab.test", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []


def test_fail_heal_remove(responder: DnsResponder) -> None:
    responder.set_a("n1.lab.test", ["127.0.0.1"])
    responder.fail("n1.lab.test")
    assert ask(responder, "n1.lab.test", "A").rcode() == dns.rcode.SERVFAIL
    responder.fail("n1.lab.test", dns.rcode.REFUSED)
    assert ask(responder, "n1.lab.test", "A").rcode() == dns.rcode.REFUSED
    responder.heal("n1.lab.test")
    assert ask(responder, "n1.lab.test", "A").answer
    responder.remove("n1.lab.test")
    assert ask(responder, "n1.lab.test", "A").rcode() == dns.rcode.NXDOMAIN


def test_silence_drops_queries(responder: DnsResponder) -> None:
    responder.set_a("n1.lab.test", ["127.0.0.1"])
    responder.silence("n1.lab.test")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("n1.lab.test", "A"), "127.0.0.1",
                      port=responder.port, timeout=0.2)  # fmt: skip


def test_large_answers_are_truncated_over_udp_and_whole_over_tcp(responder: DnsResponder) -> None:
    responder.set_a("many.lab.test", [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(300)])
    udp = dns.query.udp(
        dns.message.make_query("many.lab.test", "A", use_edns=False),
        "127.0.0.1",
        port=responder.port,
        timeout=1.0,
        ignore_trailing=True,
    )
    assert udp.flags & dns.flags.TC
    [rrset] = ask(responder, "many.lab.test", "A", tcp=True).answer
    assert len(rrset) == 300


def test_queries_are_recorded(responder: DnsResponder) -> None:
    ask(responder, "a.lab.test", "A")
    ask(responder, "_x._tcp.lab.test", "SRV", tcp=True)
    assert responder.queries == [("a.lab.test.", "A"), ("_x._tcp.lab.test.", "SRV")]


def test_garbage_is_ignored_and_the_responder_keeps_serving(responder: DnsResponder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00not dns", ("127.0.0.1", responder.port))
    with socket.create_connection(("127.0.0.1", responder.port), timeout=1) as sock:
        sock.sendall(b"\x00")  # half a length prefix, then hang up
    responder.set_a("n1.lab.test", ["127.0.0.1"])
    assert ask(responder, "n1.lab.test", "A").answer


def test_only_loopback_addresses_can_be_served() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        DnsResponder(host="0.0.0.0")


def test_stop_ends_the_thread_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    server = DnsResponder().start()
    port = server.port
    assert len(set(threading.enumerate()) - before) == 1
    server.stop()
    server.stop()  # twice is fine
    assert set(threading.enumerate()) - before == set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # free again
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


def test_a_context_manager_starts_and_stops() -> None:
    with DnsResponder() as server:
        server.set_aaaa("n1.lab.test", ["::1"])
        [rrset] = ask(server, "n1.lab.test", "AAAA").answer
        assert rrset.rdtype == dns.rdatatype.AAAA
    assert server._thread is None
