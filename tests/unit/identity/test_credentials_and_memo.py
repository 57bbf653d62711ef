"""Reading Authorization headers strictly, and remembering verified credentials briefly."""

from __future__ import annotations

import asyncio
import base64

import pytest

from cas.errors import Unauthorized
from cas.identity.credentials import (
    MAX_HEADER_CHARS,
    BasicCredentials,
    BearerToken,
    read_authorization,
)
from cas.identity.memo import CredentialMemo
from cas.model.projection import Proof, Requester


def basic(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_credentials_are_read_in_utf8() -> None:
    assert read_authorization(basic("Zoë:pä:ss")) == BasicCredentials("Zoë", "pä:ss")
    assert read_authorization("bAsIc " + basic("a:b")[6:]) == BasicCredentials("a", "b")


def test_bearer_token_must_look_like_a_jwt() -> None:
    assert read_authorization("Bearer aa.bb.cc") == BearerToken("aa.bb.cc")
    with pytest.raises(Unauthorized):
        read_authorization("Bearer not-a-jwt")


@pytest.mark.parametrize(
    "header",
    [
        basic("no-colon"),
        basic(":password"),
        basic("user:"),
        basic(b"user:\xff\xfe"),
        basic("user:line\r\nX-Injected: 1"),
        basic("us\x00er:pw"),
        "Basic !!!not-base64!!!",
        "Basic " + "A" * (MAX_HEADER_CHARS + 1),
        "Negotiate abc",
        "",
    ],
)
def test_unusable_headers_are_refused_without_echoing_them(header: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        read_authorization(header)
    assert "pw" not in caught.value.message and "Injected" not in caught.value.message


def test_credentials_never_show_their_secret_in_repr() -> None:
    assert "s3cret" not in repr(BasicCredentials("ann", "s3cret"))
    assert "aa.bb.cc" not in repr(BearerToken("aa.bb.cc"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ANN = Requester("ann", frozenset({"sales"}), Proof.PASSWORD_FILE)


async def test_a_verified_credential_is_remembered_for_ttl_seconds() -> None:
    clock = Clock()
    memo = CredentialMemo(60, clock=clock, wall=clock)
    calls = []

    async def verify() -> tuple[Requester, float | None]:
        calls.append(1)
        return ANN, None

    assert await memo.single_flight("Basic x", verify) == ANN
    clock.now += 59
    assert await memo.single_flight("Basic x", verify) == ANN
    assert len(calls) == 1 and memo.hits == 1
    clock.now += 2
    await memo.single_flight("Basic x", verify)
    assert len(calls) == 2


async def test_a_token_is_not_remembered_past_its_expiry() -> None:
    clock = Clock()
    memo = CredentialMemo(60, clock=clock, wall=clock)

    async def verify() -> tuple[Requester, float | None]:
        return ANN, clock.now + 10

    await memo.single_flight("Bearer t", verify)
    clock.now += 11
    assert memo.get(memo.key("Bearer t")) is None


async def test_failures_are_not_remembered() -> None:
    memo = CredentialMemo(60)
    calls = []

    async def refuse() -> tuple[Requester, float | None]:
        calls.append(1)
        raise Unauthorized("no")

    for _ in range(3):
        with pytest.raises(Unauthorized):
            await memo.single_flight("Basic bad", refuse)
    assert len(calls) == 3 and len(memo) == 0


async def test_concurrent_callers_share_one_verification() -> None:
    memo = CredentialMemo(60)
    started = asyncio.Event()
    release = asyncio.Event()
    calls = []

    async def verify() -> tuple[Requester, float | None]:
        calls.append(1)
        started.set()
        await release.wait()
        return ANN, None

    tasks = [asyncio.create_task(memo.single_flight("Basic y", verify)) for _ in range(5)]
    await started.wait()
    release.set()
    assert await asyncio.gather(*tasks) == [ANN] * 5
    assert len(calls) == 1


async def test_zero_ttl_remembers_nothing_and_size_is_bounded() -> None:
    assert len(CredentialMemo(0)) == 0
    memo = CredentialMemo(0)
    memo.put(memo.key("a"), ANN)
    assert len(memo) == 0
    small = CredentialMemo(60, max_entries=3)
    for name in "abcde":
        small.put(small.key(name), ANN)
    assert len(small) == 3 and small.get(small.key("a")) is None
    assert small.get(small.key("e")) == ANN


def test_keys_are_keyed_hashes_not_the_credential() -> None:
    one, two = CredentialMemo(60), CredentialMemo(60)
    assert b"secret" not in one.key("Basic secret")
    assert one.key("Basic secret") != two.key("Basic secret")  # a fresh key per process
