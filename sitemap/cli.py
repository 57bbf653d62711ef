"""The `sitemap` command: check a site map file and look things up in it.

- `sitemap validate FILE`: every problem, or a summary.
- `sitemap locate ADDRESS --config FILE`: the mailbox's site, kind, legacy DN, and the nodes in
  the order the replica rule tries them (SRV names resolved now).
- `sitemap resolve SITE --config FILE`: the site's nodes as resolved now (static and DNS SRV).

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`handler`, a function from the parsed arguments to an exit status; `main` only dispatches.
To add a subcommand, write its `_add_...` function and list it in `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

from sitemap.discovery import DiscoveryError, NodeAddress, SiteNodes, SrvResolver
from sitemap.ldapdir import DirectoryUnavailable, LdapDirectory
from sitemap.load import SitemapError, load_sitemap
from sitemap.model import Site, Sitemap
from sitemap.replica import replica_key, replica_order, stable_hash

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_INVALID = 1

_Subparsers = argparse._SubParsersAction  # argparse has no public name for it


def _load(path: str) -> Sitemap | None:
    """The site map at `path`, or None after printing every problem to stderr."""
    try:
        return load_sitemap(path)
    except SitemapError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _fail(message: str) -> int:
    print(f"sitemap: {message}", file=sys.stderr)
    return EXIT_INVALID


def _site(sitemap: Sitemap, name: str, path: str) -> Site | None:
    try:
        return sitemap.site(name)
    except KeyError:
        known = ", ".join(s.name for s in sitemap.sites)
        _fail(f"no site named {name!r} in {path} (sites: {known})")
        return None


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


# --- validate ----------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    sitemap = _load(args.file)
    if sitemap is None:
        return EXIT_INVALID
    directory = sitemap.directory
    if isinstance(directory, LdapDirectory):
        where = f"mailboxes from LDAP {directory.server.url} under {directory.config.base}"
    else:
        where = f"{len(sitemap.mailboxes)} mailboxes"
    print(f"{args.file}: ok ({len(sitemap.sites)} sites, {where})")
    return EXIT_OK


def _add_validate(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a site map file and report every problem",
        description="Check a site map (YAML, and the CSV directory it names). Prints a summary "
        "and exits 0 when it is valid; otherwise prints each problem as "
        "'FILE: ENTRY: FIELD: message' to stderr and exits 1.",
    )
    parser.add_argument("file", metavar="FILE", help="the site map YAML file")
    parser.set_defaults(handler=_validate)


# --- locate ------------------------------------------------------------------------------------


def _locate(args: argparse.Namespace) -> int:
    sitemap = _load(args.config)
    if sitemap is None:
        return EXIT_INVALID
    if isinstance(sitemap.directory, LdapDirectory):
        try:
            sitemap.directory.load()
        except DirectoryUnavailable as exc:
            return _fail(str(exc))
    mailbox = sitemap.lookup(args.address)
    if mailbox is None:
        return _fail(f"{args.address}: not in the directory of {args.config}")
    local = args.local_site or mailbox.site
    if _site(sitemap, local, args.config) is None:
        return EXIT_INVALID
    site = sitemap.site(mailbox.site)
    finder = SiteNodes(sitemap, SrvResolver(sitemap.dns), local_site=local)
    try:
        candidates = asyncio.run(finder.nodes(site))
    except DiscoveryError as exc:
        return _fail(f"site {site.name}: cannot resolve SRV {exc}")
    key = replica_key(mailbox)
    order = list(replica_order(key, candidates))
    if args.json:
        _print_json(
            {
                "address": mailbox.address,
                "site": mailbox.site,
                "kind": mailbox.kind,
                "legacy_dn": mailbox.legacy_dn,
                "key": key,
                "hash": stable_hash(key),
                "from_site": local,
                "node": order[0].url if order else None,
                "order": [{"url": c.url, "cost": c.cost} for c in order],
            }
        )
        return EXIT_OK
    print(f"address:   {mailbox.address}")
    print(f"site:      {mailbox.site}")
    print(f"kind:      {mailbox.kind}")
    print(f"legacy DN: {mailbox.legacy_dn}")
    print(f"node:      {order[0].url if order else 'none (the site has no nodes)'}")
    if order:
        print(f"try order (costs from site {local}):")
        width = max(len(c.url) for c in order)
        for number, candidate in enumerate(order, 1):
            print(f"  {number}. {candidate.url:<{width}}  cost {candidate.cost}")
    return EXIT_OK


def _add_locate(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "locate",
        help="show where a mailbox lives and which node the replica rule picks",
        description="Find ADDRESS (or an alias) in the directory and print its site, kind and "
        "legacy DN, the node the replica rule picks first, and the full order in which nodes "
        "are tried. SRV names are resolved now, with the site map's 'dns' settings.",
    )
    parser.add_argument("address", metavar="ADDRESS", help="a mail address or alias")
    parser.add_argument("--config", required=True, metavar="FILE", help="the site map YAML file")
    parser.add_argument(
        "--from",
        dest="local_site",
        metavar="SITE",
        help="see costs from this site (default: the mailbox's own site)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=_locate)


# --- resolve -----------------------------------------------------------------------------------


def _resolve(args: argparse.Namespace) -> int:
    sitemap = _load(args.config)
    if sitemap is None:
        return EXIT_INVALID
    site = _site(sitemap, args.site, args.config)
    if site is None:
        return EXIT_INVALID
    found: list[NodeAddress] = []
    if site.srv is not None:
        resolver = SrvResolver(sitemap.dns)
        try:
            found = asyncio.run(resolver.resolve(site.srv, scheme=site.node_scheme))
        except DiscoveryError as exc:
            return _fail(f"site {site.name}: cannot resolve SRV {exc}")
    if args.json:
        srv = {"name": site.srv, "nodes": [asdict(n) for n in found]} if site.srv else None
        _print_json({"site": site.name, "static": list(site.nodes), "srv": srv})
        return EXIT_OK
    print(f"site {site.name}: {len(site.nodes) + len(found)} nodes")
    for url in site.nodes:
        print(f"  static  {url}")
    if site.srv is not None:
        print(f"  SRV {site.srv}: {len(found) or 'no'} answers")
        width = max((len(n.url) for n in found), default=0)
        for node in found:
            print(
                f"    {node.url:<{width}}  priority {node.priority}  weight {node.weight}  "
                f"ttl {node.ttl}  target {node.target}"
            )
    return EXIT_OK


def _add_resolve(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "resolve",
        help="show a site's nodes as resolved now",
        description="Print SITE's static nodes and what its DNS SRV name gives now (priority, "
        "weight, TTL, target), in RFC 2782 order. Exits 1 when DNS fails.",
    )
    parser.add_argument("site", metavar="SITE", help="a site name from the site map")
    parser.add_argument("--config", required=True, metavar="FILE", help="the site map YAML file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=_resolve)


SUBCOMMANDS: list[Callable[[_Subparsers[argparse.ArgumentParser]], None]] = [
    _add_validate,
    _add_locate,
    _add_resolve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitemap", description="Work with the site map of a free/busy proxy cluster."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sitemap` command with `argv` (default: the process arguments); the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
