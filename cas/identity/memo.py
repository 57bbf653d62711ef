"""Verified credentials, remembered briefly so a warm request pays no hash, bind or fetch.

Entries are keyed by an HMAC-SHA-256 of the whole `Authorization` value under a key made
fresh for each process: neither the credential nor a plain hash of it (which an attacker
reading memory could test guesses against offline without the key) is kept. An entry lives
`ttl` seconds, or until the token it came from expires, whichever is sooner. Only successes
are stored: a failure is checked again every time. At most `max_entries` are kept; the
oldest go first. `forget_all()` empties it (a users file changed, an account was removed).

`single_flight(key, verify)` also makes concurrent callers with the same new credential share
one verification instead of running N password hashes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from cas.model.projection import Requester

__all__ = ["CredentialMemo"]

MAX_ENTRIES = 10_000


class CredentialMemo:
    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.wall = wall
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, Requester]] = OrderedDict()
        self._flights: dict[bytes, asyncio.Future[tuple[Requester, float | None]]] = {}
        self.hits = 0
        self.misses = 0

    def key(self, credential: str) -> bytes:
        return hmac.new(
            self._key, credential.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()

    def get(self, key: bytes) -> Requester | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, requester = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        return requester

    def put(self, key: bytes, requester: Requester, not_after: float | None = None) -> None:
        """Remember a success; `not_after` (wall-clock seconds) caps it, e.g. a token's `exp`."""
        if self.ttl <= 0:
            return
        lifetime = self.ttl
        if not_after is not None:
            lifetime = min(lifetime, not_after - self.wall())
        if lifetime <= 0:
            return
        self._entries[key] = (self.clock() + lifetime, requester)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_all(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def single_flight(
        self,
        credential: str,
        verify: Callable[[], Awaitable[tuple[Requester, float | None]]],
    ) -> Requester:
        """The remembered requester for `credential`, else `verify()` once for every caller
        asking meanwhile; its exception (a refusal) reaches each of them and is not stored."""
        key = self.key(credential)
        found = self.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        flight = self._flights.get(key)
        if flight is not None:
            requester, _ = await asyncio.shield(flight)
            return requester
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            requester, not_after = await verify()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._flights[key]
        flight.set_result((requester, not_after))
        self.put(key, requester, not_after)
        return requester
