"""The `cas` command: `serve` runs one node, `lookup` asks the cluster like a client, `doctor`
checks everything a sitemap names, `hash-password` makes a line of the users file.

The lab's commands (`cas lab`, its parts for compose.yaml, and the old-server emulator) belong to
the `caslab` package, a tool for running and testing the product: `main` hands them to
`caslab.cli`, importing it only then, so the node never loads the lab.

Errors the user can fix (a bad sitemap, a bad setting, a missing secret) are printed as one clear
message each with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cas import __version__
from cas.errors import CasError

if TYPE_CHECKING:
    from cas.settings import Settings
    from sitemap.model import Sitemap


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one node of one site")
    p.add_argument("--config", required=True, help="the sitemap YAML file")
    p.add_argument("--site", help="the site this node serves (default: the only site)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port to listen on (default 8443)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override a setting"
    )
    p.add_argument("--print-config", action="store_true", help="print the settings and exit")


def _add_lookup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lookup", help="ask the cluster when people are free, like a real client")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="attendees' email addresses")
    p.add_argument("--start", help="window start, ISO date or date-time (naive: in --tz)")
    p.add_argument("--end", help="window end, ISO date or date-time (needs --start)")
    p.add_argument("--days", type=int, help="window length in days (default 1)")
    p.add_argument("--interval", type=int, default=30, help="slot length in minutes (default 30)")
    p.add_argument(
        "--view",
        default="DetailedMerged",
        choices=["MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed", "DetailedMerged"],
        help="EWS RequestedView (default DetailedMerged)",
    )
    p.add_argument("--tz", help="IANA time zone for the window and output (default: local)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="node base URL or EWS URL; skips discovery")
    where.add_argument(
        "--autodiscover", action="store_true", help="find EWS via DNS SRV + Autodiscover (default)"
    )
    p.add_argument("--dns", metavar="HOST:PORT", help="DNS server for SRV lookups")
    p.add_argument("--ca", help="PEM CA certificate to verify the servers with")
    p.add_argument(
        "--user", help="user name for HTTP Basic (with --manifest: a requester it names)"
    )
    p.add_argument("--password-env", metavar="VAR", help="environment variable with the password")
    p.add_argument("--manifest", metavar="LAB.json", help="lab manifest: DNS, CA and credentials")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per HTTP call (default 15)")
    p.add_argument("--presence", action="store_true", help="print each address's presence state")


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor", help="check every node, backend, old server, Redis and DNS name a sitemap names"
    )
    p.add_argument("--config", required=True, help="the sitemap YAML file")
    p.add_argument("--site", help="check only this site (default: every site)")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds for all checks together; what has not answered by then fails (default 10)",
    )


def _add_hash_password(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hash-password",
        help="print a users-file line (argon2id hash) for a user",
        description="Print NAME:HASH[:GROUPS] for the site map's auth.users_file. The password "
        "is read from --password-env, else asked for twice on a terminal, else read as one line "
        "from standard input; it is never taken from the command line.",
    )
    p.add_argument("name", metavar="NAME", help="the user name clients log in with")
    p.add_argument("--groups", default="", help="comma-separated groups, e.g. sales,managers")
    p.add_argument("--password-env", metavar="VAR", help="environment variable with the password")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas",
        description="Multi-site availability proxy node",
        epilog="With the lab installed: cas lab, cas lab-tls, cas lab-radicale, cas lab-dns, "
        "cas lab-seed, cas legacy-server (cas lab --help).",
    )
    parser.add_argument("--version", action="version", version=f"cas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_lookup(sub)
    _add_doctor(sub)
    _add_hash_password(sub)
    from cas.client.presence import add_presence_parser

    add_presence_parser(sub)
    return parser


class UsageError(CasError):
    """A problem the user can fix; printed without a traceback."""


def _parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set {pair!r}: expected NAME=VALUE")
        overrides[name.strip()] = value.strip()
    return overrides


def _load_config(path: str, overrides: dict[str, str] | None = None) -> tuple[Sitemap, Settings]:
    """The sitemap at `path` and the settings it gives, as a node loads them; UsageError."""
    from cas.settings import SettingsError, load_settings
    from sitemap.load import SitemapError, load_sitemap

    try:
        sitemap = load_sitemap(path)
    except SitemapError as exc:
        raise UsageError(str(exc)) from None
    try:
        settings = load_settings(sitemap.settings, file_source=path, overrides=overrides)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return sitemap, settings


def serve(args: argparse.Namespace) -> int:
    from cas.app import create_app
    from sitemap.model import SecretUnavailable

    sitemap, settings = _load_config(args.config, _parse_overrides(args.set))
    if args.print_config:
        from cas.settings import format_table

        print(format_table(settings))
        return 0

    names = [s.name for s in sitemap.sites]
    site = args.site or (names[0] if len(names) == 1 else None)
    if site is None:
        raise UsageError(
            f"{args.config}: several sites ({', '.join(names)}); choose one with --site"
        )
    if site not in names:
        raise UsageError(f"--site {site}: not in {args.config} (sites: {', '.join(names)})")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")

    from cas.errors import ConfigurationError
    from cas.identity import IdentityConfigError
    from cas.observability import configure_logging
    from sitemap.ldapdir import DirectoryUnavailable

    configure_logging(settings.log_level.upper(), site)
    try:
        app = create_app(settings, sitemap, site, path=args.config)
    except (
        SecretUnavailable,
        ConfigurationError,
        IdentityConfigError,
        DirectoryUnavailable,
    ) as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    from cas.serving import node_server

    server = node_server(
        app,
        settings,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    server.run()
    return 0


def lookup(args: argparse.Namespace) -> int:
    from cas.client.lookup import run_lookup
    from cas.client.options import LookupFailed

    try:
        return run_lookup(args)
    except LookupFailed as exc:
        raise UsageError(str(exc)) from None


def presence(args: argparse.Namespace) -> int:
    from cas.client.options import LookupFailed
    from cas.client.presence import run_follow

    try:
        return run_follow(args)
    except LookupFailed as exc:
        raise UsageError(str(exc)) from None


def doctor(args: argparse.Namespace) -> int:
    import asyncio
    import math

    from cas.doctor import diagnose, exit_status, print_json, print_table
    from cas.errors import ConfigurationError

    sitemap, settings = _load_config(args.config)
    names = [s.name for s in sitemap.sites]
    if args.site is not None and args.site not in names:
        raise UsageError(f"--site {args.site}: not in {args.config} (sites: {', '.join(names)})")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    try:
        results = asyncio.run(diagnose(sitemap, settings, site=args.site, timeout=args.timeout))
    except ConfigurationError as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    if args.json:
        print_json(results, sys.stdout, timeout=args.timeout)
    else:
        print_table(results, sys.stdout, timeout=args.timeout)
    return exit_status(results)


def _read_password(args: argparse.Namespace) -> str:
    import getpass
    import os

    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env {args.password_env}: the variable is not set")
        return value
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def hash_password_command(args: argparse.Namespace) -> int:
    from cas.identity import hash_password

    name = args.name.strip()
    if not name or ":" in name or not name.isprintable():
        raise UsageError(f"{args.name!r}: a user name is printable text without ':'")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if any(":" in g or not g.isprintable() for g in groups):
        raise UsageError(f"--groups {args.groups!r}: groups are printable text without ':'")
    password = _read_password(args)
    if not password:
        raise UsageError("the password is empty")
    line = f"{name}:{hash_password(password)}"
    print(line + (":" + ",".join(groups) if groups else ""))
    return 0


LAB_COMMANDS = ("lab", "lab-tls", "lab-radicale", "lab-dns", "lab-seed", "legacy-server")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAB_COMMANDS:
        try:
            from caslab.cli import main as lab_main
        except ImportError as exc:
            print(
                f"cas {argv[0]}: the lab is not installed ({exc}); install the project with its "
                "`lab` extra, e.g. pip install '.[lab]'",
                file=sys.stderr,
            )
            return 2
        return lab_main(argv)
    args = build_parser().parse_args(argv)
    commands = {
        "serve": serve,
        "lookup": lookup,
        "doctor": doctor,
        "hash-password": hash_password_command,
        "presence": presence,
    }
    try:
        return commands[args.command](args)
    except UsageError as exc:
        print(f"cas {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
