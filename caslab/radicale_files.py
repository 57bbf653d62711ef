"""The files a lab Radicale runs from: its users, its rights, its config (with the storage hook
that tells the site's nodes of every write), written into one folder.

`caslab.radicale.RadicaleServer` uses them to start a server; `cas lab-radicale`
(`caslab.parts`) writes them for a container.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path


class RadicaleError(RuntimeError):
    """Radicale could not be started, or refused a lab request."""


def check_accounts(users: Mapping[str, str], admins: Iterable[str], readers: Iterable[str]) -> None:
    """Raise `ValueError` unless every admin and reader has a password and every name is usable."""
    missing = [u for u in (*admins, *readers) if u not in users]
    if missing:
        raise ValueError(f"accounts {missing} have no password in `users`")
    bad = [u for u in users if not u or any(c in u for c in ":'\"*?,/\n")]
    if bad:
        raise ValueError(f"user names {bad} contain characters Radicale refuses")


def write_users(folder: Path, users: Mapping[str, str]) -> Path:
    """`folder/users`: an htpasswd file with plain-text passwords (lab only), mode 0600."""
    lines = [f"{name}:{password}\n" for name, password in users.items()]
    path = folder / "users"
    path.write_text("".join(lines), encoding="utf-8")
    path.chmod(0o600)
    return path


def write_rights(folder: Path, admins: Iterable[str], readers: Iterable[str]) -> Path:
    """`folder/rights`: admins read/write everything, readers read everything, users their tree."""

    # First matching section wins. Patterns pass through str.format() and configparser
    # interpolation in Radicale, hence the doubled braces and percent signs.
    def pattern(name: str) -> str:
        escaped = re.escape(name).replace("{", "{{").replace("}", "}}")
        return escaped.replace("%", "%%")

    sections: list[tuple[str, str, str, str]] = []
    for i, name in enumerate(admins):
        sections.append((f"admin{i}", pattern(name), ".*", "RrWw"))
    for i, name in enumerate(readers):
        sections.append((f"reader{i}", pattern(name), ".*", "Rr"))
    sections += [
        ("root", ".+", "", "R"),
        ("principal", ".+", "{user}", "RW"),
        ("calendars", ".+", "{user}/[^/]+", "rw"),
    ]
    text = "".join(
        f"[{section}]\nuser: {user}\ncollection: {collection}\npermissions: {permissions}\n\n"
        for section, user, collection, permissions in sections
    )
    path = folder / "rights"
    path.write_text(text, encoding="utf-8")
    return path


def write_config(
    folder: Path,
    host: str,
    port: int,
    *,
    max_connections: int = 32,
    auth_delay: float = 0.05,
    log_level: str = "warning",
    hook: str = "",
) -> Path:
    """`folder/config`, naming `folder/users`, `folder/rights` and `folder/collections`;
    `hook` is run by Radicale after every write (its `[storage] hook`)."""
    if "\n" in hook:
        raise RadicaleError("a storage hook is one line")
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    text = f"""[server]
hosts = {listen}
max_connections = {max_connections}

[auth]
type = htpasswd
htpasswd_filename = {folder / "users"}
htpasswd_encryption = plain
delay = {auth_delay}

[rights]
type = from_file
file = {folder / "rights"}

[storage]
filesystem_folder = {folder / "collections"}
hook = {hook}

[web]
type = none

[logging]
level = {log_level}
"""
    path = folder / "config"
    path.write_text(text, encoding="utf-8")
    return path


def write_server_files(
    folder: str | Path,
    users: Mapping[str, str],
    *,
    admins: Iterable[str],
    readers: Iterable[str],
    host: str,
    port: int,
    max_connections: int = 32,
    auth_delay: float = 0.05,
    log_level: str = "warning",
) -> Path:
    """Check the accounts, make `folder/collections` and write users, rights and config files.

    Returns the config file, ready for `radicale_command`.
    """
    admins, readers = tuple(admins), tuple(readers)
    check_accounts(users, admins, readers)
    root = Path(folder).resolve()
    (root / "collections").mkdir(parents=True, exist_ok=True)
    write_users(root, users)
    write_rights(root, admins, readers)
    return write_config(
        root, host, port,
        max_connections=max_connections, auth_delay=auth_delay, log_level=log_level,
    )  # fmt: skip


def change_hook(
    nodes: Iterable[str], ca_file: str | Path, token_file: str | Path, *, when: str | Path
) -> str:
    """A Radicale storage hook that tells the site's nodes what changed: `curl` POSTs the
    changed path to `/api/v1/changes` of the first node that answers (docs/freshness.md).
    It does nothing until the file `when` exists (the lab seeds its calendars first)."""
    urls = " ".join(shlex.quote(u.rstrip("/") + "/api/v1/changes") for u in nodes)
    token = f'"$(cat {shlex.quote(str(token_file))})"'
    return (
        f"[ -e {shlex.quote(str(when))} ] || exit 0; "
        f"for u in {urls}; do curl -fsS -m 5 --cacert {shlex.quote(str(ca_file))} "
        f'--oauth2-bearer {token} --data-urlencode path=%(path)s "$u" >/dev/null && break; done'
    )
