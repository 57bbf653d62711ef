"""Bearer tokens: JWTs of one OpenID Connect issuer, checked with the keys it publishes.

`JwtVerifier.verify(token)` reads the token's header, takes the key its `kid` names from the
issuer's JWKS (fetched from the configured `jwks_url` only: a `jku`, `x5u` or any other URL in
a token is never fetched), and checks the signature with one of the configured asymmetric
algorithms (`none` and shared-secret HMAC are never accepted), then `iss`, `aud`, `exp` (all
required) and `nbf`, with `leeway_seconds` of clock skew.

Keys are kept and fetched again after `KEYS_MAX_AGE` seconds, or sooner when a token names an
unknown `kid` (the issuer rotated), but at most once per `REFETCH_SECONDS`, so tokens with made-up
`kid`s cannot make the node hammer the issuer. A fetch that fails keeps the keys held; with
none held, the token cannot be checked (`AuthenticationUnavailable`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWKError,
    PyJWKSetError,
    PyJWTError,
)

from cas.errors import AuthenticationUnavailable, Unauthorized
from cas.model.projection import Proof, Requester
from sitemap.model import JwtIssuer

__all__ = ["JwksKeys", "JwtVerifier"]

log = logging.getLogger(__name__)

KEYS_MAX_AGE = 600.0
REFETCH_SECONDS = 30.0
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024

_REASONS: list[tuple[type[PyJWTError], str]] = [
    (ExpiredSignatureError, "it has expired"),
    (ImmatureSignatureError, "it is not valid yet"),
    (InvalidAudienceError, "it is for another audience"),
    (InvalidIssuerError, "it is from another issuer"),
    (InvalidSignatureError, "its signature does not verify"),
    (MissingRequiredClaimError, "it lacks a required claim (exp, iss, aud)"),
]


class JwksKeys:
    """The issuer's signing keys by `kid`, fetched from `url` when needed."""

    def __init__(
        self, url: str, *, ca_file: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self.ca_file = ca_file
        self.clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched: float | None = None
        self._tried: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    async def _fetch(self) -> None:
        self._tried = self.clock()
        self.fetches += 1
        try:
            async with httpx.AsyncClient(
                verify=self._verify(), trust_env=False, timeout=FETCH_TIMEOUT,
                follow_redirects=False,
            ) as client, client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:  # fmt: skip
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError("the key set is larger than 1 MiB")
            keys = PyJWKSet.from_dict(json.loads(body)).keys
        except (httpx.HTTPError, ValueError, PyJWKSetError, PyJWKError, OSError) as exc:
            log.warning("JWKS %s not fetched, keeping %d keys: %s", self.url, len(self._keys), exc)
            return
        self._keys = {key.key_id: key for key in keys}
        self._fetched = self.clock()

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key `kid` names (the only key, when the token names none and there is one)."""
        now = self.clock()
        stale = self._fetched is None or now - self._fetched > KEYS_MAX_AGE
        unknown = kid not in self._keys and not (kid is None and len(self._keys) == 1)
        may_refetch = self._tried is None or now - self._tried >= REFETCH_SECONDS
        if (stale or unknown) and may_refetch:
            async with self._lock:
                if self._tried is None or self.clock() - self._tried >= REFETCH_SECONDS:
                    await self._fetch()
        if not self._keys:
            raise AuthenticationUnavailable(
                "The token issuer's keys cannot be fetched; try again later."
            )
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)


class JwtVerifier:
    def __init__(self, issuer: JwtIssuer, keys: JwksKeys | None = None) -> None:
        self.config = issuer
        self.keys = keys or JwksKeys(issuer.jwks_url, ca_file=issuer.ca_file)

    async def verify(self, token: str) -> tuple[Requester, float]:
        """The requester the token names and its expiry (epoch seconds); `Unauthorized`."""
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise Unauthorized("The bearer token is malformed.") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in config.algorithms:
            raise Unauthorized("The bearer token is signed with an algorithm not accepted here.")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("The bearer token is malformed.")
        key = await self.keys.key(kid)
        if key is None:
            raise Unauthorized("The bearer token is signed with an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except PyJWTError as exc:
            reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), None)
            raise Unauthorized(
                f"The bearer token is not valid: {reason or 'unreadable'}."
            ) from None
        return self._requester(claims), float(claims["exp"])

    def _requester(self, claims: dict[str, Any]) -> Requester:
        name = claims.get(self.config.username_claim) or claims.get("sub")
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise Unauthorized(
                f"The bearer token names no user ({self.config.username_claim} or sub)."
            )
        raw = claims.get(self.config.groups_claim, [])
        items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        groups = frozenset(g for g in items if isinstance(g, str) and g.strip())
        return Requester(name, groups, Proof.JWT)
