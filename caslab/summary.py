"""What `cas lab` prints once it runs: where every part is, and commands that work when pasted.

`paste_commands(manifest, ...)` builds the commands from the manifest alone (pure, tested):
a `cas lookup` of mailboxes of two sites (and the same as each other requester, who sees a
different permission level), a `curl` of the JSON API, a few lines of exchangelib, and
`cas doctor` against the lab's sitemap. `print_summary` writes the table of parts and those
commands. Tables keep whole URLs when the output is not a terminal (piped, or in a log file).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 250  # wide enough for every URL of the table; a terminal uses its own width
LEVEL_WORDS = {
    "None": "nothing",
    "FreeBusyTimeOnly": "times only",
    "FreeBusyTimeAndSubjectAndLocation": "subjects and locations",
    "FullDetails": "every detail",
}


@dataclass(frozen=True, slots=True)
class PasteCommand:
    title: str
    text: str


def _modern_of(manifest: Mapping[str, Any], site: str) -> str | None:
    return next(
        (
            m["address"]
            for m in manifest["mailboxes"]
            if m["site"] == site and m["kind"] == "modern"
        ),
        None,
    )


def sample_addresses(manifest: Mapping[str, Any]) -> list[str]:
    """One modern mailbox of each of the first two sites (one, if the lab has one site)."""
    found = (_modern_of(manifest, site["name"]) for site in manifest["sites"][:2])
    return [address for address in found if address is not None]


def cas_executable() -> str:
    """The `cas` command of this environment, as a path that works from any directory."""
    beside = Path(sys.executable).parent / "cas"
    return str(beside) if beside.exists() else f"{sys.executable} -m cas"


def next_working_day(now: datetime) -> date:
    """Today if it is Monday to Friday, else the next Monday: a day with meetings to show."""
    day = now.date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def paste_commands(
    manifest: Mapping[str, Any],
    manifest_path: Path,
    *,
    cas: str,
    python: str = sys.executable,
    now: datetime | None = None,
) -> list[PasteCommand]:
    addresses = sample_addresses(manifest)
    node = manifest["sites"][0]["nodes"][0]
    client = manifest["client"]
    ca = shlex.quote(str(manifest["ca_cert"]))
    day = next_working_day(now or datetime.now(UTC))
    commands = [
        PasteCommand(
            "ask like a client (DNS SRV, Autodiscover, EWS) for people of two sites",
            f"{cas} lookup {' '.join(addresses)} --start {day.isoformat()} --days 1"
            f" --manifest {shlex.quote(str(manifest_path))}",
        )
    ]
    for other in manifest.get("requesters", []):
        if other["username"] != client["username"]:
            commands.append(
                PasteCommand(
                    f"the same, as {other['username']}, who may see {LEVEL_WORDS[other['level']]}",
                    f"{commands[0].text} --user {shlex.quote(other['username'])}",
                )
            )
    body = {
        "schedules": addresses,
        "startTime": {"dateTime": f"{day.isoformat()}T00:00:00", "timeZone": "UTC"},
        "endTime": {
            "dateTime": f"{(day + timedelta(days=1)).isoformat()}T00:00:00",
            "timeZone": "UTC",
        },
        "availabilityViewInterval": 60,
    }
    commands.append(
        PasteCommand(
            "the JSON API (POST /api/v1/availability)",
            f"curl -sS --cacert {ca} -u {shlex.quote(client['username'] + ':' + client['password'])}"
            f" -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
            f" {node}/api/v1/availability",
        )
    )
    snippet = "\n".join(
        [
            "import datetime as dt",
            "from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSDateTime, UTC",
            "from exchangelib.transport import BASIC",
            f"config = Configuration(service_endpoint={node + '/EWS/Exchange.asmx'!r}, "
            f"credentials=Credentials({client['username']!r}, {client['password']!r}), "
            "auth_type=BASIC)",
            f"account = Account({addresses[0]!r}, config=config, autodiscover=False, "
            "access_type=DELEGATE)",
            f"start = EWSDateTime({day.year}, {day.month}, {day.day}, tzinfo=UTC)",
            "for view in account.protocol.get_free_busy_info("
            f"[(a, 'Required', False) for a in {addresses!r}], "
            "start, start + dt.timedelta(days=1), 60, 'DetailedMerged'):",
            "    print(view.merged, [(e.start, e.busy_type) for e in view.calendar_events or []])",
        ]
    )
    commands.append(
        PasteCommand(
            "exchangelib, as a Python program would",
            f"REQUESTS_CA_BUNDLE={ca} {python} - <<'EOF'\n{snippet}\nEOF",
        )
    )
    if manifest.get("sitemap"):
        commands.append(
            PasteCommand(
                "check every part of the lab",
                f"{cas} doctor --config {shlex.quote(str(manifest['sitemap']))}",
            )
        )
    return commands


def parts_table(manifest: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("site", no_wrap=True)
    table.add_column("nodes (EWS at /EWS/Exchange.asmx)", no_wrap=True)
    table.add_column("CalDAV / old server / Redis", no_wrap=True)
    table.add_column("mailboxes (legacy)", justify="right", no_wrap=True)
    mailboxes = manifest["mailboxes"]
    for site in manifest["sites"]:
        mine = [m for m in mailboxes if m["site"] == site["name"]]
        old = sum(1 for m in mine if m["kind"] == "legacy")
        parts = [
            site["caldav"]["url"],
            (site["legacy"] or {}).get("url") or "-",
            site["redis"] or "in-process cache",
        ]
        table.add_row(
            site["name"], "\n".join(site["nodes"]), "\n".join(parts), f"{len(mine)} ({old})"
        )
    return table


def print_summary(
    manifest: Mapping[str, Any],
    manifest_path: Path,
    state: Path,
    *,
    state_kept: bool,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    console = Console(file=out, width=None if out.isatty() else PIPED_WIDTH, highlight=False)
    console.print(parts_table(manifest, f"cas lab — {manifest['domain']}"))
    dns = manifest["dns"]
    client = manifest["client"]
    kept = "kept on exit" if state_kept else "deleted on exit; --state DIR keeps them"
    lines = [
        f"DNS (SRV, A):   {dns['host']}:{dns['port']}  "
        f"(dig @{dns['host']} -p {dns['port']} _autodiscover._tcp.{manifest['domain']} SRV)",
        f"CA certificate: {manifest['ca_cert']}",
        f"client login:   {client['username']} / {client['password']}",
        *(
            f"requester:      {r['username']} / {r['password']} sees {LEVEL_WORDS[r['level']]}"
            for r in manifest.get("requesters", [])
        ),
        f"manifest:       {manifest_path}",
        f"logs:           {state / 'logs'} ({kept})",
        f"processes:      {state / 'parts.json'} (each part's PID, to stop or pause one)",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)
    console.print("\nTry it (each command works as printed):", soft_wrap=True)
    for command in paste_commands(manifest, manifest_path, cas=cas_executable()):
        console.print(f"\n# {command.title}", soft_wrap=True)
        console.print(command.text, soft_wrap=True, markup=False)
    console.print(
        "\nThe lab prints one line per failure it sees in a node's log, each breaker change "
        "once, and one line when a part dies (it is restarted). Ctrl-C stops it.",
        soft_wrap=True,
    )
    out.flush()
