"""A real `cas serve` node whose callers log in against a users file of argon2 hashes.

exchangelib logs in with HTTP Basic; the node's challenges, its anonymous doors, and changing a
password in the file without a restart are checked over HTTPS; the node's log must never hold
a password.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from exchangelib import DELEGATE, Account, Configuration, Credentials, EWSTimeZone
from exchangelib.errors import UnauthorizedError
from exchangelib.protocol import close_connections
from exchangelib.transport import BASIC

from cas.identity import hash_password
from tests.support.cluster import Cluster, start_cluster
from tests.support.node import make_test_ca

PASSWORDS = {"ann": "ann-Pa55-word", "bob": "bob-0ld-secret"}
NEW_BOB = "bob-N3w-secret"


def write_users(path: Path, passwords: dict[str, str]) -> None:
    lines = [f"{name}:{hash_password(pw)}:staff\n" for name, pw in passwords.items()]
    path.write_text("".join(lines))
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("identity-node")
    ca = make_test_ca(root / "tls")
    users = root / "users.txt"
    write_users(users, PASSWORDS)
    running = start_cluster(
        root, ca, {"eu": ["ann", "bob"]}, nodes_per_site=1,
        top_fields={"auth": {"users_file": str(users), "realm": "Contoso CAS"}},
    )  # fmt: skip
    try:
        yield running
    finally:
        close_connections()
        running.stop()


@pytest.fixture(scope="module")
def ca_env(cluster: Cluster) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(cluster.ca.ca_pem))
        yield


def client(cluster: Cluster) -> httpx.Client:
    return httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=30)


def free_busy(cluster: Cluster, user: str, password: str) -> list:  # type: ignore[type-arg]
    close_connections()
    node = cluster.sites["eu"][0]
    config = Configuration(
        service_endpoint=node.direct_url + "/EWS/Exchange.asmx",
        credentials=Credentials(user, password),
        auth_type=BASIC,
    )
    account = Account(
        "eu-ann@contoso.test", config=config, autodiscover=False, access_type=DELEGATE
    )
    zone = EWSTimeZone("UTC")
    start = dt.datetime(2024, 3, 4, tzinfo=dt.UTC).astimezone(zone)
    return list(
        account.protocol.get_free_busy_info(
            [("eu-ann@contoso.test", "Required", False), ("eu-bob@contoso.test", "Required", False)],
            start, start + dt.timedelta(days=1), 60, "FreeBusy",
        )
    )  # fmt: skip


def test_exchangelib_logs_in_with_basic_against_the_users_file(
    cluster: Cluster, ca_env: None
) -> None:
    answers = free_busy(cluster, "ann", PASSWORDS["ann"])
    assert len(answers) == 2
    assert all(not isinstance(a, Exception) for a in answers), answers
    with pytest.raises(UnauthorizedError):
        free_busy(cluster, "ann", "not-" + PASSWORDS["ann"])


def test_lookups_are_refused_with_a_basic_challenge(cluster: Cluster) -> None:
    url = cluster.sites["eu"][0].direct_url
    with client(cluster) as http:
        ews = http.post(url + "/EWS/Exchange.asmx", content=b"<x/>")
        assert ews.status_code == 401
        assert ews.headers["www-authenticate"] == 'Basic realm="Contoso CAS", charset="UTF-8"'
        assert http.get(url + "/public/?cmd=freebusy&u=SMTP:eu-ann@contoso.test").status_code == 401
        assert http.post(url + "/api/v1/availability", json={}).status_code == 401
        for door in (
            "/healthz",
            "/readyz",
            "/autodiscover/autodiscover.json/v1.0/eu-ann@contoso.test?Protocol=EWS",
        ):
            assert http.get(url + door).status_code == 200, door


def test_a_password_changed_in_the_file_takes_effect_without_a_restart(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = cluster.sites["eu"][0].direct_url + "/api/v1/availability"
    body = {"schedules": ["eu-bob@contoso.test"],
            "startTime": {"dateTime": "2024-03-04T00:00:00"},
            "endTime": {"dateTime": "2024-03-05T00:00:00"}}  # fmt: skip
    users = cluster.root / "users.txt"
    pid = cluster.sites["eu"][0].process.pid  # type: ignore[union-attr]
    with client(cluster) as http:
        assert http.post(url, json=body, auth=("bob", PASSWORDS["bob"])).status_code == 200
        write_users(users, {"ann": PASSWORDS["ann"], "bob": NEW_BOB})
        deadline = time.monotonic() + 30
        while http.post(url, json=body, auth=("bob", NEW_BOB)).status_code != 200:
            assert time.monotonic() < deadline, "the new password was never accepted"
            time.sleep(0.5)
        # the old password, remembered a moment ago, is forgotten with the old file
        assert http.post(url, json=body, auth=("bob", PASSWORDS["bob"])).status_code == 401
    assert cluster.sites["eu"][0].process.pid == pid  # type: ignore[union-attr]


def test_the_node_log_holds_no_password(cluster: Cluster) -> None:
    node = cluster.sites["eu"][0]
    with client(cluster) as http:
        refused = http.post(node.direct_url + "/api/v1/availability", json={},
                            auth=("ann", "guess-" + PASSWORDS["ann"]))  # fmt: skip
        assert refused.status_code == 401
    deadline = time.monotonic() + 10
    while "refused the password of user 'ann'" not in node.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the refusal was not logged"
        time.sleep(0.1)
    log = node.log.read_text(errors="replace")
    for secret in (*PASSWORDS.values(), NEW_BOB, "guess-"):
        assert secret not in log
