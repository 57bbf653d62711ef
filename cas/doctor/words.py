"""Failures in words: what `cas doctor` prints instead of an exception's class name.

`describe_error(exc)` walks the exception's chain (`__cause__`, then `__context__`) down to the
socket or TLS error underneath the library's wrapper (httpx, httpcore, redis-py) and says what
happened the way an operator would: "connection refused", "certificate not signed by a trusted
CA", "cannot resolve db.contoso.test". An error it has no words for is given with its own
message. `certificate_words` does the same for a failed certificate verification alone.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Iterator

import httpx

__all__ = ["HOSTNAME_MISMATCH", "certificate_words", "describe_error", "within"]

# OpenSSL's X509_V_ERR_* codes that `SSLCertVerificationError.verify_code` carries.
HOSTNAME_MISMATCH = frozenset({62, 64})  # host name, IP address
_CERTIFICATE_CODES = {
    2: "certificate not signed by a trusted CA (issuer certificate unknown)",
    9: "certificate not valid yet",
    10: "certificate expired",
    18: "self-signed certificate, not from a trusted CA",
    19: "certificate chain ends in a self-signed CA that is not trusted",
    20: "certificate not signed by a trusted CA",
    21: "certificate not signed by a trusted CA (chain incomplete)",
}
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EPIPE: "connection closed by the peer",
}
_CHAIN_LIMIT = 16


def within(seconds: float) -> str:
    """The one phrase for every deadline: "no answer within 2 s"."""
    return f"no answer within {seconds:g} s"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def certificate_words(exc: ssl.SSLCertVerificationError) -> str:
    """Why a certificate was refused (the caller knows the expected name, for a mismatch)."""
    message = str(exc.verify_message or exc.reason or exc).rstrip(".")
    if exc.verify_code in HOSTNAME_MISMATCH:
        return f"certificate does not name this host ({message})"
    return _CERTIFICATE_CODES.get(exc.verify_code, f"certificate refused: {message}")


def _specific(exc: BaseException) -> str | None:
    """Words for one link of the chain, or None when it is only a wrapper."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_words(exc)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | asyncio.IncompleteReadError):
        return "connection closed during the TLS handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "WRONG_VERSION_NUMBER" in str(reason).upper():
            return "TLS handshake failed: the server does not speak TLS on this port"
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the peer"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the HTTP exchange ({exc})"
    return None


def describe_error(exc: BaseException, *, timeout: float | None = None) -> str:
    """What went wrong, in words; `timeout` is the limit a timeout error ran into."""
    for link in _chain(exc):
        words = _specific(link)
        if words is not None:
            return words
    if any(isinstance(link, TimeoutError | httpx.TimeoutException) for link in _chain(exc)):
        return within(timeout) if timeout is not None else "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
