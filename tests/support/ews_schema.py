"""Validate EWS response bodies against the published EWS schema (tests/data/ews/schema/).

The schema is loaded once per process. `validate_ews_body(envelope_bytes)` checks the first child
of the SOAP Body and raises AssertionError with lxml's error log; unit tests use it on codec
output and integration tests on live responses. Set CAS_EWS_SCHEMA_DIR to use another copy.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path

from lxml import etree

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
# tests/support/ -> tests/ -> data/ews/schema (see the README there for where the files come from)
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "ews" / "schema"


def schema_dir() -> Path:
    return Path(os.environ.get("CAS_EWS_SCHEMA_DIR") or DEFAULT_SCHEMA_DIR).resolve()


@lru_cache(maxsize=1)
def ews_schema() -> etree.XMLSchema:
    """messages.xsd (which imports types.xsd), parsed once."""
    path = schema_dir() / "messages.xsd"
    if not path.is_file():
        raise FileNotFoundError(f"EWS schema not found at {path} (set CAS_EWS_SCHEMA_DIR)")
    return etree.XMLSchema(etree.parse(str(path)))


def soap_body_child(envelope_bytes: bytes) -> etree._Element:
    """The first element inside the SOAP Body of an envelope."""
    root = etree.fromstring(envelope_bytes)
    assert root.tag == f"{{{SOAP_NS}}}Envelope", f"not a SOAP 1.1 envelope: {root.tag}"
    body = root.find(f"{{{SOAP_NS}}}Body")
    assert body is not None, "the envelope has no Body"
    first = next((c for c in body if isinstance(c.tag, str)), None)
    assert first is not None, "the SOAP Body is empty"
    return first


def validate_ews_body(envelope_bytes: bytes) -> None:
    """Raise AssertionError unless the Body's first child is valid against messages.xsd."""
    first = soap_body_child(envelope_bytes)
    assert first.tag != f"{{{SOAP_NS}}}Fault", "a SOAP Fault is not covered by the EWS schema"
    document = etree.ElementTree(copy.deepcopy(first))
    schema = ews_schema()
    if not schema.validate(document):
        log = "\n".join(str(error) for error in schema.error_log)
        raise AssertionError(f"{etree.QName(first).localname} is not schema-valid:\n{log}")


__all__ = ["ews_schema", "schema_dir", "soap_body_child", "validate_ews_body"]
