"""The decoding memo: same bytes reuse the decoded request; nothing else is remembered."""

from __future__ import annotations

import pytest

from cas.codecs.ews import memo
from cas.errors import HostileXml, MalformedRequest
from tests.unit.test_ews_endpoint import availability


def test_the_same_bytes_give_the_same_decoded_request_without_parsing_again(monkeypatch) -> None:
    body = availability(["memo-1@contoso.test"])
    first = memo.decode_availability(memo.decode_envelope(body))
    calls = []
    monkeypatch.setattr(memo, "parse_envelope", lambda b: calls.append(b))
    again = memo.decode_availability(memo.decode_envelope(bytes(body)))  # equal bytes, new object
    assert again is first and calls == []


def test_different_bytes_are_decoded_on_their_own() -> None:
    a = memo.decode_availability(memo.decode_envelope(availability(["memo-a@contoso.test"])))
    b = memo.decode_availability(memo.decode_envelope(availability(["memo-b@contoso.test"])))
    assert [q.address for q in a.mailboxes] == ["memo-a@contoso.test"]
    assert [q.address for q in b.mailboxes] == ["memo-b@contoso.test"]


def test_a_body_that_fails_is_refused_every_time() -> None:
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    for _ in range(3):
        with pytest.raises(HostileXml):
            memo.decode_envelope(hostile)
    for _ in range(2):
        with pytest.raises(MalformedRequest):
            memo.decode_envelope(b"not xml")


def test_large_bodies_are_not_kept(monkeypatch) -> None:
    many = availability([f"somebody-with-a-long-address-{i:03d}@contoso.test" for i in range(100)])
    assert len(many) > memo.MAX_MEMO_BODY
    seen = []
    real = memo.parse_envelope
    monkeypatch.setattr(memo, "parse_envelope", lambda b: seen.append(1) or real(b))
    memo.decode_envelope(many)
    memo.decode_envelope(many)
    assert len(seen) == 2
