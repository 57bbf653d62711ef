"""Failures in words: the error under a library's wrapper, said the way an operator would."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from cas.doctor.words import describe_error


def wrapped(cause: BaseException) -> httpx.ConnectError:
    """As httpx raises it: ConnectError from httpcore's, from OSError, from the real cause."""
    try:
        try:
            try:
                raise cause
            except BaseException as exc:
                raise OSError("All connection attempts failed") from exc
        except OSError as exc:
            raise httpx.ConnectError("All connection attempts failed") from exc
    except httpx.ConnectError as exc:
        return exc


def verification(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    error.verify_code, error.verify_message = code, message
    return error


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "connection refused"),
        (ConnectionResetError(104, "reset"), "connection reset by the peer"),
        (socket.gaierror(-2, "Name or service not known"),
         "cannot resolve the host name (Name or service not known)"),
        (verification(20, "unable to get local issuer certificate"),
         "certificate not signed by a trusted CA"),
        (verification(10, "certificate has expired"), "certificate expired"),
        (verification(62, "Hostname mismatch, certificate is not valid for 'x'."),
         "certificate does not name this host (Hostname mismatch, certificate is not valid for 'x')"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
         "connection closed during the TLS handshake"),
    ],
)  # fmt: skip
def test_the_cause_under_the_wrappers_is_named(cause: BaseException, words: str) -> None:
    assert describe_error(wrapped(cause)) == words


def test_a_timeout_names_the_limit_it_ran_into() -> None:
    assert describe_error(httpx.ReadTimeout("timed out"), timeout=2.5) == "no answer within 2.5 s"
    assert describe_error(TimeoutError()) == "timed out"


def test_an_error_without_words_keeps_its_own_message() -> None:
    assert describe_error(ValueError("odd answer")) == "ValueError: odd answer"
    assert describe_error(KeyError()) == "KeyError"
