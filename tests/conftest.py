"""Fixtures shared by the whole suite: real components started once per session, the process
helpers, the guard that fails the session if a test leaves a process running, and the guard
that fails a test when asyncio reports an abandoned task."""

pytest_plugins = [
    "tests.support.processes",
    "tests.support.leftovers",
    "tests.support.asyncio_guard",
    "tests.support.radicale",
    "tests.support.xandikos",
    "tests.support.redis",
    "tests.support.slapd",
]
