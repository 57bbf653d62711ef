"""What identities cost: warm lookups with real logins, and a 50,000-mailbox LDAP directory.

    .venv/bin/python bench/identity.py [--seconds 10] [--connections 16] [--mailboxes 50000]

1. Warm single-mailbox 1-day EWS lookup, requests per second on ONE uvicorn worker, logging in
   with HTTP Basic (a) against a users file of argon2id hashes and (b) against a real slapd
   (LDAP bind, groups from memberOf), each against a bare Starlette endpoint on the same server
   returning the same bytes (bench/serve_with_bare.py; same load tool, wrk, same connections).
   "Warm": the lookup was answered once, so the mailbox is cached and the login remembered.
   Target: at least 0.5 of the bare endpoint.
2. A directory of --mailboxes people (mail, two proxyAddresses, site, legacyExchangeDN,
   displayName) and 100 groups in a real slapd (loaded offline with slapadd): the time of the
   first read, of a refresh, and the RSS of a `cas serve` node holding it, against the same node
   with a 4-mailbox YAML directory.

Needs wrk, redis-server and slapd besides the project (`bash bench/setup`; slapd comes with
`bash scripts/setup`); without them it says so and exits 2. Bounded: wrk runs --seconds; every
wait has a deadline; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import wrk
from common import measure, request_body, require, running_lab, stop, today_utc

HERE = Path(__file__).resolve().parent
SUFFIX = "dc=contoso,dc=test"
SERVICE_DN = f"cn=cas,{SUFFIX}"
SERVICE_PASSWORD = "bench-service-secret"
USER, PASSWORD = "bench-user", "bench-Pa55word"


def serve(sitemap: Path, tls: Path, bare: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, str(HERE / "serve_with_bare.py"), "--config", str(sitemap),
            "--site", "eu", "--port", str(port), "--tls-cert", str(tls / "node.pem"),
            "--tls-key", str(tls / "node.key"), "--bare-body", str(bare),
        ]
    )  # fmt: skip


def wait_ready(client, url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode}")
        try:
            if client.get(url + "/readyz").status_code == 200:
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not become ready")
        time.sleep(0.2)


def login_throughput(
    manifest: dict,  # type: ignore[type-arg]
    auth: dict,  # type: ignore[type-arg]
    tmp: Path,
    args: argparse.Namespace,
    ldap: dict | None = None,  # type: ignore[type-arg]
    changes: dict | None = None,  # type: ignore[type-arg]
    user: tuple[str, str] = (USER, PASSWORD),
) -> tuple[float, float]:
    """(EWS, bare) requests per second with the lab's sitemap, its `auth` replaced by `auth`
    (and its `ldap` section set to `ldap`), top-level `changes` applied, and throttling off
    unless `changes` sets its settings: one user asks as fast as it can."""
    import httpx

    from caslab.process import free_port

    document = yaml.safe_load(Path(manifest["sitemap"]).read_text())
    document["auth"] = auth
    document["settings"] = {**document.get("settings", {}), "throttle_rate": 0}
    if ldap is not None:
        document["ldap"] = ldap
    document.update(changes or {})
    sitemap = tmp / "sitemap.yaml"
    sitemap.write_text(yaml.safe_dump(document, sort_keys=False))
    port, bare = free_port(), tmp / "bare.xml"
    tls = Path(manifest["ca_cert"]).parent
    server = serve(sitemap, tls, bare, port)
    try:
        base = f"https://127.0.0.1:{port}"
        address = manifest["mailboxes"][0]["address"]
        start = today_utc()
        body = request_body([address], start, start + dt.timedelta(days=1))
        with httpx.Client(verify=manifest["ca_cert"], auth=user, trust_env=False,
                          timeout=60) as client:  # fmt: skip
            wait_ready(client, base, server)
            measure(client, base + "/EWS/Exchange.asmx", body, 3, 30, 1)  # warm cache and login
            answer = client.post(base + "/EWS/Exchange.asmx", content=body,
                                 headers={"Content-Type": "text/xml; charset=utf-8"})  # fmt: skip
            bare.write_bytes(answer.content)
        ews = wrk(base + "/EWS/Exchange.asmx", body, user, args.seconds, args.connections, tmp)
        plain = wrk(base + "/bare", body, user, args.seconds, args.connections, tmp)
        return ews, plain
    finally:
        stop(server)


def people_ldif(count: int) -> str:
    from caslab.slapd import ssha

    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Contoso\ndc: contoso\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: cas\nuserPassword: {ssha(SERVICE_PASSWORD)}\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: uid={USER},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {USER}\ncn: Bench\n"
        f"sn: bench\nmail: {USER}@contoso.test\nl: eu\nuserPassword: {ssha(PASSWORD)}\n",
    ]
    for i in range(count):
        site = "eu"
        entries.append(
            f"dn: uid=p{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
            f"objectClass: casMailRecipient\nuid: p{i}\ncn: Person {i}\nsn: p{i}\n"
            f"displayName: Person Number {i}\nmail: p{i}@contoso.test\nl: {site}\n"
            f"proxyAddresses: SMTP:p{i}@contoso.test\nproxyAddresses: smtp:person.{i}@contoso.test\n"
            f"proxyAddresses: X500:/o=Contoso/ou=old/cn=Recipients/cn=p{i}\n"
            f"legacyExchangeDN: /o=Contoso/ou=Exchange Administrative Group/cn=Recipients/cn=p{i}\n"
        )
    for g in range(100 if count else 0):
        members = "".join(
            f"member: uid=p{i},ou=people,{SUFFIX}\n" for i in range(g, count, max(1, count // 200))
        )
        entries.append(
            f"dn: cn=group{g},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: group{g}\n{members}"
        )
    return "\n".join(entries)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def node_rss(sitemap: Path, tls: Path, ca: str) -> int:
    """RSS (KiB) of a `cas serve` node with `sitemap`, once ready."""
    import httpx

    from caslab.process import free_port

    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "cas", "serve", "--config", str(sitemap), "--site", "eu",
         "--port", str(port), "--tls-cert", str(tls / "node.pem"), "--tls-key", str(tls / "node.key")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with httpx.Client(verify=ca, trust_env=False, timeout=10) as client:
            wait_ready(client, f"https://127.0.0.1:{port}", node, timeout=300)
        time.sleep(1)
        return rss_kib(node.pid)
    finally:
        stop(node)


def directory_figures(manifest: dict, count: int, tmp: Path) -> dict[str, float]:  # type: ignore[type-arg]
    from caslab.slapd import SlapdProcess
    from sitemap.ldapdir import LdapDirectory
    from sitemap.load import load_sitemap

    big = SlapdProcess(tmp / "slapd-big")
    began = time.monotonic()
    big.add_ldif(people_ldif(count))
    loaded = time.monotonic() - began
    big.start()
    try:
        document = yaml.safe_load(Path(manifest["sitemap"]).read_text())
        small_rss = node_rss(
            Path(manifest["sitemap"]), Path(manifest["ca_cert"]).parent, manifest["ca_cert"]
        )
        (tmp / "ldap-secret").write_text(SERVICE_PASSWORD)
        document.pop("mailboxes", None)
        document.pop("mailboxes_csv", None)
        document["ldap"] = {"url": big.url, "bind_dn": SERVICE_DN, "password_file": str(tmp / "ldap-secret"),
                            "timeout_seconds": 30}  # fmt: skip
        document["directory"] = {"source": "ldap", "base": f"ou=people,{SUFFIX}", "site_attribute": "l",
                                 "group_base": f"ou=groups,{SUFFIX}", "refresh_seconds": 3600}  # fmt: skip
        sitemap_path = tmp / "sitemap-ldap.yaml"
        sitemap_path.write_text(yaml.safe_dump(document, sort_keys=False))
        directory = load_sitemap(sitemap_path).directory
        assert isinstance(directory, LdapDirectory)
        began = time.monotonic()
        directory.load()
        first = time.monotonic() - began
        report = directory.refresh()
        mailboxes = len(directory)
        rss = node_rss(sitemap_path, Path(manifest["ca_cert"]).parent, manifest["ca_cert"])
        return {"slapadd_s": loaded, "first_s": first, "refresh_s": report.seconds,
                "mailboxes": mailboxes, "groups": report.groups, "rss_kib": rss,
                "small_rss_kib": small_rss}  # fmt: skip
    finally:
        big.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mailboxes", type=int, default=50_000)
    args = parser.parse_args()
    require(commands=("wrk",), redis_server=True)
    from caslab.slapd import SlapdProcess, find_slapd

    if find_slapd() is None or not (shutil.which("slapadd") or Path("/usr/sbin/slapadd").exists()):
        print("identity.py: slapd is not installed; run `bash scripts/setup`", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    from cas.identity import hash_password

    rows = []
    with running_lab("--sites", "1", "--nodes-per-site", "1", "--mailboxes-per-site", "4") as manifest, \
            tempfile.TemporaryDirectory(prefix="cas-bench-") as tmp_name:  # fmt: skip
        tmp = Path(tmp_name)
        users = tmp / "users.txt"
        users.write_text(f"{USER}:{hash_password(PASSWORD)}:bench\n")
        ews, bare = login_throughput(manifest, {"users_file": str(users)}, tmp, args)
        rows.append(("Basic, users file (argon2id)", ews, bare))
        slapd = SlapdProcess(tmp / "slapd")
        slapd.add_ldif(people_ldif(0))
        slapd.start()
        try:
            (tmp / "ldap-secret").write_text(SERVICE_PASSWORD)
            server = {"url": slapd.url, "bind_dn": SERVICE_DN,
                      "password_file": str(tmp / "ldap-secret")}  # fmt: skip
            auth = {"ldap": {"user_base": f"ou=people,{SUFFIX}"}}
            ews, bare = login_throughput(manifest, auth, tmp, args, ldap=server)
            rows.append(("Basic, LDAP bind (slapd)", ews, bare))
        finally:
            slapd.stop()
        figures = directory_figures(manifest, args.mailboxes, tmp)

    console = Console()
    table = Table(
        title=f"Warm single-mailbox 1-day EWS lookup, 1 uvicorn worker, wrk {args.connections} connections"
    )
    for column in ("login", "requests/s", "bare requests/s", "ratio to bare"):
        table.add_column(column, justify="left" if column == "login" else "right")
    for name, ews, bare in rows:
        table.add_row(name, f"{ews:.0f}", f"{bare:.0f}", f"{ews / bare:.2f}")
    console.print(table)
    print("target: ratio >= 0.5")
    table = Table(
        title=f"LDAP directory of {figures['mailboxes']:.0f} mailboxes, {figures['groups']:.0f} groups"
    )
    for column in ("figure", "value"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    table.add_row("slapadd of the seed (setup, not the product)", f"{figures['slapadd_s']:.1f} s")
    table.add_row("first read (node start)", f"{figures['first_s']:.1f} s")
    table.add_row("refresh", f"{figures['refresh_s']:.1f} s")
    table.add_row("node RSS with it", f"{figures['rss_kib'] / 1024:.0f} MiB")
    table.add_row(
        "node RSS with a 4-mailbox YAML directory", f"{figures['small_rss_kib'] / 1024:.0f} MiB"
    )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
