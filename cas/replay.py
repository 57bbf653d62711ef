"""The nonces a node accepted from other nodes, so a forwarded request is acted on only once.

`ReplayCache` is the memory behind `cas.trust.verify_request`'s replay check: per node, bounded,
forgetting a nonce once its token could no longer be valid anyway (`docs/trust.md`).
"""

from __future__ import annotations

import threading

from cas.errors import ForgedRequest


class ReplayCache:
    """Nonces accepted in the last `window_seconds`, per node, bounded in memory.

    `seen(nonce, now)` answers whether the nonce was recorded and not yet expired, and records it
    if not. Expired entries are evicted as time passes; when `max_entries` live entries remain,
    the cache refuses new ones (ForgedRequest 403) instead of growing: under such a flood,
    refusing is safer than forgetting a nonce that may still be replayed.
    """

    def __init__(self, window_seconds: int, *, max_entries: int = 100_000) -> None:
        if window_seconds <= 0 or max_entries <= 0:
            raise ValueError("window_seconds and max_entries must be positive")
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._expiry: dict[str, int] = {}  # insertion order ~ expiry order
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, nonce: str, now: int) -> bool:
        with self._lock:
            self._evict(now)
            expiry = self._expiry.get(nonce)
            if expiry is not None and expiry > now:
                return True
            if expiry is None and len(self._expiry) >= self.max_entries:
                self._evict(now, full_sweep=True)
                if len(self._expiry) >= self.max_entries:
                    raise ForgedRequest("replay cache full", 403)
            self._expiry.pop(nonce, None)
            self._expiry[nonce] = now + self.window_seconds
            return False

    def _evict(self, now: int, *, full_sweep: bool = False) -> None:
        if full_sweep:  # the clock may have stepped back: order is then only approximate
            self._expiry = {n: e for n, e in self._expiry.items() if e > now}
            return
        while self._expiry:
            nonce, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[nonce]
