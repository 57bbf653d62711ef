"""The PIDF schema set of tests/data/pidf/ (RFC 3863 with RFC 4480 and RFC 4479), loaded once
through a wrapper that imports the three namespaces, without network access."""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

from cas.codecs.pidf import DM, PIDF, RPID

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "pidf"


@functools.cache
def pidf_schema() -> etree.XMLSchema:
    wrapper = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
      <xs:import namespace="{PIDF}" schemaLocation="{(SCHEMAS / "pidf.xsd").as_uri()}"/>
      <xs:import namespace="{RPID}" schemaLocation="{(SCHEMAS / "rpid.xsd").as_uri()}"/>
      <xs:import namespace="{DM}" schemaLocation="{(SCHEMAS / "data-model.xsd").as_uri()}"/>
    </xs:schema>"""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser, base_url=str(SCHEMAS) + "/"))
