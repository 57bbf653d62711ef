"""Trust between nodes: the signed `X-CAS-Forwarded` header a node puts on a forwarded request.

A node that forwards a request to another site signs who it is, where the request goes, who the
original requester is and which of the requester's groups the permissions name, the hop count,
the request id, a timestamp and a nonce, bound to the HTTP method, path and a digest of the
body, with HMAC-SHA256 under the cluster secret. The receiving node verifies the header before
doing anything else; `docs/trust.md` explains why a token and not mutual TLS. This module is
pure (no I/O except `load_cluster_secret`).

Header (one line, fields in this order, nothing else)::

    v2;from=<site>;to=<site>;req=<b64url(requester) | ->;grp=<b64url(JSON groups) | ->;
      hop=<n>;rid=<id>;t=<unix s>;n=<nonce>;sig=<b64url mac>        (one line, no spaces)

The groups are a JSON list of names, sorted, without repeats: at most `MAX_GROUPS` of at most
`MAX_GROUP_BYTES` together, so a token is never longer than `MAX_HEADER_CHARS`. Version `v1`
(the same without `grp`: a requester without groups) is still accepted, so nodes can be
upgraded one at a time; a node signs `v2`.

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
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cas.errors import ForgedRequest
from cas.replay import ReplayCache

__all__ = [
    "BUDGET_HEADER",
    "EWS_PATH",
    "HEADER",
    "MAX_GROUPS",
    "MAX_GROUP_BYTES",
    "MAX_HEADER_CHARS",
    "MIN_SECRET_BYTES",
    "REQUEST_ID_HEADER",
    "VERSION",
    "ForgedRequest",
    "ForwardClaims",
    "PeerTrust",
    "ReplayCache",
    "TooManyGroups",
    "load_cluster_secret",
    "sign_request",
    "verify_request",
]

HEADER = "X-CAS-Forwarded"
BUDGET_HEADER = "X-CAS-Budget-Ms"  # the time left, in milliseconds, for the node forwarded to
REQUEST_ID_HEADER = "X-Request-Id"
EWS_PATH = "/EWS/Exchange.asmx"
VERSION = "v2"
MIN_SECRET_BYTES = 32
MAX_HEADER_CHARS = 4096
MAX_GROUPS = 64
MAX_GROUP_BYTES = 1024  # the JSON list of groups, UTF-8

_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,11}")  # canonical decimal only
_FIELDS = {
    "v1": ("from", "to", "req", "hop", "rid", "t", "n", "sig"),
    "v2": ("from", "to", "req", "grp", "hop", "rid", "t", "n", "sig"),
}
_MAX_HOP = 255
_MAX_REQUESTER_BYTES = 512


class TooManyGroups(ValueError):
    """The requester's groups do not fit in a forwarding token (`MAX_GROUPS`, `MAX_GROUP_BYTES`)."""


def _encode_groups(groups: tuple[str, ...]) -> str:
    return json.dumps(list(groups), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ForwardClaims:
    """What a forwarding node asserts about a request; every field is covered by the MAC.

    `groups` are given in any order and kept sorted, without repeats (one spelling per token).
    `version` is the header version the claims came in, or are signed as."""

    from_site: str
    to_site: str
    requester: str | None
    hop: int
    request_id: str
    issued_at: int
    nonce: str
    groups: tuple[str, ...] = ()
    version: str = VERSION

    def __post_init__(self) -> None:
        groups = tuple(sorted(set(self.groups)))
        object.__setattr__(self, "groups", groups)
        if self.version not in _FIELDS:
            raise ValueError(f"unknown forwarding header version {self.version!r}")
        if groups and self.version == "v1":
            raise ValueError("a v1 forwarding header carries no groups")
        if any(not g or not isinstance(g, str) for g in groups):
            raise ValueError("a group name is text of at least one character")
        if len(groups) > MAX_GROUPS:
            raise TooManyGroups(
                f"the requester's groups do not fit in a forwarding token: {len(groups)} "
                f"groups, at most {MAX_GROUPS}"
            )
        size = len(_encode_groups(groups).encode("utf-8", "surrogatepass"))
        if size > MAX_GROUP_BYTES:
            raise TooManyGroups(
                f"the requester's groups do not fit in a forwarding token: {size} bytes of "
                f"group names, at most {MAX_GROUP_BYTES}"
            )
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
        groups: Sequence[str] = (),
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
            groups=tuple(groups),
        )


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
    return ";".join([claims.version, *(f"{k}={v}" for k, v in fields), f"sig={_b64(mac)}"])


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
    fields = [("from", claims.from_site), ("to", claims.to_site), ("req", requester)]
    if claims.version != "v1":
        groups = _encode_groups(claims.groups).encode("utf-8") if claims.groups else b""
        fields.append(("grp", _b64(groups) if groups else "-"))
    return fields + [
        ("hop", str(claims.hop)),
        ("rid", claims.request_id),
        ("t", str(claims.issued_at)),
        ("n", claims.nonce),
    ]


def _decode_groups(text: str) -> tuple[str, ...]:
    """The groups of a `grp` field: only the spelling `_encode_fields` writes is accepted."""
    if text == "-":
        return ()
    raw = _unb64(text)
    if len(raw) > MAX_GROUP_BYTES:
        raise TooManyGroups(
            f"forwarding token carries {len(raw)} bytes of group names; at most {MAX_GROUP_BYTES}"
        )
    groups = json.loads(raw.decode("utf-8"))
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups are not a list of names")
    if len(groups) > MAX_GROUPS:
        raise TooManyGroups(f"forwarding token carries {len(groups)} groups; at most {MAX_GROUPS}")
    found = tuple(groups)
    if not found or found != tuple(sorted(set(found))) or _encode_groups(found) != raw.decode():
        raise ValueError("groups not in their one spelling")
    return found


def _canonical(claims: ForwardClaims, *, method: str, path: str, body: bytes) -> bytes:
    parts = [
        "cas-forwarded",
        claims.version,
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
        raise ForgedRequest(f"forwarding header longer than {MAX_HEADER_CHARS} characters", 401)
    version, *rest = header.split(";")
    if version not in _FIELDS:
        raise ForgedRequest("unknown forwarding header version", 401)
    pairs = [item.partition("=") for item in rest]
    if [k for k, _, _ in pairs] != list(_FIELDS[version]) or any(not sep for _, sep, _ in pairs):
        raise ForgedRequest("malformed forwarding header", 401)
    values = {k: v for k, _, v in pairs}
    try:
        if not (_DIGITS.fullmatch(values["hop"]) and _DIGITS.fullmatch(values["t"])):
            raise ValueError("not a number")
        requester = None if values["req"] == "-" else _unb64(values["req"]).decode("utf-8")
        groups = _decode_groups(values["grp"]) if "grp" in values else ()
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
            groups=groups,
            version=version,
        )
    except TooManyGroups as exc:
        raise ForgedRequest(str(exc), 401) from exc
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ForgedRequest("malformed forwarding header", 401) from exc
    return claims, values["sig"]
