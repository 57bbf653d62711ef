"""The node-to-node token: genuine requests pass once; anything altered, stale or replayed fails."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.trust import (
    MAX_GROUP_BYTES,
    MAX_GROUPS,
    MAX_HEADER_CHARS,
    ForgedRequest,
    ForwardClaims,
    PeerTrust,
    ReplayCache,
    TooManyGroups,
    load_cluster_secret,
    sign_request,
    verify_request,
)

KEY = b"k" * 32
OLD_KEY = b"o" * 40
OTHER_KEY = b"x" * 32
NOW = 1_750_000_000
BODY = b"<soap:Envelope>...</soap:Envelope>"
PATH = "/EWS/Exchange.asmx"


def claims(**changes: object) -> ForwardClaims:
    base = ForwardClaims(
        from_site="eu",
        to_site="us",
        requester="alice@eu.example",
        hop=1,
        request_id="r-123",
        issued_at=NOW,
        nonce="n" * 24,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def sign(c: ForwardClaims | None = None, key: bytes = KEY, **request: object) -> str:
    options: dict[str, object] = {"method": "POST", "path": PATH, "body": BODY} | request
    return sign_request(key, c or claims(), **options)  # type: ignore[arg-type]


def verify(header: str | None, *, keys: object = KEY, **overrides: object) -> ForwardClaims:
    options: dict[str, object] = {
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "own_site": "us",
        "now": NOW,
        "replay": ReplayCache(60),
    } | overrides
    return verify_request(keys, header, **options)  # type: ignore[arg-type]


def rejected(header: str | None, status: int, **overrides: object) -> str:
    with pytest.raises(ForgedRequest) as caught:
        verify(header, **overrides)
    assert caught.value.http_status == status
    return caught.value.reason


def test_round_trip_returns_the_signed_claims() -> None:
    assert verify(sign()) == claims()


def test_header_shape() -> None:
    header = sign()
    assert header.startswith("v2;from=eu;to=us;req=YWxpY2VAZXUuZXhhbXBsZQ;grp=-;hop=1;rid=r-123;")
    assert ";t=1750000000;n=nnnnnnnnnnnnnnnnnnnnnnnn;sig=" in header


def test_groups_travel_sorted_once_each_as_a_json_list() -> None:
    header = sign(claims(groups=("sales", "Managers", "sales", "zoë")))
    grp = header.split(";grp=", 1)[1].split(";", 1)[0]
    assert base64.urlsafe_b64decode(grp + "=" * (-len(grp) % 4)).decode() == (
        '["Managers","sales","zoë"]'
    )
    assert verify(header).groups == ("Managers", "sales", "zoë")


def test_a_v1_token_of_an_older_node_is_still_accepted_without_groups() -> None:
    old = claims(version="v1")
    header = sign(old)
    assert header.startswith("v1;from=eu;to=us;req=YWxpY2VAZXUuZXhhbXBsZQ;hop=1;rid=r-123;")
    assert verify(header) == old and verify(header).groups == ()
    with pytest.raises(ValueError):
        claims(version="v1", groups=("sales",))


def test_too_many_groups_are_refused_when_signing_and_when_verifying() -> None:
    with pytest.raises(TooManyGroups, match=f"at most {MAX_GROUPS}"):
        claims(groups=tuple(f"g{i}" for i in range(MAX_GROUPS + 1)))
    with pytest.raises(TooManyGroups, match=f"at most {MAX_GROUP_BYTES}"):
        claims(groups=tuple(f"{i:02d}" + "x" * 60 for i in range(20)))
    # a token made by hand with 65 groups: refused by name, before its signature is checked
    names = sorted(f"g{i:02d}" for i in range(MAX_GROUPS + 1))
    grp = base64.urlsafe_b64encode(json.dumps(names, separators=(",", ":")).encode())
    header = sign().replace(";grp=-;", f";grp={grp.decode().rstrip('=')};")
    assert "groups" in rejected(header, 401) and str(MAX_GROUPS) in rejected(header, 401)


def test_the_largest_token_fits_the_header_limit() -> None:
    per_group = (MAX_GROUP_BYTES - 2) // MAX_GROUPS - 3  # the JSON list's quotes and commas
    largest = claims(
        from_site="a" * 63,
        to_site="us",
        requester="é" * 256,  # 512 bytes of UTF-8
        hop=255,
        request_id="r" * 64,
        issued_at=10**12 - 1,
        nonce="n" * 64,
        groups=tuple(f"{i:02d}" + "g" * (per_group - 2) for i in range(MAX_GROUPS)),
    )
    header = sign(largest)
    assert len(header) <= MAX_HEADER_CHARS
    assert verify(header, own_site="us", now=10**12 - 1) == largest


@pytest.mark.parametrize(
    "groups_json",
    [b'["b","a"]', b'["a","a"]', b"[]", b'["a", "b"]', b'{"a":1}', b"[1]", b'"a"', b'[""]'],
)
def test_groups_in_any_other_spelling_are_401(groups_json: bytes) -> None:
    grp = base64.urlsafe_b64encode(groups_json).decode().rstrip("=")
    rejected(sign().replace(";grp=-;", f";grp={grp};"), 401)


def test_no_requester_round_trips_as_dash() -> None:
    header = sign(claims(requester=None))
    assert ";req=-;" in header
    assert verify(header).requester is None


def test_unicode_requester_round_trips() -> None:
    assert verify(sign(claims(requester="zoë@exämple.org"))).requester == "zoë@exämple.org"


def test_create_fills_time_and_a_fresh_nonce() -> None:
    a = ForwardClaims.create(
        from_site="eu", to_site="us", requester=None, hop=1, request_id="r", now=NOW
    )
    b = ForwardClaims.create(
        from_site="eu", to_site="us", requester=None, hop=1, request_id="r", now=NOW
    )
    assert a.issued_at == NOW and a.nonce != b.nonce


@pytest.mark.parametrize(
    "field, value",
    [
        ("from_site", "ap"),
        ("requester", "mallory@eu.example"),
        ("requester", None),
        ("hop", 0),
        ("hop", 2),
        ("request_id", "r-124"),
        ("issued_at", NOW + 1),
        ("nonce", "m" * 24),
        ("groups", ("auditors",)),
    ],
)
def test_every_altered_claim_is_refused(field: str, value: object) -> None:
    """A header re-spelled with one claim changed but the original signature is refused."""
    genuine = sign()
    sig = genuine.rsplit(";sig=", 1)[1]
    forged_prefix = sign(claims(**{field: value})).rsplit(";sig=", 1)[0]
    rejected(f"{forged_prefix};sig={sig}", 403)


def test_altered_groups_are_refused() -> None:
    genuine = sign(claims(groups=("sales",)))
    sig = genuine.rsplit(";sig=", 1)[1]
    for groups in ((), ("sales", "auditors"), ("Sales",)):
        forged_prefix = sign(claims(groups=groups)).rsplit(";sig=", 1)[0]
        rejected(f"{forged_prefix};sig={sig}", 403)


def test_altered_destination_is_refused() -> None:
    sig = sign().rsplit(";sig=", 1)[1]
    prefix = sign(claims(to_site="ap")).rsplit(";sig=", 1)[0]
    rejected(f"{prefix};sig={sig}", 403, own_site="ap")


@pytest.mark.parametrize(
    "request_change",
    [
        {"method": "GET"},
        {"path": "/EWS/exchange.asmx"},
        {"path": PATH + "?x=1"},
        {"body": BODY + b" "},
        {"body": b""},
    ],
)
def test_altered_request_is_refused(request_change: dict[str, object]) -> None:
    rejected(sign(), 403, **request_change)


def test_method_case_does_not_matter() -> None:
    assert verify(sign(method="post")) == claims()


def test_wrong_key_is_refused() -> None:
    rejected(sign(key=OTHER_KEY), 403)


def test_header_for_another_site_is_refused() -> None:
    assert "addressed to" in rejected(sign(claims(to_site="ap")), 403)


@pytest.mark.parametrize("offset", [-31, 31, -3600, 10**6])
def test_outside_clock_skew_is_expired(offset: int) -> None:
    assert rejected(sign(), 401, now=NOW + offset) == "expired"


@pytest.mark.parametrize("offset", [-30, 0, 30])
def test_inside_clock_skew_is_accepted(offset: int) -> None:
    assert verify(sign(), now=NOW + offset) == claims()


def test_replay_is_refused() -> None:
    cache = ReplayCache(60)
    header = sign()
    verify(header, replay=cache)
    assert rejected(header, 403, replay=cache, now=NOW + 5) == "replayed"


def test_forged_requests_do_not_reach_the_replay_cache() -> None:
    cache = ReplayCache(60)
    with pytest.raises(ForgedRequest):
        verify(sign(key=OTHER_KEY), replay=cache)
    assert len(cache) == 0
    verify(sign(), replay=cache)


def test_replay_window_must_cover_the_skew() -> None:
    with pytest.raises(ValueError):
        verify(sign(), replay=ReplayCache(30))


def test_rotation_accepts_current_and_previous_keys() -> None:
    keys = [KEY, OLD_KEY]
    assert verify(sign(key=KEY), keys=keys) == claims()
    assert verify(sign(key=OLD_KEY), keys=keys) == claims()
    rejected(sign(key=OTHER_KEY), 403, keys=keys)
    assert sign_request(keys, claims(), method="POST", path=PATH, body=BODY) == sign(key=KEY)


def test_short_or_missing_keys_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        sign(key=b"short")
    with pytest.raises(ValueError):
        verify(sign(), keys=[])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v2;from=eu",
        "v1",
        "v1;from=eu;to=us",
        "garbage",
        "v1;to=us;from=eu;req=-;hop=1;rid=r;t=1;n=nnnnnnnnnnnnnnnn;sig=AAAA",
    ],
)
def test_malformed_headers_are_401(header: str | None) -> None:
    rejected(header, 401)


def test_non_canonical_spellings_are_401() -> None:
    header = sign()
    rejected(header.replace(";hop=1;", ";hop=01;"), 401)
    rejected(header.replace(";sig=", ";sig=A"), 401)
    rejected(header + ";extra=1", 401)
    rejected(header.replace(";req=", ";req= "), 401)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_only_ever_raises_forged_request(text: str) -> None:
    with pytest.raises(ForgedRequest) as caught:
        verify(text)
    assert caught.value.http_status in (401, 403)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=8, max_size=8))
def test_well_shaped_garbage_only_ever_raises_forged_request(values: list[str]) -> None:
    names = ["from", "to", "req", "hop", "rid", "t", "n", "sig"]
    header = "v1;" + ";".join(f"{k}={v}" for k, v in zip(names, values, strict=True))
    with pytest.raises(ForgedRequest):
        verify(header)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=9, max_size=9), st.binary(max_size=80))
def test_well_shaped_v2_garbage_only_ever_raises_forged_request(
    values: list[str], groups: bytes
) -> None:
    names = ["from", "to", "req", "grp", "hop", "rid", "t", "n", "sig"]
    values[3] = base64.urlsafe_b64encode(groups).decode().rstrip("=") if groups else values[3]
    header = "v2;" + ";".join(f"{k}={v}" for k, v in zip(names, values, strict=True))
    with pytest.raises(ForgedRequest):
        verify(header)


def test_replay_cache_forgets_after_the_window() -> None:
    cache = ReplayCache(60)
    assert cache.seen("a", NOW) is False
    assert cache.seen("a", NOW + 59) is True
    assert cache.seen("a", NOW + 60) is False
    assert len(cache) == 1


def test_replay_cache_evicts_expired_entries() -> None:
    cache = ReplayCache(10)
    for i in range(100):
        cache.seen(f"n{i}", NOW + i)
    assert len(cache) == 10


def test_full_replay_cache_refuses_rather_than_grows() -> None:
    cache = ReplayCache(60, max_entries=3)
    for nonce in "abc":
        assert cache.seen(nonce, NOW) is False
    with pytest.raises(ForgedRequest) as caught:
        cache.seen("d", NOW + 1)
    assert caught.value.http_status == 403 and len(cache) == 3
    assert cache.seen("a", NOW + 1) is True  # known nonces still answer
    assert cache.seen("d", NOW + 60) is False  # room again once entries expire


def test_load_cluster_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"# current first\n\n  " + b"a" * 32 + b"  \n" + b"b" * 48 + b"\n")
    assert load_cluster_secret(path) == [b"a" * 32, b"b" * 48]


def test_load_cluster_secret_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"a" * 32 + b"\n# old\ntoo-short\n")
    with pytest.raises(ValueError, match=rf"{path}:3: .*9 bytes"):
        load_cluster_secret(path)


def test_load_cluster_secret_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="no secret"):
        load_cluster_secret(path)


def test_peer_trust_binds_secrets_site_clock_and_cache() -> None:
    clock = [float(NOW)]
    node = PeerTrust([KEY, OLD_KEY], "us", clock=lambda: clock[0])
    header = node.sign(claims(), method="POST", path=PATH, body=BODY)
    assert header == sign(key=KEY)
    assert node.verify(header, method="POST", path=PATH, body=BODY) == claims()
    with pytest.raises(ForgedRequest, match="replayed"):
        node.verify(header, method="POST", path=PATH, body=BODY)
    clock[0] += 31
    fresh = sign(claims(nonce="f" * 24))
    with pytest.raises(ForgedRequest, match="expired"):
        node.verify(fresh, method="POST", path=PATH, body=BODY)
    with pytest.raises(ForgedRequest, match="addressed to"):
        PeerTrust(KEY, "ap", clock=lambda: NOW).verify(fresh, method="POST", path=PATH, body=BODY)
