"""Fixtures shared by the whole suite: real components started once per session, the process
helpers, and the guard that fails the session if a test leaves a process running."""

pytest_plugins = [
    "tests.support.processes",
    "tests.support.leftovers",
    "tests.support.radicale",
    "tests.support.xandikos",
    "tests.support.redis",
    "tests.support.slapd",
]
