"""Untrusted XML: DTDs refused, entities never expanded, nothing fetched, nothing hangs."""

from __future__ import annotations

import time

import pytest

from cas.codecs.ews.xmlsafe import declares_dtd, parse_xml
from cas.errors import HostileXml, MalformedRequest

LAUGHS = "\n".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 "lol">\n'
    f"{LAUGHS}\n]>\n<lolz>&lol9;</lolz>"
)
BILLION_LAUGHS_IN_ATTRIBUTE = BILLION_LAUGHS.replace("<lolz>&lol9;</lolz>", '<lolz a="&lol9;"/>')
XXE_FILE = (
    '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<foo>&xxe;</foo>"
)
XXE_PARAMETER = (
    '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><foo/>'
)
EXTERNAL_DTD = '<?xml version="1.0"?><!DOCTYPE foo SYSTEM "http://127.0.0.1:9/evil.dtd"><foo/>'
PLAIN_DOCTYPE = "<!DOCTYPE Envelope><Envelope/>"
# A comment that looks like an element start hides the DOCTYPE from the pre-scan; the check
# after parsing must still refuse it.
HIDDEN_DOCTYPE = '<!-- <a --><!DOCTYPE foo [<!ENTITY x "y">]><foo>&x;</foo>'


def utf16(text: str) -> bytes:
    return text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode(
        "utf-16"
    )


HOSTILE = {
    "billion laughs": BILLION_LAUGHS.encode(),
    "billion laughs in an attribute": BILLION_LAUGHS_IN_ATTRIBUTE.encode(),
    "billion laughs, UTF-16 with BOM": utf16(BILLION_LAUGHS),
    "billion laughs, UTF-16-BE without BOM": BILLION_LAUGHS.replace(
        '<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16BE"?>'
    ).encode("utf-16-be"),
    "XXE file:///etc/passwd": XXE_FILE.encode(),
    "XXE file, UTF-16": utf16(XXE_FILE),
    "XXE parameter entity": XXE_PARAMETER.encode(),
    "external DTD over the network": EXTERNAL_DTD.encode(),
    "a bare DOCTYPE": PLAIN_DOCTYPE.encode(),
    "a DOCTYPE after a comment that fools the pre-scan": HIDDEN_DOCTYPE.encode(),
    "a DOCTYPE after a UTF-8 BOM": b"\xef\xbb\xbf" + XXE_FILE.encode(),
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_documents_are_refused_quickly_without_expansion(body: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(HostileXml) as caught:
        parse_xml(body)
    assert time.monotonic() - started < 1.0
    message = caught.value.message
    assert "DTD" in message
    assert "root:" not in message and "lollol" not in message
    assert caught.value.code == "ErrorSchemaValidation"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<a/>", False),
        (b'<?xml version="1.0"?><!-- hi --><a/>', False),
        (PLAIN_DOCTYPE.encode(), True),
        (b"<?xml version='1.0'?>\n<!DOCTYPE x><x/>", True),
        (utf16(XXE_FILE), True),
        (b"<a>text mentioning &lt;!DOCTYPE&gt;</a>", False),
        (b"<a><![CDATA[<!DOCTYPE x>]]></a>", False),
        (HIDDEN_DOCTYPE.encode(), False),  # refused after parsing instead
    ],
)
def test_declares_dtd_looks_only_at_the_prolog(body: bytes, expected: bool) -> None:
    assert declares_dtd(body) is expected


@pytest.mark.parametrize(
    "body",
    [b"", b"   \n\t", b"not xml at all", b"<a><b></a>", b"<a>", b"\x00\x01\x02", b"<?xml?>"],
    ids=["empty", "blank", "text", "mismatched", "unclosed", "binary", "bad-declaration"],
)
def test_not_xml_is_a_malformed_request(body: bytes) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_xml(body)
    assert not isinstance(caught.value, HostileXml)
    assert caught.value.http_status == 400


def test_syntax_errors_carry_line_and_column() -> None:
    with pytest.raises(MalformedRequest, match=r"line 2, column \d+"):
        parse_xml(b"<a>\n<b></a>")


def test_excessive_depth_is_refused_fast() -> None:
    started = time.monotonic()
    with pytest.raises(MalformedRequest, match="depth"):
        parse_xml(b"<a>" * 100_000 + b"</a>" * 100_000)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "iso-8859-1"])
def test_well_formed_documents_in_any_declared_encoding(encoding: str) -> None:
    text = f'<?xml version="1.0" encoding="{encoding}"?><a x="1">Grüße</a>'
    root = parse_xml(text.encode(encoding))
    assert root.tag == "a" and root.get("x") == "1" and root.text == "Grüße"


def test_comments_and_processing_instructions_are_dropped() -> None:
    root = parse_xml(b"<a><!-- c --><?pi x?><b/></a>")
    assert [child.tag for child in root] == ["b"]
