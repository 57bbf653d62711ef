"""The documents a lab describes itself with: the sitemap its nodes run on, and its manifest.

Functions of a started `Lab` (`caslab.runner`): `write_sitemap` writes the YAML the nodes are
started with; `manifest_document` is what `cas lab` writes for clients (docs/contract.md).

The lab has two requesters with different permission levels (`REQUESTERS`): `scheduler` (the
manifest's `client`) sees subjects and locations, `viewer` only times, on every mailbox; a
lookup without a login is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from caslab.seed import SeedMailbox
from caslab.topology import DOMAIN

if TYPE_CHECKING:
    from caslab.runner import Lab, LabSite


# name -> (the lab's secret holding its password, the level the lab's permissions give it)
REQUESTERS = {
    "scheduler": ("client", "FreeBusyTimeAndSubjectAndLocation"),
    "viewer": ("viewer", "FreeBusyTimeOnly"),
}
PERMISSIONS = {
    "default": "FreeBusyTimeOnly",
    "anonymous": "None",
    "grants": [
        {"user": name, "level": level}
        for name, (_, level) in REQUESTERS.items()
        if level != "FreeBusyTimeOnly"
    ],
}


def legacy_dn(site: str, mailbox: SeedMailbox) -> str:
    return f"/o=Contoso/ou={site.upper()}/cn=Recipients/cn={mailbox.address.split('@')[0]}"


def write_sitemap(lab: Lab) -> Path:
    secret_dir = lab.root / "secrets"
    document = {
        "settings": {
            "cluster_secret_file": str(secret_dir / "cluster"),
            "peer_ca_file": str(lab.ca.cert),
            "admin_token_file": str(secret_dir / "admin-token"),
            "change_token_file": str(secret_dir / "change-token"),
            "shutdown_drain_seconds": 0,  # no load balancer to drain from on loopback
            # With Radicale's hook pushing every write, confirming by change tag is only a
            # safety net; without it, the default interval (5 s) bounds what a change takes.
            **({"cache_validate_seconds": 30} if lab.options.push else {}),
        },
        "domains": [DOMAIN],
        "dns": {"nameservers": ["127.0.0.1"], "port": lab.dns.port, "timeout_seconds": 1},
        "auth": {
            "users": [
                {"username": name, "password_file": str(secret_dir / secret)}
                for name, (secret, _) in REQUESTERS.items()
            ]
        },
        "permissions": PERMISSIONS,
        "sites": [site_document(lab, site, secret_dir) for site in lab.sites],
        "mailboxes": [
            {
                "address": m.address,
                "site": site.name,
                "kind": "modern",
                "display_name": m.display_name,
                "timezone": m.timezone,
            }
            for site in lab.sites
            for m in site.mailboxes
        ]
        + [
            {
                "address": m.address,
                "site": site.name,
                "kind": "legacy",
                "legacy_dn": legacy_dn(site.name, m),
                "display_name": m.display_name,
                "timezone": m.timezone,
            }
            for site in lab.sites
            for m in site.legacy_mailboxes
        ],
    }
    path = lab.root / "sitemap.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def site_document(lab: Lab, site: LabSite, secret_dir: Path) -> dict[str, object]:
    part = lab.topology.site(site.name)
    document: dict[str, object] = {
        "name": site.name,
        "timezone": site.timezone,
        "srv": site.srv,
        "costs": dict(part.costs),
        "caldav": {
            "url": site.backend_url,
            "username": "cas",
            "max_connections": 16,
            "password_file": str(secret_dir / "caldav-cas"),
        },
    }
    if site.legacy_mailboxes and lab.legacy is not None:
        document["legacy"] = {"url": lab.legacy.public_url}
    if site.redis is not None:
        document["redis"] = site.redis.url
    return document


def manifest_document(lab: Lab) -> dict[str, object]:
    return {
        "domain": DOMAIN,
        "topology": lab.topology.as_dict(),
        "dns": {"host": "127.0.0.1", "port": lab.dns.port},
        "ca_cert": str(lab.ca.cert),
        "sitemap": str(lab.sitemap_path),
        "client": {"username": lab.client_user, "password": lab.passwords["client"]},
        "requesters": [
            {"username": name, "password": lab.passwords[secret], "level": level}
            for name, (secret, level) in REQUESTERS.items()
        ],
        "anonymous_lookups": "refused",
        "admin_token": lab.passwords["admin-token"],
        "sites": [
            {
                "name": site.name,
                "nodes": site.nodes,
                "srv": site.srv,
                "caldav": {
                    "url": site.radicale.url + "/",
                    "username": "admin",
                    "password": lab.passwords["caldav-admin"],
                },
                "legacy": {"url": lab.legacy.public_url}
                if site.legacy_mailboxes and lab.legacy is not None
                else None,
                "redis": site.redis.url if site.redis is not None else None,
            }
            for site in lab.sites
        ],
        "mailboxes": [
            {
                "address": m.address,
                "site": site.name,
                "kind": "modern",
                "display_name": m.display_name,
                "timezone": m.timezone,
                "calendar_url": f"{site.radicale.url}/{m.address}/calendar/",
            }
            for site in lab.sites
            for m in site.mailboxes
        ]
        + [
            {
                "address": m.address,
                "site": site.name,
                "kind": "legacy",
                "display_name": m.display_name,
                "timezone": m.timezone,
                "legacy_dn": legacy_dn(site.name, m),
                "legacy_url": lab.legacy.public_url if lab.legacy else None,
            }
            for site in lab.sites
            for m in site.legacy_mailboxes
        ],
    }
