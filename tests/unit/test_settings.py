"""Settings: precedence of sources and errors that say where a bad value came from."""

from __future__ import annotations

import pytest

from cas.settings import OPTIONS, SettingsError, format_table, load_settings


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
    assert sources["max_mailboxes"] == "--set max_mailboxes"
    assert sources["max_body_bytes"] == "default"


@pytest.mark.parametrize(
    ("file_values", "environ", "where"),
    [
        ({"window_max_dayz": 3}, {}, "site.yaml: settings.window_max_dayz: unknown setting"),
        (
            {"max_mailboxes": 0},
            {},
            "site.yaml: settings.max_mailboxes=0: 0 is too small; max_mailboxes takes a whole "
            "number at least 1 (default 100)",
        ),
        ({"max_mailboxes": True}, {}, "settings.max_mailboxes=True: True is not a whole number"),
        (
            {},
            {"CAS_REQUEST_TIMEOUT_SECONDS": "soon"},
            "CAS_REQUEST_TIMEOUT_SECONDS=soon: 'soon' is not a number of seconds; "
            "request_timeout_seconds takes a number of seconds more than 0",
        ),
        ({}, {"CAS_LOG_LEVEL": "loud"}, "takes one of debug, info, warning, error"),
    ],
)
def test_bad_values_name_their_source(file_values, environ, where) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(file_values, file_source="site.yaml", environ=environ)
    assert where in str(info.value)


def test_a_bad_command_line_value_names_the_option_what_was_given_and_what_is_allowed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({}, environ={}, overrides={"window_max_days": "abc"})
    assert str(info.value) == (
        "--set window_max_days=abc: 'abc' is not a whole number; window_max_days takes a "
        "whole number at least 1 (default 62)"
    )
    with pytest.raises(SettingsError, match=r"^--set window_max_dayz: unknown setting"):
        load_settings({}, environ={}, overrides={"window_max_dayz": "3"})


def test_the_printed_table_has_a_header_and_aligned_columns() -> None:
    lines = format_table(load_settings({}, environ={"CAS_HOP_LIMIT": "2"})).splitlines()
    assert lines[0].split() == ["SETTING", "VALUE", "SOURCE", "HELP"]
    assert len(lines) == len(OPTIONS) + 1
    value_column = lines[0].index("VALUE")
    source_column = lines[0].index("SOURCE")
    for line, option in zip(lines[1:], OPTIONS):
        assert line.startswith(option.name + " ")
        assert line[value_column - 1] == " " and line[value_column] != " "
        assert line[source_column - 1] == " " and line[source_column] != " "
    hop = next(line for line in lines if line.startswith("hop_limit "))
    assert hop[value_column:].split()[:2] == ["2", "CAS_HOP_LIMIT"]


def test_every_option_has_help_and_a_valid_default() -> None:
    for option in OPTIONS:
        assert option.help.endswith(".")
        assert option.convert(option.default) == option.default
