"""The CalDAV backend's discovery fields: values, defaults, and the checks `sitemap validate` makes."""

from __future__ import annotations

import pytest

from sitemap.load import SitemapError, parse_sitemap


def site_map(caldav: str) -> str:
    return f"sites:\n  - name: eu\n    caldav: {{url: http://127.0.0.1:5232/, {caldav}}}\n"


def caldav_of(text: str):
    config = parse_sitemap(text, "sitemap.yaml").site("eu").caldav
    assert config is not None
    return config


def problems(text: str) -> list[str]:
    with pytest.raises(SitemapError) as caught:
        parse_sitemap(text, "sitemap.yaml")
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


def test_template_is_the_default_and_keeps_its_path() -> None:
    config = caldav_of(site_map('calendar_path: "{local}/work/"'))
    assert (config.discovery, config.calendar_path) == ("template", "{local}/work/")


def test_principal_discovery_with_its_path_and_refresh() -> None:
    config = caldav_of(
        site_map(
            'discovery: principal, principal_path: "remote.php/dav/principals/users/{local}/", '
            "discovery_refresh_seconds: 600"
        )
    )
    assert config.discovery == "principal"
    assert config.principal_path == "remote.php/dav/principals/users/{local}/"
    assert config.discovery_refresh_seconds == 600


def test_search_discovery_defaults() -> None:
    config = caldav_of(site_map("discovery: search"))
    assert config.discovery == "search"
    assert config.discovery_refresh_seconds == 3600


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("discovery: guess", "caldav.discovery: expected one of template, principal, search"),
        (
            'discovery: search, calendar_path: "{address}/x/"',
            "caldav.calendar_path: only read with discovery: template (this site has search)",
        ),
        (
            'principal_path: "{address}/"',
            "caldav.principal_path: only read with discovery: principal (this site has template)",
        ),
        (
            'discovery: principal, principal_path: "{user}/"',
            "caldav.principal_path: unknown placeholder {user}",
        ),
        (
            "discovery_refresh_seconds: 60",
            "caldav.discovery_refresh_seconds: only read with discovery: principal or search",
        ),
        ("discovery: principal, discovery_refresh_seconds: 0", "caldav.discovery_refresh_seconds"),
    ],
)
def test_wrong_discovery_fields_are_reported(fields: str, expected: str) -> None:
    found = problems(site_map(fields))
    assert any(p.startswith(expected) for p in found), found
