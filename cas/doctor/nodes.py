"""Doctor checks of one node: its TLS certificate, readiness, version, and trust of our secret.

A node is dialled at its URL. One found through DNS SRV is dialled at the address but verified
by its SRV target name (SNI and certificate check), as `cas.sources.peers` does, so a certificate
that names the host but not the pod address passes here exactly when forwarding works.

* `tls`: a TLS handshake verified against `peer_ca_file` (else the default CA bundle); on a
  name mismatch a second handshake, without the name check, tells which names it does carry.
* `ready`: `GET /readyz`, 200 or the reason the node gives.
* `version`: `GET /healthz` with `Accept: application/json`: the version and the site the
  node serves, which must be the site the sitemap lists it under.
* `trust`: a `ConvertId` (the EWS version probe) signed with the cluster secret the way
  `cas.sources.peers` signs a forwarded request; 200 means the node accepts this cluster's
  signature, 401/403 that it does not (and why, in the node's words).
* `breakers`: what the node's own breakers say of its dependencies (its backend, old server,
  Redis, the other sites' nodes), from `/healthz` as JSON: fails while any is open, naming it,
  how long it has been down and its last failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets as secrets_module
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from cas import __version__
from cas.codecs.ews.client import EwsClientError
from cas.codecs.ews.convert_id import parse_convert_id_response, render_convert_id_request
from cas.doctor.run import Check, Outcome, failed, passed
from cas.doctor.words import HOSTNAME_MISMATCH, describe_error
from cas.trust import EWS_PATH, REQUEST_ID_HEADER, ForwardClaims, sign_request
from cas.trust import HEADER as FORWARD_HEADER

__all__ = ["NodeProbes", "NodeTarget"]

REASON_CHARS = 200


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """A node of `site` at `url`; `name` is the SRV target it was found as (None: static)."""

    site: str
    url: str
    name: str | None = None

    @property
    def host(self) -> str:
        return httpx.URL(self.url).host

    @property
    def port(self) -> int:
        url = httpx.URL(self.url)
        return url.port or (443 if url.scheme == "https" else 80)

    @property
    def verified_as(self) -> str:
        """The name its certificate must carry: the SRV name when dialled at an address."""
        return self.name if self.name and _is_address(self.host) else self.host

    @property
    def extensions(self) -> dict[str, Any]:
        return {"sni_hostname": self.name} if self.verified_as != self.host else {}

    def describe(self) -> str:
        return f"{self.url} ({self.name})" if self.name else self.url


def _reason(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text[:REASON_CHARS] or f"HTTP {response.status_code}"


def _names(cert: dict[str, Any]) -> list[str]:
    return [value for _, value in cert.get("subjectAltName", ())]


def _until(cert: dict[str, Any]) -> str:
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    return expires.strftime("%Y-%m-%d")


class NodeProbes:
    """The checks of nodes, sharing one HTTP client (which verifies like the node's own).

    `tls` verifies certificates as nodes do (`cas.app.peer_tls_context`); `tls_any_name` is
    the same trust without the name check, to tell which names a certificate does carry;
    `ca_file` is named in certificate failures; `secret` signs the trust probe (None: no
    trust check); the first of `sitemap_sites` other than a node's own signs as the sender.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        tls: ssl.SSLContext,
        tls_any_name: ssl.SSLContext,
        *,
        ca_file: str | None,
        secret: bytes | None,
        sitemap_sites: tuple[str, ...],
    ) -> None:
        self.client = client
        self.tls = tls
        self.tls_any_name = tls_any_name
        self.ca_file = ca_file
        self.secret = secret
        self.sites = sitemap_sites

    def checks(self, node: NodeTarget) -> list[Check]:
        target = node.describe()
        found: list[Check] = []
        if httpx.URL(node.url).scheme == "https":
            found.append(Check(node.site, "tls", target, lambda: self.handshake(node)))
        found.append(Check(node.site, "ready", target, lambda: self.ready(node)))
        found.append(Check(node.site, "version", target, lambda: self.version(node)))
        if self.secret is not None:
            found.append(Check(node.site, "trust", target, lambda: self.trust(node)))
        found.append(Check(node.site, "breakers", target, lambda: self.breakers(node)))
        return found

    # --- TLS --------------------------------------------------------------------------------

    async def _open(self, node: NodeTarget, context: ssl.SSLContext) -> dict[str, Any]:
        """Handshake, then the peer certificate and the protocol; the connection is dropped."""
        _, writer = await asyncio.open_connection(
            node.host, node.port, ssl=context, server_hostname=node.verified_as
        )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            cert = dict(ssl_object.getpeercert() or {})
            cert["protocol"] = ssl_object.version()
            return cert
        finally:
            writer.transport.abort()

    async def _names_anyway(self, node: NodeTarget) -> str:
        try:
            names = _names(await self._open(node, self.tls_any_name))
        except (OSError, asyncio.IncompleteReadError):
            return "names it carries unknown"
        return f"it names {', '.join(names) or 'nothing'}"

    async def handshake(self, node: NodeTarget) -> Outcome:
        try:
            cert = await self._open(node, self.tls)
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in HOSTNAME_MISMATCH:
                names = await self._names_anyway(node)
                return failed(f"certificate does not name {node.verified_as} ({names})")
            return failed(describe_error(exc) + self._against())
        except (OSError, asyncio.IncompleteReadError) as exc:
            return failed(describe_error(exc))
        return passed(
            f"{cert['protocol']}, verified as {node.verified_as}; certificate names "
            f"{', '.join(_names(cert))}; valid until {_until(cert)}"
        )

    def _against(self) -> str:
        return f" (checked against peer_ca_file {self.ca_file})" if self.ca_file else ""

    # --- HTTP -------------------------------------------------------------------------------

    async def _get(self, node: NodeTarget, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(
            node.url.rstrip("/") + path, headers=headers, extensions=node.extensions
        )

    async def ready(self, node: NodeTarget) -> Outcome:
        try:
            response = await self._get(node, "/readyz")
        except httpx.HTTPError as exc:
            return failed(describe_error(exc))
        if response.status_code == 200:
            return passed("ready")
        return failed(f"not ready (HTTP {response.status_code}): {_reason(response)}")

    async def version(self, node: NodeTarget) -> Outcome:
        try:
            response = await self._get(node, "/healthz", Accept="application/json")
        except httpx.HTTPError as exc:
            return failed(describe_error(exc))
        if response.status_code != 200:
            return failed(f"HTTP {response.status_code} from /healthz: {_reason(response)}")
        try:
            document = response.json()
            version, site = str(document["version"]), str(document["site"])
        except (ValueError, KeyError, TypeError):
            return passed("alive; it does not report its version (an older node)")
        if site != node.site:
            return failed(
                f"cas {version} serving site {site}, but the sitemap lists it under {node.site}"
            )
        ours = "" if version == __version__ else f" (this doctor: {__version__})"
        return passed(f"cas {version}{ours}, serving site {site}")

    async def breakers(self, node: NodeTarget) -> Outcome:
        try:
            response = await self._get(node, "/healthz", Accept="application/json")
        except httpx.HTTPError as exc:
            return failed(describe_error(exc))
        try:
            rows = response.json()["breakers"]
            states = [(str(r["kind"]), str(r["target"]), str(r["state"])) for r in rows]
        except (ValueError, KeyError, TypeError):
            return passed("it does not report its breakers (an older node)")
        down = [r for r, (_, _, state) in zip(rows, states) if state != "closed"]
        if not down:
            return passed(
                f"all {len(states)} closed: " + ", ".join(f"{k}:{t}" for k, t, _ in states)
            )
        return failed(
            "; ".join(
                f"{r['subject']} is {r['state']} (down {float(r['down_seconds']):.0f}s, "
                f"last: {r['last_failure'] or '?'})"
                for r in down
            )
        )

    def _signing_site(self, target: str) -> str:
        return next((name for name in self.sites if name != target), target)

    async def trust(self, node: NodeTarget) -> Outcome:
        assert self.secret is not None
        body = render_convert_id_request()
        claims = ForwardClaims.create(
            from_site=self._signing_site(node.site),
            to_site=node.site,
            requester=None,
            hop=1,
            request_id=f"doctor-{secrets_module.token_hex(8)}",
        )
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            FORWARD_HEADER: sign_request(
                self.secret, claims, method="POST", path=EWS_PATH, body=body
            ),
            REQUEST_ID_HEADER: claims.request_id,
        }
        url = node.url.rstrip("/") + EWS_PATH
        try:
            response = await self.client.post(
                url, content=body, headers=headers, extensions=node.extensions
            )
        except httpx.HTTPError as exc:
            return failed(describe_error(exc))
        return self._trust_outcome(response)

    @staticmethod
    def _trust_outcome(response: httpx.Response) -> Outcome:
        status = response.status_code
        if status in (401, 403):
            return failed(
                f"HTTP {status}: the node refuses this cluster's signature ({_reason(response)}); "
                "check that it has the same cluster secret and a correct clock"
            )
        if status != 200:
            return failed(
                f"HTTP {status} to a signed ConvertId (expected 200): {_reason(response)}"
            )
        try:
            version = parse_convert_id_response(response.content)
        except EwsClientError as exc:
            return failed(f"HTTP 200, but not an EWS answer: {exc.message}")
        return passed(f"accepts this cluster's signature (signed ConvertId answered by {version})")
