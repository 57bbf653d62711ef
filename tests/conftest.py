"""Fixtures shared by the whole suite: real components, started once per session."""

pytest_plugins = ["tests.support.radicale", "tests.support.redis"]
