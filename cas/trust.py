"""Trust between nodes: the signed `X-CAS-Forwarded` header a node puts on a forwarded request.

A node that forwards a request to another site signs who it is, where the request goes, who the
original requester is, the hop count, the request id, a timestamp and a nonce, bound to the HTTP
method, path and a digest of the body, with HMAC-SHA256 under the cluster secret. The receiving
node verifies the header before doing anything else; `docs/trust.md` explains why a token and
not mutual TLS. This module is pure (no I/O except `load_cluster_secret`).

Header (one line, fields in this order, nothing else)::

    v1;from=<site>;to=<site>;req=<b64url(requester) | ->;hop=<n>;rid=<id>;t=<unix s>;
      n=<nonce>;sig=<b64url mac>                                     (one line, no spaces)

The MAC covers a canonical, length-prefixed encoding of the version, every claim, the method, the
path and sha256(body), so no field can move into another. Failures raise `ForgedRequest` carrying
the HTTP status to answer with: 401 when the header is missing, malformed or expired; 403 when
it is well formed but not ours to accept (bad MAC, wrong destination, replayed nonce).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cas.errors import CasError

__all__ = [
    "BUDGET_HEADER",
    "EWS_PATH",
    "HEADER",
    "MIN_SECRET_BYTES",
    "REQUEST_ID_HEADER",
    "VERSION",
    "ForgedRequest",
    "ForwardClaims",
    "PeerTrust",
    "ReplayCache",
    "load_cluster_secret",
    "sign_request",
    "verify_request",
]

HEADER = "X-CAS-Forwarded"
BUDGET_HEADER = "X-CAS-Budget-Ms"  # the time left, in milliseconds, for the node forwarded to
REQUEST_ID_HEADER = "X-Request-Id"
EWS_PATH = "/EWS/Exchange.asmx"
VERSION = "v1"
MIN_SECRET_BYTES = 32
MAX_HEADER_CHARS = 2048

_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,11}")  # canonical decimal only
_FIELDS = ("from", "to", "req", "hop", "rid", "t", "n", "sig")
_MAX_HOP = 255
_MAX_REQUESTER_BYTES = 512


class ForgedRequest(CasError):
    """A forwarded request that must not be acted on; `http_status` is 401 or 403."""

    def __init__(self, reason: str, http_status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class ForwardClaims:
    """What a forwarding node asserts about a request; every field is covered by the MAC."""

    from_site: str
    to_site: str
    requester: str | None
    hop: int
    request_id: str
    issued_at: int
    nonce: str

    def __post_init__(self) -> None:
        for name in ("from_site", "to_site"):
            if not _SITE.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a valid site name")
        if self.requester is not None and not (
            0 < len(self.requester.encode("utf-8")) <= _MAX_REQUESTER_BYTES
        ):
            raise ValueError("requester must be 1..512 bytes of UTF-8, or None")
        if isinstance(self.hop, bool) or not 0 <= self.hop <= _MAX_HOP:
            raise ValueError(f"hop must be 0..{_MAX_HOP}, not {self.hop!r}")
        if not _REQUEST_ID.fullmatch(self.request_id):
            raise ValueError(f"request_id {self.request_id!r} is not 1..64 url-safe characters")
        if isinstance(self.issued_at, bool) or not 0 <= self.issued_at < 10**12:
            raise ValueError(f"issued_at {self.issued_at!r} is not a unix time in seconds")
        if not _NONCE.fullmatch(self.nonce):
            raise ValueError("nonce must be 16..64 url-safe characters")

    @classmethod
    def create(
        cls,
        *,
        from_site: str,
        to_site: str,
        requester: str | None,
        hop: int,
        request_id: str,
        now: int | None = None,
    ) -> ForwardClaims:
        """Fresh claims for one forwarded request: the current time and a random nonce."""
        return cls(
            from_site=from_site,
            to_site=to_site,
            requester=requester,
            hop=hop,
            request_id=request_id,
            issued_at=int(time.time()) if now is None else now,
            nonce=secrets.token_urlsafe(18),
        )


class ReplayCache:
    """Nonces accepted in the last `window_seconds`, per node, bounded in memory.

    `seen(nonce, now)` answers whether the nonce was recorded and not yet expired, and records it
    if not. Expired entries are evicted as time passes; when `max_entries` live entries remain,
    the cache refuses new ones (ForgedRequest 403) instead of growing: under such a flood,
    refusing is safer than forgetting a nonce that may still be replayed.
    """

    def __init__(self, window_seconds: int, *, max_entries: int = 100_000) -> None:
        if window_seconds <= 0 or max_entries <= 0:
            raise ValueError("window_seconds and max_entries must be positive")
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._expiry: dict[str, int] = {}  # insertion order ~ expiry order
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, nonce: str, now: int) -> bool:
        with self._lock:
            self._evict(now)
            expiry = self._expiry.get(nonce)
            if expiry is not None and expiry > now:
                return True
            if expiry is None and len(self._expiry) >= self.max_entries:
                self._evict(now, full_sweep=True)
                if len(self._expiry) >= self.max_entries:
                    raise ForgedRequest("replay cache full", 403)
            self._expiry.pop(nonce, None)
            self._expiry[nonce] = now + self.window_seconds
            return False

    def _evict(self, now: int, *, full_sweep: bool = False) -> None:
        if full_sweep:  # the clock may have stepped back: order is then only approximate
            self._expiry = {n: e for n, e in self._expiry.items() if e > now}
            return
        while self._expiry:
            nonce, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[nonce]


def load_cluster_secret(path: str | Path) -> list[bytes]:
    """The secrets in `path`, one per line, current first; `#` lines and blank lines skipped."""
    path = Path(path)
    found: list[bytes] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{path}:{number}: secret is {len(line)} bytes, need at least {MIN_SECRET_BYTES}"
            )
        found.append(line)
    if not found:
        raise ValueError(f"{path}: no secret found (one per line, at least 32 bytes)")
    return found


def sign_request(
    secret: bytes | Sequence[bytes], claims: ForwardClaims, *, method: str, path: str, body: bytes
) -> str:
    """The `X-CAS-Forwarded` header value for `claims` on this request (first key signs)."""
    key = _keys(secret)[0]
    fields = _encode_fields(claims)
    mac = _mac(key, claims, method=method, path=path, body=body)
    return ";".join([VERSION, *(f"{k}={v}" for k, v in fields), f"sig={_b64(mac)}"])


def verify_request(
    secret: bytes | Sequence[bytes],
    header: str | None,
    *,
    method: str,
    path: str,
    body: bytes,
    own_site: str,
    now: int,
    replay: ReplayCache,
    max_skew: int = 30,
) -> ForwardClaims:
    """The claims of a genuine, fresh, first-seen header addressed to `own_site`.

    Checks, in order: shape (401), MAC under any of the keys (403), destination (403), clock skew
    (401 "expired"), replay (403). Only a request passing all of them reaches the replay cache,
    so forgeries cannot fill it. `replay.window_seconds` must cover 2 * max_skew.
    """
    keys = _keys(secret)
    if replay.window_seconds < 2 * max_skew:
        raise ValueError("replay window must be at least 2 * max_skew")
    claims, signature = _parse(header)
    for key in keys:
        expected = _b64(_mac(key, claims, method=method, path=path, body=body))
        if hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            break
    else:
        raise ForgedRequest("bad signature", 403)
    if claims.to_site != own_site:
        raise ForgedRequest(f"addressed to site {claims.to_site!r}", 403)
    if abs(now - claims.issued_at) > max_skew:
        raise ForgedRequest("expired", 401)
    if replay.seen(claims.nonce, now):
        raise ForgedRequest("replayed", 403)
    return claims


class PeerTrust:
    """One node's side of the trust: its secrets, its site, its replay cache and its clock.

    `verify(...)` is `verify_request` with those filled in; `sign(...)` signs with the current
    (first) secret. Build one per node at startup; the replay cache lives as long as it does.
    """

    def __init__(
        self,
        secret: bytes | Sequence[bytes],
        own_site: str,
        *,
        max_skew: int = 30,
        replay: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secrets = _keys(secret)
        self.own_site = own_site
        self.max_skew = max_skew
        self.replay = replay if replay is not None else ReplayCache(2 * max_skew)
        self.clock = clock

    def sign(self, claims: ForwardClaims, *, method: str, path: str, body: bytes) -> str:
        return sign_request(self.secrets, claims, method=method, path=path, body=body)

    def verify(self, header: str | None, *, method: str, path: str, body: bytes) -> ForwardClaims:
        return verify_request(
            self.secrets,
            header,
            method=method,
            path=path,
            body=body,
            own_site=self.own_site,
            now=int(self.clock()),
            replay=self.replay,
            max_skew=self.max_skew,
        )


# -- encoding ------------------------------------------------------------------------------------


def _keys(secret: bytes | Sequence[bytes]) -> list[bytes]:
    keys = [bytes(secret)] if isinstance(secret, bytes | bytearray) else [bytes(k) for k in secret]
    if not keys:
        raise ValueError("no cluster secret given")
    if any(len(k) < MIN_SECRET_BYTES for k in keys):
        raise ValueError(f"cluster secrets must be at least {MIN_SECRET_BYTES} bytes")
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict url-safe base64 without padding: the only accepted spelling is the canonical one."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _encode_fields(claims: ForwardClaims) -> list[tuple[str, str]]:
    requester = "-" if claims.requester is None else _b64(claims.requester.encode("utf-8"))
    return [
        ("from", claims.from_site),
        ("to", claims.to_site),
        ("req", requester),
        ("hop", str(claims.hop)),
        ("rid", claims.request_id),
        ("t", str(claims.issued_at)),
        ("n", claims.nonce),
    ]


def _canonical(claims: ForwardClaims, *, method: str, path: str, body: bytes) -> bytes:
    parts = [
        "cas-forwarded",
        VERSION,
        *(value for _, value in _encode_fields(claims)),
        method.upper(),
        path,
        hashlib.sha256(body).hexdigest(),
    ]
    out = bytearray()
    for part in parts:  # length-prefixed, so no boundary can shift between fields
        data = part.encode("utf-8", "surrogatepass")
        out += b"%d:" % len(data) + data + b"\n"
    return bytes(out)


def _mac(key: bytes, claims: ForwardClaims, *, method: str, path: str, body: bytes) -> bytes:
    return hmac.new(key, _canonical(claims, method=method, path=path, body=body), "sha256").digest()


def _parse(header: str | None) -> tuple[ForwardClaims, str]:
    if not header:
        raise ForgedRequest("missing forwarding credentials", 401)
    if len(header) > MAX_HEADER_CHARS or not header.isascii():
        raise ForgedRequest("malformed forwarding header", 401)
    version, *rest = header.split(";")
    if version != VERSION:
        raise ForgedRequest("unknown forwarding header version", 401)
    pairs = [item.partition("=") for item in rest]
    if [k for k, _, _ in pairs] != list(_FIELDS) or any(not sep for _, sep, _ in pairs):
        raise ForgedRequest("malformed forwarding header", 401)
    values = {k: v for k, _, v in pairs}
    try:
        if not (_DIGITS.fullmatch(values["hop"]) and _DIGITS.fullmatch(values["t"])):
            raise ValueError("not a number")
        requester = None if values["req"] == "-" else _unb64(values["req"]).decode("utf-8")
        if len(_unb64(values["sig"])) != hashlib.sha256().digest_size:
            raise ValueError("wrong signature length")
        claims = ForwardClaims(
            from_site=values["from"],
            to_site=values["to"],
            requester=requester,
            hop=int(values["hop"]),
            request_id=values["rid"],
            issued_at=int(values["t"]),
            nonce=values["n"],
        )
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ForgedRequest("malformed forwarding header", 401) from exc
    return claims, values["sig"]
