"""Printing a doctor report: a table for people, a JSON document for programs, an exit status.

The table has one row per check (site, check, target, status, latency, detail) and a summary
line. Values are printed whole, never cut: on a terminal long cells wrap within its width;
piped or redirected, the console is made as wide as the widest row, so each check stays on
one line for grep. Colours only on a terminal. The JSON document carries the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cas.doctor.run import CheckResult

__all__ = ["COLUMNS", "exit_status", "print_json", "print_table", "report_document", "summary"]

COLUMNS = ("site", "check", "target", "status", "ms", "detail")
NO_SITE = "-"
_PADDING = 2  # rich's default cell padding: one space on each side


def exit_status(results: Sequence[CheckResult]) -> int:
    """0 when every check passed, 1 when any failed."""
    return 0 if all(result.ok for result in results) else 1


def summary(results: Sequence[CheckResult], timeout: float) -> str:
    failures = sum(1 for result in results if not result.ok)
    verdict = "all passed" if failures == 0 else f"{failures} failed"
    return f"{len(results)} checks, {verdict} (deadline {timeout:g} s)"


def _cells(result: CheckResult) -> tuple[str, ...]:
    return (
        result.site or NO_SITE,
        result.kind,
        result.target,
        result.status,
        f"{result.latency_ms:.1f}",
        result.detail,
    )


def _table(results: Sequence[CheckResult]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for name in COLUMNS:
        table.add_column(name, overflow="fold", justify="right" if name == "ms" else "left")
    for result in results:
        cells = list(_cells(result))
        status = Text(cells[3], style="green" if result.ok else "bold red")
        table.add_row(*cells[:3], status, *cells[4:])
    return table


def _width(results: Sequence[CheckResult]) -> int:
    """Wide enough for every cell of every row on one line."""
    rows = [COLUMNS, *(_cells(result) for result in results)]
    widest = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return sum(widest) + _PADDING * len(COLUMNS) + len(COLUMNS)


def print_table(
    results: Sequence[CheckResult], out: TextIO, *, timeout: float, color: bool | None = None
) -> None:
    """The table and its summary; coloured and wrapped only on a terminal (or as `color` says)."""
    if color is None:
        isatty = getattr(out, "isatty", None)
        color = bool(isatty and isatty())
    console = Console(
        file=out,
        force_terminal=color,
        no_color=not color,
        color_system="auto" if color else None,
        width=None if color else max(80, _width(results)),
        highlight=False,
        emoji=False,
    )
    console.print(_table(results))
    console.print(summary(results, timeout), soft_wrap=True)


def report_document(results: Sequence[CheckResult], *, timeout: float) -> dict[str, Any]:
    return {
        "ok": exit_status(results) == 0,
        "timeout_seconds": timeout,
        "checks": [
            {
                "site": result.site,
                "kind": result.kind,
                "target": result.target,
                "status": result.status,
                "ok": result.ok,
                "latency_ms": result.latency_ms,
                "detail": result.detail,
            }
            for result in results
        ],
    }


def print_json(results: Sequence[CheckResult], out: TextIO, *, timeout: float) -> None:
    out.write(json.dumps(report_document(results, timeout=timeout), indent=2, ensure_ascii=False))
    out.write("\n")
