"""Bearer tokens against a JWKS the test serves over HTTPS on loopback, with keys it makes.

The key server counts what it is asked, so the tests can say how often the node fetched and
that a URL written in a token (`jku`, `x5u`) is never fetched.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cas.app import create_app
from cas.errors import AuthenticationUnavailable, Unauthorized
from cas.identity.tokens import REFETCH_SECONDS, JwksKeys, JwtVerifier
from cas.model.projection import Proof
from cas.settings import load_settings
from cas.sources.base import FakeBackend
from sitemap.load import parse_sitemap
from sitemap.model import JwtIssuer
from tests.support.node import TestCA, ThreadedServer, make_test_ca

ISSUER = "https://id.contoso.test/"
AUDIENCE = "api://cas"


class KeyServer:
    """A JWKS endpoint (and a decoy one) whose keys the test changes, counting requests."""

    def __init__(self) -> None:
        self.keys: dict[str, object] = {}
        self.asked = 0
        self.decoy_asked = 0
        self.status = 200

    def publish(self, kid: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys[kid] = {**jwk, "kid": kid, "use": "sig"}

    def app(self) -> Starlette:
        async def keys(request: Request) -> Response:
            self.asked += 1
            if self.status != 200:
                return Response("down", status_code=self.status)
            return JSONResponse({"keys": list(self.keys.values())})

        async def decoy(request: Request) -> Response:
            self.decoy_asked += 1
            return JSONResponse({"keys": []})

        return Starlette(routes=[Route("/keys", keys), Route("/decoy", decoy)])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("jwks-tls"))


@pytest.fixture
def key_server(tls: TestCA) -> Iterator[tuple[KeyServer, str]]:
    server = KeyServer()
    with ThreadedServer(server.app(), tls) as running:
        yield server, running.url


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(
    key: object, kid: str, algorithm: str = "RS256", headers: dict | None = None, **claims: object
) -> str:  # type: ignore[type-arg]
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now,
            "preferred_username": "ann@contoso.test", "groups": ["sales"], **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid, **(headers or {})})  # type: ignore[arg-type]


def issuer(url: str, tls: TestCA, **changes: object) -> JwtIssuer:
    values: dict[str, object] = {"issuer": ISSUER, "audience": AUDIENCE,
                                 "jwks_url": url + "/keys", "ca_file": str(tls.ca_pem)}  # fmt: skip
    values.update(changes)
    return JwtIssuer(**values)  # type: ignore[arg-type]


async def test_a_token_is_verified_with_the_published_key(
    key_server: tuple[KeyServer, str], tls: TestCA, rsa_key: rsa.RSAPrivateKey
) -> None:
    server, url = key_server
    server.publish("k1", rsa_key)
    verifier = JwtVerifier(issuer(url, tls))
    requester, expires = await verifier.verify(token(rsa_key, "k1"))
    assert (requester.username, requester.groups, requester.proof) == (
        "ann@contoso.test", frozenset({"sales"}), Proof.JWT,
    )  # fmt: skip
    assert expires > time.time() and server.asked == 1
    await verifier.verify(token(rsa_key, "k1", sub="again"))
    assert server.asked == 1  # keys are kept


async def test_ecdsa_keys_when_configured(key_server: tuple[KeyServer, str], tls: TestCA) -> None:
    server, url = key_server
    key = ec.generate_private_key(ec.SECP256R1())
    server.publish("e1", key)
    verifier = JwtVerifier(issuer(url, tls, algorithms=("ES256",)))
    requester, _ = await verifier.verify(token(key, "e1", "ES256"))
    assert requester.username == "ann@contoso.test"
    with pytest.raises(Unauthorized, match="algorithm"):
        await JwtVerifier(issuer(url, tls)).verify(token(key, "e1", "ES256"))  # RS256 only


async def test_a_rotated_key_is_fetched_but_made_up_kids_cannot_hammer_the_issuer(
    key_server: tuple[KeyServer, str], tls: TestCA, rsa_key: rsa.RSAPrivateKey
) -> None:
    server, url = key_server
    server.publish("k1", rsa_key)
    now = [1000.0]
    keys = JwksKeys(url + "/keys", ca_file=str(tls.ca_pem), clock=lambda: now[0])
    verifier = JwtVerifier(issuer(url, tls), keys)
    await verifier.verify(token(rsa_key, "k1"))
    for _ in range(25):  # a burst of tokens naming keys that do not exist
        with pytest.raises(Unauthorized, match="unknown key"):
            await verifier.verify(token(rsa_key, uuid.uuid4().hex))
    assert server.asked == 1
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.publish("k2", new_key)
    now[0] += REFETCH_SECONDS + 1
    requester, _ = await verifier.verify(token(new_key, "k2"))
    assert requester.username == "ann@contoso.test" and server.asked == 2


async def test_urls_in_a_token_are_never_fetched(
    key_server: tuple[KeyServer, str], tls: TestCA, rsa_key: rsa.RSAPrivateKey
) -> None:
    server, url = key_server
    server.publish("k1", rsa_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(other, "k1", headers={"jku": url + "/decoy", "x5u": url + "/decoy"})
    with pytest.raises(Unauthorized, match="signature"):
        await JwtVerifier(issuer(url, tls)).verify(forged)
    assert server.decoy_asked == 0


async def test_keys_out_of_reach_make_tokens_uncheckable_not_refused(
    key_server: tuple[KeyServer, str], tls: TestCA, rsa_key: rsa.RSAPrivateKey
) -> None:
    server, url = key_server
    server.status = 503
    with pytest.raises(AuthenticationUnavailable):
        await JwtVerifier(issuer(url, tls)).verify(token(rsa_key, "k1"))
    untrusted = issuer(url, tls, ca_file=None)  # the system's CAs do not know the test CA
    server.status = 200
    server.publish("k1", rsa_key)
    with pytest.raises(AuthenticationUnavailable):
        await JwtVerifier(untrusted).verify(token(rsa_key, "k1"))


async def test_a_node_takes_bearer_tokens_and_says_so_in_its_challenge(
    key_server: tuple[KeyServer, str], tls: TestCA, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    server, url = key_server
    server.publish("k1", rsa_key)
    text = f"""
