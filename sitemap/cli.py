"""The `sitemap` command: check a site map file (and, later, look things up in it).

Each subcommand is one `_add_<name>(subparsers)` function that declares its arguments and sets
`handler`, a function from the parsed arguments to an exit status; `main` only dispatches.
To add a subcommand, write its `_add_...` function and list it in `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sitemap.load import SitemapError, load_sitemap

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_INVALID = 1


def _validate(args: argparse.Namespace) -> int:
    try:
        sitemap = load_sitemap(args.file)
    except SitemapError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: ok ({len(sitemap.sites)} sites, {len(sitemap.mailboxes)} mailboxes)")
    return EXIT_OK


def _add_validate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a site map file and report every problem",
        description="Check a site map (YAML, and the CSV directory it names). Prints a summary "
        "and exits 0 when it is valid; otherwise prints each problem as "
        "'FILE: ENTRY: FIELD: message' to stderr and exits 1.",
    )
    parser.add_argument("file", metavar="FILE", help="the site map YAML file")
    parser.set_defaults(handler=_validate)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_validate,
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
