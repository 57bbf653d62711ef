"""Redis URLs: `redis://`, `rediss://`, `unix://`, Sentinel and Cluster forms, parsed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

# --- Redis -------------------------------------------------------------------------------------

_SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": ("tcp", False),
    "rediss": ("tcp", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: what to connect to (`kind` is tcp, unix, sentinel or cluster)."""

    kind: str
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    path: str = ""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The URL again, without credentials, with defaults filled in."""
        scheme = ("rediss" if self.tls else "redis") + (
            f"+{self.kind}" if self.kind in ("sentinel", "cluster") else ""
        )
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        if self.kind == "unix":
            return f"unix://{self.path}?db={self.db}"
        if self.kind == "sentinel":
            return f"{scheme}://{hosts}/{self.service}/{self.db}"
        if self.kind == "cluster":
            return f"{scheme}://{hosts}"
        return f"{scheme}://{hosts}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one of the URL forms in docs/cache-redis.md; ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"Redis URL {url!r}: scheme must be one of {', '.join(_SCHEMES)}")
    kind, tls = _SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    unknown = set(options) - {"db"}
    if unknown:
        raise ValueError(f"Redis URL {url!r}: unsupported option(s) {sorted(unknown)}")
    db_text = options.get("db", "")
    hosts: tuple[tuple[str, int], ...] = ()
    service = ""
    if kind == "unix":
        if hostlist or not path:
            raise ValueError(f"Redis URL {url!r}: write unix:///absolute/path.sock[?db=N]")
        path = "/" + unquote(path)
    else:
        default_port = 26379 if kind == "sentinel" else 6379
        hosts = tuple(_host_port(url, h, default_port) for h in hostlist.split(","))
        if kind == "tcp" and len(hosts) > 1:
            raise ValueError(f"Redis URL {url!r}: several hosts need +sentinel or +cluster")
        segments = [s for s in path.split("/") if s] if slash else []
        if kind == "sentinel":
            if not 1 <= len(segments) <= 2:
                raise ValueError(f"Redis URL {url!r}: write redis+sentinel://h:p,.../service[/db]")
            service = unquote(segments[0])
            db_text = segments[1] if len(segments) == 2 else db_text
        elif len(segments) > 1:
            raise ValueError(f"Redis URL {url!r}: the path can only be a database number")
        elif segments:
            db_text = segments[0]
        path = ""
    try:
        db = int(db_text or 0)
        if db < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"Redis URL {url!r}: database {db_text!r} is not a number") from None
    if kind == "cluster" and db != 0:
        raise ValueError(f"Redis URL {url!r}: Redis Cluster only has database 0")
    return RedisTarget(
        kind,
        tls,
        hosts,
        path,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
    )


def _host_port(url: str, text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"Redis URL {url!r}: port {port_text!r} is not a number") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"Redis URL {url!r}: bad host:port {text!r}")
    return host, port
