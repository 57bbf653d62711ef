"""The multi-site parts of the site map: SRV names, costs, legacy servers, Redis and DNS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitemap.load import Problem, SitemapError, load_sitemap, parse_sitemap
from sitemap.model import DEFAULT_COST, DnsConfig, LegacyServerConfig, SecretRef, Site, Sitemap

DATA = Path(__file__).resolve().parents[2] / "data" / "sitemaps"


@pytest.fixture(scope="module")
def multisite() -> Sitemap:
    return load_sitemap(DATA / "multisite.yaml")


def test_sites_with_static_and_srv_nodes(multisite: Sitemap) -> None:
    eu, us, apac = multisite.sites
    assert eu.nodes == ("https://127.0.0.1:8443", "https://127.0.0.1:8444")
    assert (eu.srv, eu.node_scheme) == ("_cas._tcp.eu.contoso.test", "https")
    assert (us.nodes, us.srv, us.node_scheme) == ((), "_cas._tcp.us.contoso.test.", "http")
    assert (apac.srv, apac.nodes) == (None, ("https://127.0.0.1:9443",))
    assert all(site.has_nodes for site in multisite.sites)


def test_costs_as_written_and_their_defaults(multisite: Sitemap) -> None:
    eu, us, apac = multisite.sites
    assert dict(eu.costs) == {"us": 10, "apac": 50}
    assert dict(us.costs) == {"eu": 10}  # a written cost to itself (0) is not kept
    assert (eu.cost_to("eu"), eu.cost_to("us"), eu.cost_to("apac")) == (0, 10, 50)
    assert (us.cost_to("apac"), apac.cost_to("eu"), apac.cost_to("apac")) == (100, 100, 0)
    assert DEFAULT_COST == 100


def test_legacy_servers(multisite: Sitemap) -> None:
    eu, us, apac = multisite.sites
    assert eu.legacy == LegacyServerConfig(
        url="http://127.0.0.1:8080/public/",
        username="freebusy",
        password=SecretRef(env="CAS_EU_LEGACY_PASSWORD"),
        timeout_seconds=5.0,
    )
    assert us.legacy == LegacyServerConfig(url="https://legacy.us.contoso.test/public/")
    assert us.legacy.timeout_seconds == 10.0 and apac.legacy is None


def test_redis_with_a_password_reference_and_multi_host_forms(tmp_path) -> None:
    from sitemap.load import parse_sitemap
    from sitemap.model import SecretRef

    text = (
        "sites:\n"
        "  - {name: eu, redis: {url: 'rediss://r.eu:6380/2', password_env: EU_REDIS}}\n"
        "  - {name: us, redis: 'redis+sentinel://s1:26379,s2:26379/main/1'}\n"
        "  - {name: ap, redis: 'redis+cluster://c1:7000,c2:7001'}\n"
    )
    eu, us, ap = parse_sitemap(text, "x.yaml", base_dir=tmp_path).sites
    assert (eu.redis, eu.redis_password) == ("rediss://r.eu:6380/2", SecretRef(env="EU_REDIS"))
    assert us.redis == "redis+sentinel://s1:26379,s2:26379/main/1" and us.redis_password is None
    assert ap.redis == "redis+cluster://c1:7000,c2:7001"


def test_redis_urls(multisite: Sitemap) -> None:
    assert [s.redis for s in multisite.sites] == [
        "redis://127.0.0.1:6379/0",
        "unix:///run/redis/us.sock?db=1",
        "rediss://cache.apac.contoso.test:6380",
    ]


def test_dns_settings(multisite: Sitemap) -> None:
    assert multisite.dns == DnsConfig(nameservers=("127.0.0.1",), port=5353, timeout_seconds=1.0)


def test_defaults_when_the_new_keys_are_absent() -> None:
    sitemap = parse_sitemap("sites: [{name: eu}, {name: us}]", "s.yaml")
    eu = sitemap.site("eu")
    assert (eu.srv, eu.node_scheme, dict(eu.costs), eu.legacy, eu.redis) == (
        None, "https", {}, None, None,
    )  # fmt: skip
    assert not eu.has_nodes and eu.cost_to("us") == 100 and sitemap.dns is None
    assert parse_sitemap("dns: {}\nsites: [{name: eu}]", "s.yaml").dns == DnsConfig()
    assert DnsConfig() == DnsConfig(nameservers=(), port=53, timeout_seconds=2.0)


def test_sites_stay_hashable_values() -> None:
    site = parse_sitemap("sites: [{name: eu, costs: {us: 3}}, {name: us}]", "s.yaml").site("eu")
    assert hash(site) == hash(site) and site == Site("eu", costs={"us": 3})


def parse_problems(text: str) -> list[str]:
    with pytest.raises(SitemapError) as caught:
        parse_sitemap(text, "s.yaml")
    return [f"{p.entry}: {p.field}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("sites: [{name: eu, srv: _cas._tcp}]", "srv: not a DNS SRV name"),
        ("sites: [{name: eu, srv: '_cas.tcp.eu.test'}]", "srv: not a DNS SRV name"),
        ("sites: [{name: eu, srv: [x]}]", "srv: expected text, got a list"),
        ("sites: [{name: eu, node_scheme: ftp}]", "node_scheme: expected https or http, got 'ftp'"),
        ("sites: [{name: eu, costs: [us]}]", "costs: expected a mapping of site name to cost"),
        ("sites: [{name: eu, costs: {us: -1}}, {name: us}]", "costs.us: must not be negative"),
        ("sites: [{name: eu, costs: {us: 1.5}}, {name: us}]", "costs.us: expected a whole number"),
        ("sites: [{name: eu, costs: {us: true}}, {name: us}]", "costs.us: expected a whole number"),
        ("sites: [{name: eu, costs: {1: 2}}]", "costs.1: no site named '1' (sites: eu)"),
        ("sites: [{name: eu, legacy: {}}]", "legacy.url: required field missing"),
        ("sites: [{name: eu, legacy: http://x/public/}]", "legacy: expected a mapping"),
        ("sites: [{name: eu, legacy: {url: 'http://x/', timeout_seconds: 0}}]",
         "legacy.timeout_seconds: must be positive"),
        ("sites: [{name: eu, legacy: {url: 'http://x/', password_env: A, password_file: b}}]",
         "legacy.password_env: give password_env or password_file, not both"),
        ("sites: [{name: eu, legacy: {url: 'http://x/', user: a}}]",
         "legacy.user: unknown field 'user'"),
        ("sites: [{name: eu, redis: 'redis://'}]", "redis: not a Redis URL"),
        ("sites: [{name: eu, redis: 'redis://h:99999/0'}]", "redis: not a Redis URL"),
        ("sites: [{name: eu, redis: 'redis://h/zero'}]", "the path of a Redis URL is a database"),
        ("sites: [{name: eu, redis: 'unix://relative.sock'}]", "redis: not a Redis URL"),
        ("sites: [{name: eu, redis: {password_env: X}}]", "redis.url: required field missing"),
        ("sites: [{name: eu, redis: {url: 'redis://h', password: x}}]", "secret inlined"),
        ("sites: [{name: eu, redis: 'redis+sentinel://h:1/'}]", "ends with /<service name>"),
        ("sites: [{name: eu, redis: 'redis+sentinel://h/mymaster'}]", "host:port pairs"),
        ("sites: [{name: eu, redis: 'redis+cluster://h:1,h:2/0'}]", "Cluster URL has no path"),
        ("sites: [{name: eu, redis: 'redis+cluster://u:pw@h:1'}]", "secret inlined"),
        ("sites: [{name: eu, nodes: ['https://u:p@h']}]", "nodes[0]: secret inlined"),
        ("dns: [127.0.0.1]\nsites: [{name: eu}]", "(top level): dns: expected a mapping"),
        ("dns: {nameservers: []}\nsites: [{name: eu}]", "dns: nameservers: empty"),
        ("dns: {nameservers: ['::1', '0::1']}\nsites: [{name: eu}]", "nameservers[1]: '::1' repeats"),
        ("dns: {port: 0}\nsites: [{name: eu}]", "dns: port: must be positive"),
        ("dns: {port: 70000}\nsites: [{name: eu}]", "dns: port: not a port number"),
        ("dns: {timeout_seconds: -1}\nsites: [{name: eu}]", "dns: timeout_seconds: must be"),
        ("dns: {server: x}\nsites: [{name: eu}]", "dns: server: unknown field 'server'"),
        ("dns: {password: x}\nsites: [{name: eu}]", "dns: password: secret inlined"),
    ],
)  # fmt: skip
def test_rule(snippet: str, expected: str) -> None:
    lines = parse_problems(snippet)
    assert any(expected in line for line in lines), lines


def test_a_cost_to_a_site_with_a_bad_entry_still_names_it_once() -> None:
    # 'US' is written as a site name (badly): the cost to it is not reported a second time
    lines = parse_problems("sites: [{name: eu, costs: {US: 1}}, {name: US}]")
    assert lines == ["sites[1] (US): name: site names use only a-z, 0-9 and '-': 'US'"]


def test_legacy_password_is_a_referenced_secret(tmp_path: Path) -> None:
    sitemap = parse_sitemap(
        "sites: [{name: eu, legacy: {url: 'http://x/public/', password_file: s.txt}}]",
        "s.yaml",
        base_dir=tmp_path,
    )
    legacy = sitemap.site("eu").legacy
    assert legacy is not None and legacy.password == SecretRef(file=str(tmp_path / "s.txt"))
    [line] = parse_problems("sites: [{name: eu, legacy: {url: 'http://x/', password: pw}}]")
    assert (
        line == "sites[0] (eu): legacy.password: secret inlined; use password_env or password_file"
    )


def test_ipv6_nameservers_are_kept_in_canonical_form() -> None:
    sitemap = parse_sitemap("dns: {nameservers: ['0:0::1', 127.0.0.1]}\nsites: [{name: eu}]", "s")
    assert sitemap.dns is not None and sitemap.dns.nameservers == ("::1", "127.0.0.1")


scalars = st.none() | st.booleans() | st.integers(-3, 70000) | st.sampled_from(
    ["eu", "us", "_cas._tcp.eu.test", "redis://h/0", "unix:///s", "http://127.0.0.1:1/",
     "127.0.0.1", "https", "", "password"]
)  # fmt: skip
keys = st.sampled_from(
    ["sites", "name", "nodes", "srv", "node_scheme", "costs", "legacy", "redis", "url", "dns",
     "nameservers", "port", "timeout_seconds", "username", "password_env", "eu", "us"]
)  # fmt: skip
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(keys, documents, max_size=5))
def test_any_structure_of_the_new_keys_gives_a_sitemap_or_problems(
    document: dict[str, object],
) -> None:
    try:
        parse_sitemap(yaml.safe_dump(document), "fuzz.yaml")
    except SitemapError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
