"""Permission levels, throttling and secrets with every part real: `cas serve` nodes of two
sites over HTTPS, Radicale behind them, one real redis-server, a users file of argon2 hashes
with groups, and the site map's permissions.

* Two requesters with different levels ask mailboxes of both sites through one node, in both
  orders, and each sees exactly its level; the site that owns a mailbox decides.
* A requester's bucket is the site's: spent at one node, it is spent at the other.
* Nothing the nodes log, at debug level, holds a secret of the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from caslab.redis import RedisProcess
from tests.support.cluster import Cluster, start_cluster, users_file_auth
from tests.support.node import make_test_ca
from tests.support.redis import redis_servers
from tests.unit.test_ews_endpoint import availability

M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
START, END = "2024-03-04T08:00:00Z", "2024-03-04T12:00:00Z"  # 4 hourly slots
ANN, CY = "eu-ann@contoso.test", "us-cy@contoso.test"
USERS = {"helper": ("helper-Pa55", "helpdesk,staff"), "hammer": ("hammer-Pa55", "staff")}
BURST = 30


def event(hour: int, summary: str, location: str, private: bool = False) -> str:
    return f"""
BEGIN:VEVENT
UID:{uuid.uuid4()}
DTSTAMP:20240101T000000Z
DTSTART:20240304T{hour:02d}0000Z
DTEND:20240304T{hour + 1:02d}0000Z
SUMMARY:{summary}
LOCATION:{location}
{"CLASS:PRIVATE" if private else "CLASS:PUBLIC"}
END:VEVENT"""


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    for servers in redis_servers(tmp_path_factory, ["site"]):
        yield servers["site"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis: RedisProcess):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("permissions-cluster")
    ca = make_test_ca(root / "tls")
    auth = users_file_auth(root, USERS)
    permissions = {
        "default": "FreeBusyTimeOnly",
        "grants": [{"group": "helpdesk", "level": "FreeBusyTimeAndSubjectAndLocation"}],
    }
    cluster = start_cluster(
        root, ca, {"eu": ["ann"], "us": ["cy"]}, nodes_per_site=2,
        settings={"log_level": "debug", "throttle_rate": 0.01, "throttle_burst": BURST},
        redis_url=redis.url, top_fields={"auth": auth, "permissions": permissions},
    )  # fmt: skip
    try:
        cluster.write_events(
            ANN, [event(9, "Budget", "Room 7"), event(10, "Dentist", "Town", True)]
        )
        cluster.write_events(CY, [event(8, "Standup", "Hall"), event(11, "Gym", "Club", True)])
        yield cluster
    finally:
        cluster.stop()


def login(cluster: Cluster, user: str) -> tuple[str, str]:
    return cluster.client if user == "scheduler" else (user, USERS[user][0])


def ask(cluster: Cluster, user: str, addresses: list[str], site: str = "eu", node: int = 0):  # type: ignore[no-untyped-def]
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=30) as client:
        return client.post(
            cluster.sites[site][node].direct_url + "/EWS/Exchange.asmx",
            content=availability(addresses, start=START, end=END, view="DetailedMerged"),
            auth=login(cluster, user),
        )


def seen(body: bytes) -> list[tuple[str | None, list[tuple[str | None, str | None]] | None]]:
    """Per mailbox: the view type, and (subject, location) per event or None without details."""
    found = []
    for view in etree.fromstring(body).iter(f"{M}FreeBusyView"):
        details = list(view.iter(f"{T}CalendarEventDetails"))
        shown = [(d.findtext(f"{T}Subject"), d.findtext(f"{T}Location")) for d in details]
        found.append((view.findtext(f"{T}FreeBusyViewType"), shown or None))
    return found


TIMES = ("FreeBusyMerged", None)
EXPECTED = {
    "scheduler": [TIMES, TIMES],
    "helper": [
        ("DetailedMerged", [("Budget", "Room 7"), (None, None)]),
        ("DetailedMerged", [("Standup", "Hall"), (None, None)]),
    ],
}


@pytest.mark.parametrize("order", [("scheduler", "helper"), ("helper", "scheduler")])
def test_each_requester_sees_its_level_across_sites_in_either_order(
    cluster: Cluster, order: tuple[str, str]
) -> None:
    for site in ("eu", "us"):
        for user in order * 2:
            r = ask(cluster, user, [ANN, CY], site=site)
            assert r.status_code == 200, r.text
            assert seen(r.content) == EXPECTED[user], (site, user)


def test_a_requesters_bucket_is_the_sites_not_the_nodes(cluster: Cluster) -> None:
    for _ in range(BURST // 2):
        assert ask(cluster, "hammer", [ANN, CY], node=0).status_code == 200
    refused = ask(cluster, "hammer", [ANN], node=1)  # the other node of eu: same bucket
    assert refused.status_code == 500 and b"ErrorServerBusy" in refused.content
    assert b'Name="BackOffMilliseconds"' in refused.content
    assert ask(cluster, "hammer", [ANN], site="us").status_code == 200  # us counts its own
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=10) as client:
        text = client.get(cluster.sites["eu"][1].direct_url + "/metrics").text
    assert 'cas_throttled_total{endpoint="ews"} 1.0' in text


def test_nothing_the_nodes_log_holds_a_secret(cluster: Cluster) -> None:
    """Run the paths that log about credentials (a refused password, a forged token, a
    forwarded request), then look for every secret of the run in every node's log."""
    assert ask(cluster, "helper", [ANN, CY]).status_code == 200
    with httpx.Client(verify=str(cluster.ca.ca_pem), trust_env=False, timeout=10) as client:
        node = cluster.sites["eu"][0].direct_url
        wrong = client.post(node + "/EWS/Exchange.asmx", content=availability([ANN]),
                            auth=("helper", "not-" + USERS["helper"][0]))  # fmt: skip
        assert wrong.status_code == 401
        forged = client.post(node + "/EWS/Exchange.asmx", content=availability([ANN]),
                             headers={"X-CAS-Forwarded": "v2;from=us;to=eu;sig=" + cluster.secret})  # fmt: skip
        assert forged.status_code == 401
    root = cluster.root
    secrets = {
        "cluster secret": cluster.secret,
        "client password": cluster.client[1],
        "CalDAV password": cluster.service[1],
        "CalDAV admin password": cluster.admin[1],
        "admin token": cluster.admin_token,
        **{f"password of {name}": pw for name, (pw, _) in USERS.items()},
        **{f"hash of {line.split(':')[0]}": line.split(":")[1]
           for line in (root / "users.txt").read_text().splitlines()},
    }  # fmt: skip
    logs = {n.log.name: n.log.read_text(errors="replace") for n in cluster.nodes()}
    everything = "\n".join(logs.values())
    # the scan means something: the logs are at debug level and saw what was just done
    assert "refused the password of user 'helper'" in everything
    assert "refused a forwarded request" in everything
    assert "DEBUG" in everything
    for name, text in logs.items():
        for what, value in secrets.items():
            assert value and value not in text, f"{what} is in {name}"
