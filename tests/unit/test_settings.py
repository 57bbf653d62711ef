"""Settings: precedence of sources and errors that say where a bad value came from."""

from __future__ import annotations

import pytest

from cas.settings import OPTIONS, SettingsError, load_settings


def test_defaults_then_file_then_environment_then_command_line() -> None:
    s = load_settings(
        {"window_max_days": 100, "max_mailboxes": 50},
        file_source="site.yaml",
        environ={"CAS_WINDOW_MAX_DAYS": "120", "CAS_LOG_LEVEL": "DEBUG"},
        overrides={"max_mailboxes": "7"},
    )
    assert s.window_max_days == 120 and s.max_mailboxes == 7 and s.log_level == "debug"
    assert s.request_timeout_seconds == 10.0
    sources = {name: src for name, _, src, _ in s.table()}
    assert sources["window_max_days"] == "CAS_WINDOW_MAX_DAYS"
    assert sources["max_mailboxes"] == "command line.max_mailboxes"
    assert sources["max_body_bytes"] == "default"


@pytest.mark.parametrize(
    ("file_values", "environ", "where"),
    [
        ({"window_max_dayz": 3}, {}, "site.yaml: settings.window_max_dayz: unknown setting"),
        ({"max_mailboxes": 0}, {}, "site.yaml: settings.max_mailboxes: must be positive"),
        ({"max_mailboxes": True}, {}, "settings.max_mailboxes: expected a whole number"),
        ({}, {"CAS_REQUEST_TIMEOUT_SECONDS": "soon"}, "CAS_REQUEST_TIMEOUT_SECONDS:"),
        ({}, {"CAS_LOG_LEVEL": "loud"}, "CAS_LOG_LEVEL: must be one of"),
    ],
)
def test_bad_values_name_their_source(file_values, environ, where) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(file_values, file_source="site.yaml", environ=environ)
    assert where in str(info.value)


def test_every_option_has_help_and_a_valid_default() -> None:
    for option in OPTIONS:
        assert option.help.endswith(".")
        assert option.convert(option.default) == option.default
