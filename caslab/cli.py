"""The lab's commands: `cas lab` runs a whole lab on loopback; `lab-tls`, `lab-radicale`,
`lab-dns` and `lab-seed` are its parts for one container each (compose.yaml), and
`legacy-server` runs the old-server emulator on its own. `cas.cli` hands these commands here.

Errors the user can fix are printed as one clear message each with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cas import __version__


class UsageError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _add_lab(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="run a whole lab on loopback with embedded defaults")
    p.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    p.add_argument("--nodes-per-site", type=int, default=2, help="nodes per site (default 2)")
    p.add_argument(
        "--mailboxes-per-site", type=int, default=24, help="seeded mailboxes per site (default 24)"
    )
    p.add_argument(
        "--manifest",
        help="where to write the lab manifest JSON (default: lab.json here, removed on exit)",
    )
    p.add_argument(
        "--state",
        "--state-dir",
        dest="state_dir",
        metavar="DIR",
        help="folder for the lab's files and logs, kept on exit (default: a temporary one)",
    )
    p.add_argument(
        "--duration", type=float, help="stop by itself after this many seconds (default: Ctrl-C)"
    )
    p.add_argument(
        "--backend-delay-ms",
        type=int,
        default=0,
        help="add this round-trip delay between nodes and their CalDAV server (default 0)",
    )
    p.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="leave a part that dies down instead of starting it again (to watch failover)",
    )
    p.add_argument(
        "--no-push",
        dest="push",
        action="store_false",
        help="do not wire Radicale's storage hook: changes are found by validation only",
    )


def _add_legacy_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "legacy-server", help="run the old-server emulator (/public/?cmd=freebusy) on its own"
    )
    p.add_argument("--data", required=True, help="folder of the stored free/busy messages")
    p.add_argument(
        "--directory",
        required=True,
        help="SMTP address -> legacy DN file (.csv, .json or .yaml; see caslab.oldserver.directory)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")


def _add_lab_tls(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab-tls", help="make the lab's CA, node certificate and secrets, keeping what exists"
    )
    p.add_argument("--out", required=True, help="folder for tls/ and secrets/")
    p.add_argument(
        "--names", nargs="+", required=True, metavar="NAME",
        help="every DNS name or IP address the node certificate must cover",
    )  # fmt: skip
    p.add_argument(
        "--secrets", nargs="*", default=[], metavar="NAME",
        help="random secrets to write as secrets/NAME (mode 0600) if missing",
    )  # fmt: skip


def _add_lab_radicale(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab-radicale", help="run a lab Radicale (CalDAV) in the foreground")
    p.add_argument("--folder", required=True, help="folder for its config, users and calendars")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5232, help="port to listen on (default 5232)")
    p.add_argument(
        "--user", action="append", required=True, metavar="NAME=PASSWORD_FILE",
        help="an account and the file holding its password (repeat)",
    )  # fmt: skip
    p.add_argument(
        "--admin", action="append", default=[], metavar="NAME",
        help="an account that reads and writes every calendar (repeat)",
    )  # fmt: skip
    p.add_argument(
        "--reader", action="append", default=[], metavar="NAME",
        help="an account that reads every calendar, e.g. the nodes' (repeat)",
    )  # fmt: skip


def _add_lab_dns(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab-dns", help="serve a zone file's SRV and A records over UDP and TCP")
    p.add_argument(
        "--zone", required=True, help="YAML or JSON: {ttl, srv: {NAME: [...]}, a: {NAME: [ip]}}"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5353, help="UDP and TCP port (default 5353)")


def _add_lab_seed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab-seed", help="fill a sitemap's calendars and legacy free/busy with demo events"
    )
    p.add_argument("--sitemap", required=True, help="the sitemap YAML file")
    p.add_argument("--caldav-user", required=True, help="CalDAV account that may write everywhere")
    p.add_argument("--caldav-password-file", required=True, help="file with its password")
    p.add_argument(
        "--timeout", type=float, default=60.0,
        help="seconds to wait for the servers to answer (default 60)",
    )  # fmt: skip


def lab(args: argparse.Namespace) -> int:
    from caslab.runner import LabOptions
    from caslab.supervise import run_lab

    if args.sites < 1 or args.nodes_per_site < 1 or args.mailboxes_per_site < 1:
        raise UsageError("--sites, --nodes-per-site and --mailboxes-per-site must be at least 1")
    if args.backend_delay_ms < 0:
        raise UsageError("--backend-delay-ms must not be negative")
    return run_lab(
        LabOptions(
            sites=args.sites,
            nodes_per_site=args.nodes_per_site,
            mailboxes_per_site=args.mailboxes_per_site,
            manifest=args.manifest,
            state_dir=args.state_dir,
            duration=args.duration,
            backend_delay_ms=args.backend_delay_ms,
            restart=args.restart,
            push=args.push,
        )
    )


def legacy_server(args: argparse.Namespace) -> int:
    from caslab.oldserver.directory import DirectoryFileError
    from caslab.oldserver.server import run_legacy_server

    try:
        return run_legacy_server(args.data, args.directory, args.host, args.port)
    except (DirectoryFileError, OSError) as exc:
        raise UsageError(str(exc)) from None


def lab_tls(args: argparse.Namespace) -> int:
    from caslab.parts import LabInputError, prepare_tls

    try:
        result = prepare_tls(args.out, args.names, args.secrets)
    except LabInputError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc}") from None
    print(f"CA {result.ca.cert}: {'made' if result.made_ca else 'kept'}")
    print(f"node certificate {result.node.cert}: {'issued' if result.issued_node else 'kept'}")
    print(f"secrets made: {', '.join(result.made_secrets) or 'none (all exist)'}")
    return 0


def lab_radicale(args: argparse.Namespace) -> int:
    from caslab.parts import LabInputError, read_password, run_radicale

    try:
        users: dict[str, str] = {}
        for pair in args.user:
            name, sep, path = pair.partition("=")
            if not (sep and name.strip() and path.strip()):
                raise UsageError(f"--user {pair!r}: expected NAME=PASSWORD_FILE")
            users[name.strip()] = read_password(path.strip())
        run_radicale(args.folder, args.host, args.port, users, args.admin, args.reader)
    except LabInputError as exc:
        raise UsageError(str(exc)) from None


def lab_dns(args: argparse.Namespace) -> int:
    from caslab.parts import LabInputError, load_zone, serve_zone, stop_signals

    try:
        zone = load_zone(args.zone)
        with stop_signals() as stop:
            return serve_zone(zone, args.host, args.port, stop)
    except LabInputError as exc:
        raise UsageError(str(exc)) from None


def lab_seed(args: argparse.Namespace) -> int:
    from caslab.parts import LabInputError, LabPartError, read_password
    from caslab.seedjob import seed_sitemap

    try:
        password = read_password(args.caldav_password_file)
        report = seed_sitemap(args.sitemap, args.caldav_user, password, timeout=args.timeout)
    except LabInputError as exc:
        raise UsageError(str(exc)) from None
    except LabPartError as exc:
        print(f"cas lab-seed: {exc}", file=sys.stderr)
        return 1
    print(
        f"seeded {report.calendars} calendars ({report.events} events) and published "
        f"{report.legacy} legacy mailboxes"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cas", description="The availability cluster's lab")
    parser.add_argument("--version", action="version", version=f"cas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_lab(sub)
    _add_legacy_server(sub)
    _add_lab_tls(sub)
    _add_lab_radicale(sub)
    _add_lab_dns(sub)
    _add_lab_seed(sub)
    return parser


COMMANDS = {
    "lab": lab,
    "legacy-server": legacy_server,
    "lab-tls": lab_tls,
    "lab-radicale": lab_radicale,
    "lab-dns": lab_dns,
    "lab-seed": lab_seed,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"cas {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
