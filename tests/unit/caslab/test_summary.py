"""What the lab prints: the commands to paste, built from the manifest alone."""

from __future__ import annotations

import io
import json
import shlex
from datetime import UTC, date, datetime
from pathlib import Path

from caslab.summary import next_working_day, paste_commands, print_summary, sample_addresses

MANIFEST = {
    "domain": "contoso.test",
    "dns": {"host": "127.0.0.1", "port": 5353},
    "ca_cert": "/state/tls/ca.pem",
    "sitemap": "/state/sitemap.yaml",
    "client": {"username": "scheduler", "password": "pw with space"},
    "sites": [
        {"name": "eu", "nodes": ["https://127.0.0.1:9001", "https://127.0.0.1:9002"],
         "caldav": {"url": "http://127.0.0.1:5232/"}, "legacy": None, "redis": None},
        {"name": "us", "nodes": ["https://127.0.0.1:9003"],
         "caldav": {"url": "http://127.0.0.1:5233/"},
         "legacy": {"url": "http://127.0.0.1:8080/public/"}, "redis": "redis://127.0.0.1:6379/0"},
    ],
    "mailboxes": [
        {"address": "old@contoso.test", "site": "eu", "kind": "legacy"},
        {"address": "ann@contoso.test", "site": "eu", "kind": "modern"},
        {"address": "bob@contoso.test", "site": "us", "kind": "modern"},
    ],
}  # fmt: skip
SATURDAY = datetime(2026, 12, 5, 15, tzinfo=UTC)


def test_samples_are_modern_mailboxes_of_two_sites() -> None:
    assert sample_addresses(MANIFEST) == ["ann@contoso.test", "bob@contoso.test"]


def test_the_day_shown_is_a_working_day() -> None:
    assert next_working_day(SATURDAY) == date(2026, 12, 7)
    assert next_working_day(datetime(2026, 12, 8, tzinfo=UTC)) == date(2026, 12, 8)


def test_commands_name_the_manifest_the_ca_and_the_login() -> None:
    lookup, curl, exchangelib, doctor = paste_commands(
        MANIFEST,
        Path("/here/lab.json"),
        cas="/venv/bin/cas",
        python="/venv/bin/python",
        now=SATURDAY,
    )
    assert shlex.split(lookup.text) == [
        "/venv/bin/cas", "lookup", "ann@contoso.test", "bob@contoso.test",
        "--start", "2026-12-07", "--days", "1", "--manifest", "/here/lab.json",
    ]  # fmt: skip
    words = shlex.split(curl.text)
    assert words[:4] == ["curl", "-sS", "--cacert", "/state/tls/ca.pem"]
    assert words[words.index("-u") + 1] == "scheduler:pw with space"
    body = json.loads(words[words.index("-d") + 1])
    assert body["schedules"] == ["ann@contoso.test", "bob@contoso.test"]
    assert body["startTime"] == {"dateTime": "2026-12-07T00:00:00", "timeZone": "UTC"}
    assert words[-1] == "https://127.0.0.1:9001/api/v1/availability"
    assert exchangelib.text.startswith(
        "REQUESTS_CA_BUNDLE=/state/tls/ca.pem /venv/bin/python - <<'EOF'\n"
    )
    assert exchangelib.text.endswith("\nEOF")
    program = exchangelib.text.split("\n", 1)[1].rsplit("\nEOF", 1)[0]
    compile(program, "<pasted>", "exec")  # valid Python as printed
    assert "'pw with space'" in program and "EWSDateTime(2026, 12, 7, tzinfo=UTC)" in program
    assert shlex.split(doctor.text) == [
        "/venv/bin/cas",
        "doctor",
        "--config",
        "/state/sitemap.yaml",
    ]


def test_each_other_requester_gets_the_same_lookup_as_itself() -> None:
    manifest = MANIFEST | {
        "requesters": [
            {"username": "scheduler", "password": "pw with space",
             "level": "FreeBusyTimeAndSubjectAndLocation"},
            {"username": "viewer", "password": "v", "level": "FreeBusyTimeOnly"},
        ]
    }  # fmt: skip
    commands = paste_commands(manifest, Path("/here/lab.json"), cas="cas", now=SATURDAY)
    assert [c.title for c in commands][:2] == [
        "ask like a client (DNS SRV, Autodiscover, EWS) for people of two sites",
        "the same, as viewer, who may see times only",
    ]
    assert commands[1].text == commands[0].text + " --user viewer"
    out = io.StringIO()
    print_summary(manifest, Path("/here/lab.json"), Path("/state"), state_kept=False, out=out)
    assert "requester:      viewer / v sees times only" in out.getvalue()


def test_a_piped_summary_keeps_whole_urls() -> None:
    out = io.StringIO()
    print_summary(MANIFEST, Path("/here/lab.json"), Path("/state"), state_kept=False, out=out)
    text = out.getvalue()
    for url in [
        "https://127.0.0.1:9001",
        "http://127.0.0.1:8080/public/",
        "redis://127.0.0.1:6379/0",
    ]:
        assert url in text
    assert "logs:           /state/logs (deleted on exit; --state DIR keeps them)" in text
    assert max(len(line) for line in text.splitlines()) > 80  # not cut at a terminal's width
