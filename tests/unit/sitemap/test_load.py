"""Loading a site map: the values a valid file gives, and every problem a broken file reports."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitemap.load import Problem, SitemapError, load_sitemap, parse_sitemap
from sitemap.model import SecretRef, Sitemap, WorkingHoursSpec

DATA = Path(__file__).resolve().parents[2] / "data" / "sitemaps"
ROOT = Path(__file__).resolve().parents[3]


def problems_of(name: str) -> list[Problem]:
    with pytest.raises(SitemapError) as caught:
        load_sitemap(DATA / name)
    return caught.value.problems


# --- valid files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid() -> Sitemap:
    return load_sitemap(DATA / "valid.yaml")


def test_valid_file_gives_its_sites_in_order(valid: Sitemap) -> None:
    assert [s.name for s in valid.sites] == ["eu", "us", "apac"]
    assert valid.domains == ("contoso.test", "fabrikam.test")
    eu = valid.site("eu")
    assert eu.timezone == "Europe/Amsterdam"
    assert eu.nodes == ("https://127.0.0.1:8443", "https://127.0.0.1:8444")
    assert eu.caldav is not None and eu.caldav.password == SecretRef(env="CAS_EU_CALDAV_PASSWORD")
    assert (eu.caldav.url, eu.caldav.username) == ("http://127.0.0.1:5232/", "cas")


def test_site_defaults_apply_when_fields_are_absent(valid: Sitemap) -> None:
    apac = valid.site("apac")
    assert apac.timezone == "UTC" and apac.nodes == () and apac.caldav is None
    assert apac.working_hours == WorkingHoursSpec()


def test_caldav_numbers_and_relative_paths(valid: Sitemap) -> None:
    caldav = valid.site("us").caldav
    assert caldav is not None
    assert caldav.max_connections == 4 and caldav.timeout_seconds == 2.5
    assert caldav.calendar_path == "{local}/"
    assert caldav.verify_tls == str(DATA / "ca.pem")
    assert caldav.password == SecretRef(file=str(DATA / "secrets" / "us-caldav.txt"))


def test_working_hours_accept_unquoted_times_and_any_case_weekdays(valid: Sitemap) -> None:
    hours = valid.site("us").working_hours
    assert hours.days == ("Monday", "Tuesday", "Wednesday", "Thursday")
    assert (hours.start_minute, hours.end_minute) == (9 * 60 + 30, 18 * 60)


def test_auth_and_settings(valid: Sitemap) -> None:
    assert not valid.auth.anonymous
    assert [u.username for u in valid.auth.users] == ["scheduler", "monitor"]
    assert valid.auth.users[0].password == SecretRef(env="CAS_CLIENT_PASSWORD")
    assert dict(valid.settings) == {"window_max_days": 62, "refresh_seconds": 300}


def test_mailbox_with_every_field(valid: Sitemap) -> None:
    ann = valid.lookup("ann@contoso.test")
    assert ann is not None
    assert ann.legacy_dn == "/o=Contoso/ou=EU/cn=Recipients/cn=ann"
    assert ann.aliases == ("anna@contoso.test", "a.example@fabrikam.test")
    assert (ann.display_name, ann.timezone) == ("Ann Example", "Europe/Lisbon")
    assert ann.calendar_url == "http://127.0.0.1:5232/ann/special/"
    assert ann.working_hours == WorkingHoursSpec(("Monday",), 600, 1440)


def test_mailbox_defaults_come_from_its_site_and_the_first_domain(valid: Sitemap) -> None:
    bob = valid.lookup("bob@contoso.test")
    assert bob is not None and bob.kind == "modern"
    assert bob.timezone == "America/New_York"
    assert bob.working_hours == valid.site("us").working_hours
    assert bob.legacy_dn == "/o=contoso/ou=us/cn=Recipients/cn=Bob"


def test_addresses_are_kept_as_written_and_found_ignoring_case(valid: Sitemap) -> None:
    assert valid.lookup("BOB@contoso.TEST").address == "Bob@Contoso.test"  # type: ignore[union-attr]
    assert valid.lookup(" Anna@Contoso.Test ").address == "ann@contoso.test"  # type: ignore[union-attr]
    assert valid.lookup("nobody@contoso.test") is None


def test_csv_directory_rows_join_the_inline_mailboxes(valid: Sitemap) -> None:
    assert len(valid.mailboxes) == 6
    carol = valid.lookup("cc@fabrikam.test")
    assert carol is not None and carol.address == "carol@contoso.test"
    assert carol.aliases == ("carol.c@contoso.test", "cc@fabrikam.test")
    assert (carol.display_name, carol.timezone) == ("Carol Case", "America/Chicago")
    dave = valid.lookup("dave@fabrikam.test")
    assert dave is not None and dave.kind == "legacy" and dave.site == "apac"
    assert dave.timezone == "UTC"  # empty cell: the site's
    erin = valid.lookup("erin@contoso.test")
    assert erin is not None and erin.kind == "modern" and erin.display_name is None
    assert [m.address for m in valid.mailboxes_of("eu")] == [
        "ann@contoso.test",
        "old@contoso.test",
        "erin@contoso.test",
    ]


def test_minimal_file() -> None:
    sitemap = load_sitemap(str(DATA / "minimal.yaml"))
    assert [s.name for s in sitemap.sites] == ["lab"] and sitemap.mailboxes == ()
    assert sitemap.source == str(DATA / "minimal.yaml")


# --- one broken file per kind of problem ----------------------------------------------------

SITE0 = "sites[0] (eu)"
BROKEN = [
    ("unknown_field.yaml", SITE0, "nodez", "unknown field 'nodez' (did you mean 'nodes'?)"),
    ("unknown_top_field.yaml", "(top level)", "site", "unknown field 'site'"),
    ("wrong_type.yaml", SITE0, "caldav.max_connections", "expected a whole number, got the text"),
    ("duplicate_site.yaml", "sites[2] (eu)", "name", "duplicate site name 'eu' (also sites[0]"),
    ("undefined_site.yaml", "mailboxes[0] (ann@contoso.test)", "site", "no site named 'asia'"),
    (
        "duplicate_address.yaml",
        "mailboxes[1] (ANNA@contoso.test)",
        "address",
        "clashes with aliases[0] of mailboxes[0] (ann@contoso.test)",
    ),
    ("no_at_sign.yaml", "mailboxes[0] (ann.contoso.test)", "address", "not a mail address"),
    (
        "foreign_domain.yaml",
        "mailboxes[0] (ann@fabrikam.test)",
        "address",
        "not in domains (contoso.test)",
    ),
    ("bad_url.yaml", "sites[1] (us)", "caldav.url", "not an http(s) URL: 'ftp://x'"),
    ("bad_node_url.yaml", SITE0, "nodes[0]", "not an http(s) URL: '127.0.0.1:8443'"),
    ("bad_timezone.yaml", SITE0, "timezone", "unknown time zone 'Europe/Amsterdamm'"),
    ("bad_working_hours.yaml", SITE0, "working_hours.end", "must be later than start"),
    ("bad_weekday.yaml", SITE0, "working_hours.days[1]", "not a weekday name: 'Funday'"),
    ("bad_time.yaml", SITE0, "working_hours.start", 'not a time of day "HH:MM"'),
    (
        "inlined_secret.yaml",
        SITE0,
        "caldav.password",
        "secret inlined; use password_env or password_file",
    ),
    ("inlined_secret_settings.yaml", "settings", "redis.password", "secret inlined"),
    ("not_positive.yaml", SITE0, "caldav.timeout_seconds", "must be positive"),
    ("bad_placeholder.yaml", SITE0, "caldav.calendar_path", "unknown placeholder {user}"),
    ("bad_site_name.yaml", "sites[0] (Europe West)", "name", "a-z, 0-9 and '-'"),
    ("both_secrets.yaml", "auth", "users[0].password_env", "not both"),
    ("duplicate_key.yaml", "line 4, column 5", "timezone", "duplicate key 'timezone'"),
    ("missing_sites.yaml", "(top level)", "sites", "required field missing"),
    ("missing_csv.yaml", "(top level)", "mailboxes_csv", "cannot read"),
    ("syntax_error.yaml", "line 4, column 10", "", "YAML syntax error: expected ',' or ']'"),
    ("empty.yaml", "line 1, column 1", "", "empty file"),
    ("not_mapping.yaml", "line 1, column 1", "", "expected a mapping at the top level, got a list"),
    ("cost_unknown_site.yaml", SITE0, "costs.asia", "no site named 'asia' (sites: eu, us)"),
    ("cost_to_self.yaml", SITE0, "costs.eu", "the cost of a site to itself is always 0, got 5"),
    ("bad_srv_name.yaml", SITE0, "srv", "not a DNS SRV name"),
    ("bad_redis_url.yaml", SITE0, "redis", "not a Redis URL"),
    ("secret_in_url.yaml", SITE0, "redis", "secret inlined"),
    ("bad_legacy_url.yaml", SITE0, "legacy.url", "not an http(s) URL: 'ftp://old.contoso"),
    ("bad_nameserver.yaml", "dns", "nameservers[0]", "not an IP address: 'localhost'"),
]


@pytest.mark.parametrize(("name", "entry", "field", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_broken_file_reports_one_problem_naming_file_entry_and_field(
    name: str, entry: str, field: str, message: str
) -> None:
    [problem] = problems_of(name)
    assert problem.file == str(DATA / name)
    assert (problem.entry, problem.field) == (entry, field)
    assert message in problem.message


def test_every_kind_of_problem_has_a_fixture() -> None:
    valid = {"valid.yaml", "minimal.yaml", "multisite.yaml"}
    broken = {p.name for p in DATA.glob("*.yaml")} - valid
    covered = {b[0] for b in BROKEN} | {"many_problems.yaml", "bad_csv.yaml"}
    assert broken == covered


def test_problem_line_format() -> None:
    text = (DATA / "bad_url.yaml").read_text()
    with pytest.raises(SitemapError) as caught:
        parse_sitemap(text, "sitemap.yaml")
    assert (
        str(caught.value)
        == "sitemap.yaml: sites[1] (us): caldav.url: not an http(s) URL: 'ftp://x'"
    )


def test_csv_problems_name_the_csv_file_and_its_line() -> None:
    problems = problems_of("bad_csv.yaml")
    csv_file = str(DATA / "bad_directory.csv")
    assert [(p.file, p.entry, p.field) for p in problems] == [
        (csv_file, "line 1 (header)", "mail"),
        (csv_file, "line 2 (bob@contoso.test)", "kind"),
        (csv_file, "line 3 (ann@contoso.test)", "address"),
    ]
    assert f"{DATA / 'bad_csv.yaml'} mailboxes[0] (ann@contoso.test)" in problems[2].message


# --- many problems at once ------------------------------------------------------------------


def test_all_problems_are_reported_not_just_the_first() -> None:
    problems = problems_of("many_problems.yaml")
    found = {(p.entry, p.field) for p in problems}
    assert found == {
        ("(top level)", "nodez"),
        ("(top level)", "settings"),
        ("auth", "anonymous"),
        ("auth", "users[0].password"),
        ("auth", "users[0].password_env"),
        ("sites[0] (eu)", "timezone"),
        ("sites[0] (eu)", "nodes[1]"),
        ("sites[0] (eu)", "working_hours.end"),
        ("sites[1] (us)", "caldav.url"),
        ("sites[1] (us)", "caldav.max_connections"),
        ("sites[1] (us)", "caldav.calendar_path"),
        ("sites[2] (eu)", "name"),
        ("mailboxes[0] (ann@contoso.test)", "kind"),
        ("mailboxes[1] (ann@contoso.test)", "site"),
        ("mailboxes[1] (ann@contoso.test)", "address"),
        ("mailboxes[2] (bob)", "address"),
        ("mailboxes[3] (carol@fabrikam.test)", "colour"),
        ("mailboxes[3] (carol@fabrikam.test)", "address"),
    }
    assert len(problems) == len(found)


def test_error_text_has_one_line_per_problem() -> None:
    with pytest.raises(SitemapError) as caught:
        load_sitemap(DATA / "many_problems.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [str(p) for p in caught.value.problems]
    assert all(line.startswith(f"{DATA / 'many_problems.yaml'}: ") for line in lines)


# --- smaller rules --------------------------------------------------------------------------


def parse_problems(text: str) -> list[str]:
    with pytest.raises(SitemapError) as caught:
        parse_sitemap(text, "s.yaml")
    return [f"{p.entry}: {p.field}: {p.message}" for p in caught.value.problems]


def test_an_alias_repeating_its_own_address_is_reported() -> None:
    [line] = parse_problems(
        "sites: [{name: eu}]\nmailboxes: [{address: a@x.test, site: eu, aliases: [A@X.test]}]"
    )
    assert line == "mailboxes[0] (a@x.test): aliases[0]: 'A@X.test' repeats this mailbox's address"


def test_colliding_default_legacy_dns_are_reported() -> None:
    [line] = parse_problems(
        "domains: [a.test, b.test]\nsites: [{name: eu}]\n"
        "mailboxes: [{address: x@a.test, site: eu}, {address: x@b.test, site: eu}]"
    )
    assert line.startswith("mailboxes[1] (x@b.test): legacy_dn: default legacy DN '/o=a/ou=eu/")


def test_a_password_inside_an_unknown_section_is_still_a_secret() -> None:
    lines = parse_problems("sites: [{name: eu}]\nredis: {url: 'redis://x', password: p}")
    assert lines == [
        "redis: password: secret inlined; use password_env or password_file",
        "(top level): redis: unknown field 'redis'",
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("sites: {eu: {}}", "(top level): sites: expected a list, got a mapping"),
        ("sites: [eu]", "sites[0]: : expected a mapping, got the text 'eu'"),
        ("sites: [{name: eu, nodes: [http://a, http://a/]}]", "nodes[1]: 'http://a/' repeats"),
        ("sites: [{name: eu, caldav: {}}]", "caldav.url: required field missing"),
        ("sites: [{name: eu, caldav: {url: 'http://a', verify_tls: 1}}]", "caldav.verify_tls"),
        ("sites: [{name: eu, caldav: {url: 'http://a', timeout_seconds: true}}]", "expected a "
         "number, got the flag true"),
        ("sites: [{name: eu, working_hours: {days: []}}]", "no working days"),
        ("sites: [{name: eu, working_hours: {end: '24:30'}}]", "working_hours.end: not a time"),
        ("sites: [{name: eu}]\nmailboxes: [{site: eu}]", "mailboxes[0]: address: required"),
        ("sites: [{name: eu}]\nmailboxes: [{address: a@b.c, site: eu, legacy_dn: cn=a}]",
         "legacy_dn: a legacy DN starts with '/o='"),
        ("sites: [{name: eu}]\nauth: {users: [{username: 'a:b', password_env: X}]}",
         "auth: users[0].username: a user name cannot contain ':'"),
        ("sites: [{name: eu}]\nauth: {users: [{username: a, password_env: '1X'}]}",
         "not an environment variable name"),
        ("sites: [{name: eu}]\nauth: {users: [{username: a, password_env: X}, "
         "{username: a, password_env: Y}]}", "users[1].username: duplicate user 'a'"),
        ("sites: [{name: eu}]\ndomains: [contoso.test, 'bad domain']", "domains[1]: not a domain"),
        ("sites: [{name: eu}]\nsettings: {1: x}", "settings: 1: setting names are text"),
        ("sites: [{name: eu}]\nmailboxes: [{address: a@b.c, site: eu, calendar_url: 'x'}]",
         "calendar_url: not an http(s) URL"),
    ],
)  # fmt: skip
def test_rule(snippet: str, expected: str) -> None:
    lines = parse_problems(snippet)
    assert any(expected in line for line in lines), lines


def test_unreadable_file_is_one_problem() -> None:
    [problem] = problems_of("does-not-exist.yaml")
    assert problem.file.endswith("does-not-exist.yaml") and "cannot read" in problem.message


def test_parse_takes_relative_paths_from_base_dir(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("address,site\nz@q.test,eu\n")
    sitemap = parse_sitemap(
        "sites: [{name: eu}]\nmailboxes_csv: people.csv", "<text>", base_dir=tmp_path
    )
    assert [m.address for m in sitemap.mailboxes] == ["z@q.test"]


def test_the_sitemap_package_never_imports_cas() -> None:
    code = (
        "import sys, sitemap.load, sitemap.cli, sitemap.model, sitemap.replica, sitemap.discovery, "
        "caslab.dnsserver\n"
        "bad = [m for m in sys.modules if m == 'cas' or m.startswith('cas.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- never a traceback ----------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
    ["eu", "ann@contoso.test", "http://127.0.0.1:1/", "UTC", "09:00", "modern", "", "password"]
)  # fmt: skip
keys = st.sampled_from(
    ["sites", "mailboxes", "name", "address", "site", "caldav", "url", "nodes", "timezone",
     "working_hours", "days", "start", "end", "aliases", "auth", "users", "settings", "domains",
     "password", "kind", "legacy_dn", "verify_tls", "max_connections", "x"]
)  # fmt: skip
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(keys, documents, max_size=5))
def test_any_structure_gives_a_sitemap_or_problems(document: dict[str, object]) -> None:
    try:
        parse_sitemap(yaml.safe_dump(document), "fuzz.yaml")
    except SitemapError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_sitemap_or_problems(text: str) -> None:
    try:
        parse_sitemap(text, "fuzz.yaml")
    except SitemapError as exc:
        assert exc.problems


def test_anchors_merge_keys_and_x_keys_share_settings() -> None:
    sitemap = parse_sitemap(
        'x-hours: &hours {days: [Monday], start: "09:00"}\n'
        'sites: [{name: eu, working_hours: {<<: *hours, end: "12:00"}}, '
        "{name: us, working_hours: *hours}]",
        "s.yaml",
    )
    assert [s.working_hours for s in sitemap.sites] == [
        WorkingHoursSpec(("Monday",), 540, 720),
        WorkingHoursSpec(("Monday",), 540, 1020),
    ]


@pytest.mark.parametrize("text", ["sites: &x [*x]", "sites: [{name: eu}]\nsettings: &y {a: *y}"])
def test_self_referencing_anchors_do_not_loop(text: str) -> None:
    with contextlib.suppress(SitemapError):
        parse_sitemap(text, "s.yaml")