domains: [contoso.test]
auth:
  jwt: {{issuer: "{ISSUER}", audience: "{AUDIENCE}", jwks_url: "{url}/keys",
         ca_file: "{tls.ca_pem}", groups_claim: groups}}
sites: [{{name: eu}}]
mailboxes: [{{address: ann@contoso.test, site: eu}}]
"""
    sitemap = parse_sitemap(text, str(tmp_path / "sitemap.yaml"))
    app = create_app(
        load_settings({}, environ={}), sitemap, "eu", backends={"modern": FakeBackend({})}
    )
    body = json.dumps({"schedules": ["ann@contoso.test"],
                       "startTime": {"dateTime": "2024-03-04T00:00:00"},
                       "endTime": {"dateTime": "2024-03-05T00:00:00"}})  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        refused = await client.post("/api/v1/availability", content=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="CAS availability"'
        good = {"Authorization": f"Bearer {token(rsa_key, 'k1')}"}
        answered = await client.post("/api/v1/availability", content=body, headers=good)
        assert answered.status_code == 200, answered.text
        expired = {"Authorization": f"Bearer {token(rsa_key, 'k1', exp=int(time.time()) - 999)}"}
        late = await client.post("/api/v1/availability", content=body, headers=expired)
        assert late.status_code == 401 and "expired" in late.text
        basic = "Basic " + base64.b64encode(b"ann:pw").decode()
        wrong_scheme = await client.post(
            "/api/v1/availability", content=body, headers={"Authorization": basic}
        )
        assert wrong_scheme.status_code == 401 and "use Bearer" in wrong_scheme.text
        asked = server.asked
        server.status = 503
        # a token of a key never published, right after a fetch: refused, the issuer not asked
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        unknown = {"Authorization": f"Bearer {token(fresh, 'k7')}"}
        answer = await client.post("/api/v1/availability", content=body, headers=unknown)
        assert answer.status_code == 401 and "unknown key" in answer.text
        assert server.asked == asked
