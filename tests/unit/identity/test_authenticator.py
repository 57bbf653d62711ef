"""The authenticator every front door asks: doors, schemes, challenges, tokens, and logs."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK

from cas.errors import AuthenticationUnavailable, Unauthorized
from cas.identity.authenticator import Authenticator, IdentityConfigError, build_authenticator
from cas.identity.tokens import JwksKeys, JwtVerifier
from cas.model.projection import Proof, Requester
from sitemap.load import parse_sitemap
from sitemap.model import ClientAuth, JwtIssuer

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def users_file(tmp_path: Path) -> str:
    path = tmp_path / "users.txt"
    path.write_text(f"ann:{FAST.hash(PASSWORD)}:sales\n")
    return str(path)


async def test_lookup_doors_need_credentials_and_discovery_does_not(users_file: str) -> None:
    auth = Authenticator(ClientAuth(users_file=users_file))
    for door in ("ews", "api", "public", "autodiscover"):
        with pytest.raises(Unauthorized, match="Authentication required"):
            await auth.verify_header(None, door)
    for door in ("autodiscover_json", "health"):
        assert await auth.verify_header(None, door) == Requester()


async def test_anonymous_everywhere_when_the_site_map_says_so() -> None:
    auth = Authenticator(ClientAuth(anonymous=True))
    assert (await auth.verify_header(None, "ews")).anonymous


async def test_given_credentials_are_checked_even_at_an_anonymous_door(users_file: str) -> None:
    auth = Authenticator(ClientAuth(users_file=users_file))
    with pytest.raises(Unauthorized):
        await auth.verify_header(basic("ann", "wrong"), "health")
    requester = await auth.verify_header(basic("ann", PASSWORD), "ews")
    assert requester == Requester("ann", frozenset({"sales"}), Proof.PASSWORD_FILE)


async def test_a_warm_request_pays_no_hash(users_file: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    auth = Authenticator(ClientAuth(users_file=users_file))
    await auth.verify_header(basic("ann", PASSWORD), "ews")
    checks = auth.passwords[0]

    async def no_more(username: str, password: str) -> Requester | None:
        raise AssertionError("the password was checked again")

    monkeypatch.setattr(checks, "verify", no_more)
    assert (await auth.verify_header(basic("ann", PASSWORD), "ews")).username == "ann"


async def test_a_changed_users_file_takes_effect_even_for_remembered_logins(
    users_file: str,
) -> None:
    """Remembered for a minute, but new groups (or a removed user) count at the next check of
    the file, not when the memory expires."""
    auth = Authenticator(ClientAuth(users_file=users_file, cache_seconds=3600))
    assert (await auth.verify_header(basic("ann", PASSWORD), "ews")).groups == {"sales"}
    Path(users_file).write_text(f"ann:{FAST.hash(PASSWORD)}:sales,helpdesk\n")
    assert auth.users_file is not None
    auth.users_file.check_seconds = 0  # the next request looks at the file
    assert (await auth.verify_header(basic("ann", PASSWORD), "ews")).groups == {
        "sales",
        "helpdesk",
    }
    Path(users_file).write_text("# nobody\n")
    with pytest.raises(Unauthorized):
        await auth.verify_header(basic("ann", PASSWORD), "ews")


def test_challenges_name_the_schemes_accepted(users_file: str) -> None:
    issuer = JwtIssuer(issuer="i", audience="a", jwks_url="https://id.test/keys")
    assert Authenticator(ClientAuth(users_file=users_file, realm="Contoso")).challenge() == {
        "WWW-Authenticate": 'Basic realm="Contoso", charset="UTF-8"'
    }
    both = Authenticator(ClientAuth(users_file=users_file, jwt=issuer)).challenge()
    assert (
        both["WWW-Authenticate"].startswith("Basic ")
        and ', Bearer realm="' in both["WWW-Authenticate"]
    )
    only_tokens = Authenticator(ClientAuth(jwt=issuer))
    assert only_tokens.challenge()["WWW-Authenticate"] == 'Bearer realm="CAS availability"'


async def test_a_scheme_not_configured_is_refused_with_a_hint(users_file: str) -> None:
    with pytest.raises(Unauthorized, match="use Basic"):
        await Authenticator(ClientAuth(users_file=users_file)).verify_header("Bearer a.b.c", "ews")


def test_a_broken_users_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_text("ann:plain\n")
    with pytest.raises(IdentityConfigError, match=r"line 1 \(ann\)"):
        Authenticator(ClientAuth(users_file=str(tmp_path / "users.txt")))


async def test_refusals_log_the_user_but_never_the_password(
    users_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = Authenticator(ClientAuth(users_file=users_file))
    with pytest.raises(Unauthorized) as caught:
        await auth.verify_header(basic("ann", "hunter2-guess"), "ews")
    assert "'ann'" in caplog.text
    assert "hunter2-guess" not in caplog.text and "hunter2-guess" not in caught.value.message


def test_a_reload_keeps_the_authenticator_when_auth_did_not_change(users_file: str) -> None:
    text = f"auth: {{users_file: {users_file}}}\nsites: [{{name: eu}}]\n"
    first = build_authenticator(parse_sitemap(text, "s.yaml"))
    assert build_authenticator(parse_sitemap(text, "s.yaml"), first) is first
    other = text.replace("users_file", "cache_seconds: 5, users_file")
    assert build_authenticator(parse_sitemap(other, "s.yaml"), first) is not first


# --- bearer tokens, with keys the test makes ---------------------------------------------------

ISSUER = JwtIssuer(
    issuer="https://id.contoso.test", audience="cas", jwks_url="https://id.contoso.test/keys"
)


class HeldKeys(JwksKeys):
    """Keys given by the test instead of fetched (the fetch is tested against a server)."""

    def __init__(self, keys: dict[str | None, PyJWK]) -> None:
        super().__init__("https://unused.test/keys")
        self.held = keys

    async def key(self, kid: str | None) -> PyJWK | None:
        if not self.held:
            raise AuthenticationUnavailable("no keys")
        return self.held.get(kid)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, **changes: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER.issuer, "aud": "cas", "exp": now + 300, "iat": now,
        "preferred_username": "ann@contoso.test", "groups": ["sales", "eu-staff"],
    }  # fmt: skip
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def verifier(key: rsa.RSAPrivateKey) -> JwtVerifier:
    public = PyJWK.from_dict(
        {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}
    )
    return JwtVerifier(ISSUER, HeldKeys({"k1": public}))


async def test_a_valid_token_names_the_user_and_groups(signing_key: rsa.RSAPrivateKey) -> None:
    requester, expires = await verifier(signing_key).verify(token(signing_key))
    assert requester == Requester("ann@contoso.test", frozenset({"sales", "eu-staff"}), Proof.JWT)
    assert expires > time.time()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "https://evil.test"}, "another issuer"),
        ({"exp": None}, "required claim"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"preferred_username": None, "sub": None}, "names no user"),
    ],
)
async def test_bad_tokens_are_refused_with_the_reason(
    signing_key: rsa.RSAPrivateKey, changes: dict[str, object], words: str
) -> None:
    with pytest.raises(Unauthorized, match=words):
        await verifier(signing_key).verify(token(signing_key, **changes))


async def test_tokens_signed_otherwise_are_refused(signing_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="signature"):
        await verifier(signing_key).verify(token(other))
    unsigned = jwt.encode(
        {"iss": ISSUER.issuer, "aud": "cas", "exp": 2**31}, None, algorithm="none"
    )
    with pytest.raises(Unauthorized, match="algorithm"):
        await verifier(signing_key).verify(unsigned)
    # a shared-secret token (the classic key-confusion attack) is refused by its algorithm
    hs = jwt.encode({"iss": ISSUER.issuer, "aud": "cas", "exp": 2**31}, "k" * 32, algorithm="HS256")
    with pytest.raises(Unauthorized, match="algorithm"):
        await verifier(signing_key).verify(hs)


async def test_an_unknown_key_id_is_refused(signing_key: rsa.RSAPrivateKey) -> None:
    stranger = jwt.encode(
        {"iss": ISSUER.issuer, "aud": "cas", "exp": 2**31, "sub": "x"}, signing_key,
        algorithm="RS256", headers={"kid": "k9"},
    )  # fmt: skip
    with pytest.raises(Unauthorized, match="unknown key"):
        await verifier(signing_key).verify(stranger)
