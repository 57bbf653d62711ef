"""`cas doctor`: check everything a sitemap names, in parallel, and say what answers.

For every site: each node (TLS certificate and names, `/readyz`, version, acceptance of the
cluster's signature), including the nodes its DNS SRV name gives; its CalDAV backend, old
server and Redis; the DNS names themselves; and the directory server (`ldap`). All checks run
at once under one deadline, with no limit on their number (Cisco's presence-gateway
Troubleshooter stops at ten servers).

Modules: `run` (checks, results, the deadline), `plan` (which checks a sitemap calls for),
`nodes`, `services`, `names` and `directory` (the checks), `words` (failures in words),
`render` (output).
"""

from __future__ import annotations

from cas.doctor.plan import DEFAULT_TIMEOUT_SECONDS, Doctor, diagnose
from cas.doctor.render import exit_status, print_json, print_table, report_document
from cas.doctor.run import Check, CheckResult, Outcome, run_checks

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "Check",
    "CheckResult",
    "Doctor",
    "Outcome",
    "diagnose",
    "exit_status",
    "print_json",
    "print_table",
    "report_document",
    "run_checks",
]
