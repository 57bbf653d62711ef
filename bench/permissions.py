"""What permission levels and throttling cost a warm lookup.

    .venv/bin/python bench/permissions.py [--seconds 10] [--connections 16] [--grants 2000]

Warm single-mailbox 1-day EWS lookup (DetailedMerged), requests per second on ONE uvicorn
worker, logging in with HTTP Basic against a users file (the login remembered, the mailbox
cached), each against a bare Starlette endpoint on the same server returning the same bytes
(bench/serve_with_bare.py; wrk, same connections), in three configurations:

1. no `permissions` section and no throttling (what the identity bench measures);
2. permissions on: an organisation default, --grants organisation-wide group grants and every
   mailbox with entries of its own (users and groups), the requester in 50 groups, one of
   which a mailbox entry names: every answer looks up the requester's level for the mailbox;
3. the same with throttling on, at a rate high enough never to refuse: the node takes the
   requester's tokens from the site's Redis a tenth of a second of the rate ahead
   (cas/throttle.py), so a busy requester meets Redis seldom;
4. the same with a rate of 9 per second and a burst that never runs out: nothing is taken
   ahead, every request takes its token from Redis (one EVALSHA): the worst case.

Target: each at least 0.5 of the bare endpoint, as without permissions. Needs wrk and
redis-server besides the project (`bash bench/setup`); bounded: wrk runs --seconds, every wait
has a deadline, all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require, running_lab
from identity import login_throughput

USER, PASSWORD = "bench-user", "bench-Pa55word"
GROUPS = [f"team-{i}" for i in range(49)] + ["schedulers"]


def permissions(manifest: dict, grants: int) -> dict:  # type: ignore[type-arg]
    """The `permissions` section: big, and with the entry that decides deep in a mailbox's."""
    mailboxes = [m["address"] for m in manifest["mailboxes"]]
    own = [{"user": f"someone-{i}@contoso.test", "level": "FullDetails"} for i in range(20)]
    own += [{"group": f"other-{i}", "level": "FreeBusyTimeOnly"} for i in range(20)]
    own.append({"group": "schedulers", "level": "FreeBusyTimeAndSubjectAndLocation"})
    return {
        "default": "FreeBusyTimeOnly",
        "anonymous": "None",
        "grants": [{"group": f"org-group-{i}", "level": "FullDetails"} for i in range(grants)],
        "mailboxes": {address: {"default": "None", "grants": own} for address in mailboxes},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--grants", type=int, default=2000)
    args = parser.parse_args()
    require(commands=("wrk",), redis_server=True)
    from rich.console import Console
    from rich.table import Table

    from cas.identity import hash_password

    rows = []
    with running_lab("--sites", "1", "--nodes-per-site", "1", "--mailboxes-per-site", "4") as manifest, \
            tempfile.TemporaryDirectory(prefix="cas-bench-") as tmp_name:  # fmt: skip
        tmp = Path(tmp_name)
        users = tmp / "users.txt"
        users.write_text(f"{USER}:{hash_password(PASSWORD)}:{','.join(GROUPS)}\n")
        auth = {"users_file": str(users)}
        login = (USER, PASSWORD)
        section = permissions(manifest, args.grants)
        cases = [
            ("no permissions, no throttling", {"permissions": {}}),
            ("permissions on", {"permissions": section}),
            (
                "permissions, throttling (tokens taken ahead)",
                {
                    "permissions": section,
                    "settings": {"throttle_rate": 10**9, "throttle_burst": 10**9},
                },
            ),
            (
                "permissions, throttling (Redis every request)",
                {"permissions": section, "settings": {"throttle_rate": 9, "throttle_burst": 10**9}},
            ),
        ]
        base_settings = {k: v for k, v in _lab_settings(manifest).items() if k != "throttle_rate"}
        for name, changes in cases:
            if "settings" in changes:
                changes = {**changes, "settings": {**base_settings, **changes["settings"]}}
            ews, bare = login_throughput(manifest, auth, tmp, args, changes=changes, user=login)
            rows.append((name, ews, bare))

    table = Table(
        title=f"Warm single-mailbox 1-day EWS lookup, 1 uvicorn worker, wrk {args.connections} "
        f"connections; {args.grants} organisation grants, 41 entries per mailbox"
    )
    for column in ("configuration", "requests/s", "bare requests/s", "ratio to bare"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, ews, bare in rows:
        table.add_row(name, f"{ews:.0f}", f"{bare:.0f}", f"{ews / bare:.2f}")
    Console().print(table)
    print("target: ratio >= 0.5")
    return 0


def _lab_settings(manifest: dict) -> dict:  # type: ignore[type-arg]
    import yaml

    document = yaml.safe_load(Path(manifest["sitemap"]).read_text())
    return dict(document.get("settings", {}))


if __name__ == "__main__":
    sys.exit(main())
