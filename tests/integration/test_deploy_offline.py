"""The deployment files, checked offline: the chart, the compose file and the Dockerfile.

`scripts/check-deploy` runs helm lint, helm template | kubernetes-validate, the bad value sets
and docker-compose config with real tools (fetched once into .cache/tools and the .venv). The
other tests here keep the deployment files in step with the code they deploy: the chart's
schema knows exactly the sitemap's fields and the node's settings, the compose commands parse
with the `cas` command line, and the image is built the way the Dockerfile promises.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cas.cli import build_parser
from cas.settings import OPTIONS
from sitemap import _auth, _mailboxes, _permissions, _sites
from sitemap import load as sitemap_load
from sitemap.model import LEVEL_ALIASES, PERMISSION_LEVELS

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check-deploy"
TOOLS_UNAVAILABLE = 3  # check-deploy's exit status when it cannot fetch its tools
CHART_SET_BY_CHART = {"cluster_secret_file", "peer_ca_file"}


def run_check(env: dict[str, str] | None, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CHECK)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_deploy_passes() -> None:
    """Everything scripts/check-deploy checks passes (tools cached after the first run)."""
    tools = run_check({"CAS_TOOLS_ONLY": "1"}, timeout=600)
    if tools.returncode == TOOLS_UNAVAILABLE:
        pytest.skip(f"deployment tools cannot be fetched here: {tools.stderr.strip()}")
    assert tools.returncode == 0, tools.stdout + tools.stderr
    result = run_check(None, timeout=300)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check-deploy: all checks passed" in result.stdout
    for checked in (
        "helm lint --strict",
        "kubernetes-validate --strict",
        "ci/bad/",
        "compose.yaml",
    ):
        assert checked in result.stdout


# --- the chart's schema follows the code -------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads((ROOT / "helm" / "values.schema.json").read_text())


def keys(schema: dict[str, Any], definition: str, *path: str) -> set[str]:
    node = schema["definitions"][definition]
    for step in path:
        node = node["properties"][step]
    if "oneOf" in node and "properties" not in node:
        node = next(n for n in node["oneOf"] if n.get("type") == "object")
    return set(node["properties"])


def test_chart_schema_knows_exactly_the_sitemap_fields(schema: dict[str, Any]) -> None:
    assert keys(schema, "sitemap") == set(sitemap_load.TOP_FIELDS)
    assert keys(schema, "sitemap", "auth") == set(sitemap_load.AUTH_FIELDS)
    assert keys(schema, "user") == set(sitemap_load.USER_FIELDS)
    assert keys(schema, "ldap") == set(sitemap_load.LDAP_FIELDS)
    assert keys(schema, "ldapLogin") == set(_auth.LDAP_LOGIN_FIELDS)
    assert keys(schema, "jwt") == set(_auth.JWT_FIELDS)
    assert keys(schema, "directory") == set(sitemap_load.DIRECTORY_FIELDS)
    assert keys(schema, "sitemap", "dns") == set(_sites.DNS_FIELDS)
    assert keys(schema, "mailbox") == set(_mailboxes.MAILBOX_FIELDS)
    assert keys(schema, "site") == set(_sites.SITE_FIELDS)
    assert keys(schema, "caldav") == set(_sites.CALDAV_FIELDS)
    assert keys(schema, "legacy") == set(_sites.LEGACY_FIELDS)
    assert keys(schema, "redis") == set(_sites.REDIS_FIELDS)
    assert keys(schema, "hours") == set(_sites.HOURS_FIELDS)
    assert keys(schema, "sitemap", "permissions") == set(_permissions.PERMISSIONS_FIELDS)
    assert keys(schema, "grant") == set(_permissions.GRANT_FIELDS)
    assert keys(schema, "mailboxPermissions") == set(_permissions.MAILBOX_PERMISSION_FIELDS)
    levels = set(schema["definitions"]["permissionLevel"]["enum"])
    assert levels == set(PERMISSION_LEVELS) | set(LEVEL_ALIASES)


def test_chart_settings_are_the_node_settings(schema: dict[str, Any]) -> None:
    settings = schema["properties"]["settings"]
    assert settings["additionalProperties"] is False
    assert set(settings["properties"]) == {o.name for o in OPTIONS} - CHART_SET_BY_CHART


# --- compose commands are `cas` command lines ---------------------------------------------------


def cas_subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def compose_cas_commands() -> dict[str, list[str]]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return {
        name: [str(word) for word in service["command"]]
        for name, service in compose["services"].items()
        if service["image"].startswith("cas-lab/cas")
    }


def test_compose_commands_parse_with_the_cas_command_line() -> None:
    """Every compose part runs a `cas` subcommand (the node's, or the lab's) with flags it takes."""
    from cas.cli import LAB_COMMANDS
    from caslab.cli import build_parser as lab_parser

    for name, command in compose_cas_commands().items():
        parser = lab_parser() if command[0] in LAB_COMMANDS else build_parser()
        assert command[0] in cas_subcommands(parser), f"compose service {name}: {command[0]}"
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(command)
            except SystemExit:
                pytest.fail(f"compose service {name}: `cas {' '.join(command)}`: {err.getvalue()}")


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert len(starts) >= 2, "the Dockerfile is multi-stage"
    return instructions[starts[-1] :]


def test_image_runs_as_an_unprivileged_numeric_user_with_a_healthcheck() -> None:
    stage = final_stage(dockerfile_instructions())
    users = [rest for word, rest in stage if word == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), users
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in stage)
    assert ("ENTRYPOINT", '["cas"]') in stage
    assert "slim" in dict(dockerfile_instructions())["ARG"]


def test_image_bakes_in_no_secret() -> None:
    secretish = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|_KEY\b)", re.IGNORECASE)
    for word, rest in dockerfile_instructions():
        if word in {"ENV", "ARG", "LABEL"}:
            assert not secretish.search(rest), (word, rest)
        if word in {"COPY", "ADD"} and "--from=" not in rest:
            sources = rest.split()[:-1]
            assert all(
                s in {"pyproject.toml", "README.md", "cas", "sitemap", "caslab"} for s in sources
            )


def test_build_context_holds_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded unless named"
    assert {line[1:] for line in lines if line.startswith("!")} == {
        "pyproject.toml", "README.md", "cas", "sitemap", "caslab",
    }  # fmt: skip
    for pattern in ("**/*.key", "**/*.pem", "**/secrets"):
        assert pattern in lines
