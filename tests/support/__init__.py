"""Shared test support: fixtures that run real servers (registered through `pytest_plugins`)."""
