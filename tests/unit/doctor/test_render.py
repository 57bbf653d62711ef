"""Printing a doctor report: whole values on one line each when piped, the same rows as JSON."""

from __future__ import annotations

import io
import json

from cas.doctor.render import exit_status, print_json, print_table, report_document
from cas.doctor.run import CheckResult

LONG = (
    "certificate does not name node-eu-1.eu.contoso.test (it names "
    + ", ".join(f"node-{i}.elsewhere.contoso.test" for i in range(12))
    + ")"
)
RESULTS = [
    CheckResult("eu", "tls", "https://127.0.0.1:8443 (node-eu-1.eu.contoso.test)", False, 3.25, LONG),
    CheckResult("eu", "redis", "redis://127.0.0.1:6379/0", True, 0.4, "PONG in 0.4 ms"),
    CheckResult(None, "dns", "_autodiscover._tcp.contoso.test", True, 12.0, "1 record: a:443 → 127.0.0.1"),
]  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_table_prints_every_value_whole_one_row_per_line_without_colour() -> None:
    out = io.StringIO()
    print_table(RESULTS, out, timeout=10)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b[" not in text
    assert len(LONG) > 200 and "…" not in text
    header = next(line for line in lines if "target" in line)
    assert header.split() == ["site", "check", "target", "status", "ms", "detail"]
    for result in RESULTS:
        (row,) = [line for line in lines if result.target in line]
        assert result.detail in row
        assert f" {result.status} " in row and f"{result.latency_ms:.1f}" in row
    (dns_row,) = [line for line in lines if "_autodiscover" in line]
    assert dns_row.split()[0] == "-"
    assert lines[-1] == "3 checks, 1 failed (deadline 10 s)"


def test_terminal_table_is_coloured_and_keeps_whole_values_by_wrapping() -> None:
    out = Terminal()
    print_table(RESULTS[1:], out, timeout=2.5, color=True)
    text = out.getvalue()
    assert "\x1b[" in text
    assert text.rstrip().endswith("2 checks, all passed (deadline 2.5 s)")


def test_json_document_has_the_same_rows() -> None:
    out = io.StringIO()
    print_json(RESULTS, out, timeout=10)
    document = json.loads(out.getvalue())
    assert document == report_document(RESULTS, timeout=10)
    assert document["ok"] is False and document["timeout_seconds"] == 10
    assert [
        (c["site"], c["kind"], c["target"], c["status"], c["ok"], c["latency_ms"], c["detail"])
        for c in document["checks"]
    ] == [
        (r.site, r.kind, r.target, "ok" if r.ok else "FAIL", r.ok, r.latency_ms, r.detail)
        for r in RESULTS
    ]


def test_exit_status_is_one_when_anything_failed() -> None:
    assert exit_status(RESULTS) == 1
    assert exit_status(RESULTS[1:]) == 0
    assert exit_status([]) == 0
