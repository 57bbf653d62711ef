"""Recently decoded requests, by their exact bytes.

Decoding is a pure function of the body, and clients that poll send the same body again (EWS
clients write explicit instants), so the last few decoded requests are kept and reused. Only
small bodies are kept (at most 256 of up to 16 KiB), and only requests that decoded cleanly: a
body that fails any check raises every time it is sent. What is kept is immutable in use; the
lookup itself (directory, cache, backends) runs for every request.
"""

from __future__ import annotations

import functools

from cas.codecs.ews.availability import parse_get_user_availability
from cas.codecs.ews.soap import SoapRequest, parse_envelope
from cas.model.availability import AvailabilityRequest

MAX_MEMO_BODY = 16 * 1024
MEMO_ENTRIES = 256


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _envelope(body: bytes) -> SoapRequest:
    return parse_envelope(body)


def decode_envelope(body: bytes) -> SoapRequest:
    """`parse_envelope(body)`, reusing the result for a body seen recently."""
    if len(body) > MAX_MEMO_BODY:
        return parse_envelope(body)
    return _envelope(body)


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def decode_availability(soap: SoapRequest) -> AvailabilityRequest:
    """`parse_get_user_availability(soap)`, reusing the result for the same decoded envelope.

    SoapRequest hashes by identity, and the envelope memo hands out the same object for the
    same bytes; the cache holds its keys, so identities are never reused while kept.
    """
    return parse_get_user_availability(soap)
