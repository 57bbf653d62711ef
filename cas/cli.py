"""The `cas` command: `serve` runs one node, `lab` runs a whole lab on loopback, `lookup` asks
the cluster like a client, `doctor` checks everything a sitemap names.

`lab-tls`, `lab-radicale`, `lab-dns` and `lab-seed` are the lab's parts for one container each
(compose.yaml); their bodies live in `cas.lab.parts`.

Errors the user can fix (a bad sitemap, a bad setting, a missing secret) are printed as one clear
message each with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cas import __version__

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
    p.add_argument("--user", help="user name for HTTP Basic")
    p.add_argument("--password-env", metavar="VAR", help="environment variable with the password")
    p.add_argument("--manifest", metavar="LAB.json", help="lab manifest: DNS, CA and credentials")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per HTTP call (default 15)")


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


def _add_legacy_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "legacy-server", help="run the old-server emulator (/public/?cmd=freebusy) on its own"
    )
    p.add_argument("--data", required=True, help="folder of the stored free/busy messages")
    p.add_argument(
        "--directory",
        required=True,
        help="SMTP address -> legacy DN file (.csv, .json or .yaml; see cas.legacy.directory)",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cas", description="Multi-site availability proxy node")
    parser.add_argument("--version", action="version", version=f"cas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_lab(sub)
    _add_lookup(sub)
    _add_doctor(sub)
    _add_legacy_server(sub)
    _add_lab_tls(sub)
    _add_lab_radicale(sub)
    _add_lab_dns(sub)
    _add_lab_seed(sub)
    return parser


class UsageError(Exception):
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
    import uvicorn

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

    from cas.app import ConfigurationError
    from cas.observability import configure_logging

    configure_logging(settings.log_level.upper(), site)
    try:
        app = create_app(settings, sitemap, site, path=args.config)
    except (SecretUnavailable, ConfigurationError) as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level=settings.log_level,
        log_config=None,  # our handler, so uvicorn's lines carry the request id too
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    from cas.serving import DrainingServer

    DrainingServer(
        config, on_drain=app.state.drain, drain_seconds=settings.shutdown_drain_seconds
    ).run()
    return 0


def lab(args: argparse.Namespace) -> int:
    from cas.lab.runner import LabOptions, run_lab

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
        )
    )


def lookup(args: argparse.Namespace) -> int:
    from cas.lookup import run_lookup
    from cas.lookup_options import LookupFailed

    try:
        return run_lookup(args)
    except LookupFailed as exc:
        raise UsageError(str(exc)) from None


def doctor(args: argparse.Namespace) -> int:
    import asyncio
    import math

    from cas.app import ConfigurationError
    from cas.doctor import diagnose, exit_status, print_json, print_table

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


def legacy_server(args: argparse.Namespace) -> int:
    from cas.legacy.directory import DirectoryFileError
    from cas.legacy.server import run_legacy_server

    try:
        return run_legacy_server(args.data, args.directory, args.host, args.port)
    except (DirectoryFileError, OSError) as exc:
        raise UsageError(str(exc)) from None


def lab_tls(args: argparse.Namespace) -> int:
    from cas.lab.parts import LabInputError, prepare_tls

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
    from cas.lab.parts import LabInputError, read_password, run_radicale

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
    from cas.lab.parts import LabInputError, load_zone, serve_zone, stop_signals

    try:
        zone = load_zone(args.zone)
        with stop_signals() as stop:
            return serve_zone(zone, args.host, args.port, stop)
    except LabInputError as exc:
        raise UsageError(str(exc)) from None


def lab_seed(args: argparse.Namespace) -> int:
    from cas.lab.parts import LabInputError, LabPartError, read_password, seed_sitemap

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "serve": serve,
        "lab": lab,
        "lookup": lookup,
        "doctor": doctor,
        "legacy-server": legacy_server,
        "lab-tls": lab_tls,
        "lab-radicale": lab_radicale,
        "lab-dns": lab_dns,
        "lab-seed": lab_seed,
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
