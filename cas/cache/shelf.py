"""Where a cache keeps its entries: the site's store, with this node's first level in front.

`Shelf` reads and writes entries through a key policy (`cas.cache.keys`): one `get_many` for a
whole batch, decoded values kept in process for `local_seconds` (so a repeated lookup costs no
round trip; another node's write or an invalidation elsewhere is seen within that time), and
negative entries for calendars that do not exist. The store failing (`CacheUnavailable`) reads
as a miss and writes nothing; invalidation reports it.

A drop is remembered for a while (`changed_after`): a read that began before a mailbox was
dropped here, or an answer another site vouched for before that, may hold what the owner no
longer has, so it is answered but not kept. Without that, a read in flight while a change
arrives, or a peer still serving its one-second first level, would store the old data again,
to be served until it expires. For the same reason a drop is done once more half a second
later: a node of the site that had not yet heard of it may have written its read back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from cas.cache.keys import Entry, KeyPolicy
from cas.cache.store import CacheStore, CacheUnavailable
from cas.model.ask import Ask
from cas.sources.base import key_of
from sitemap.model import Mailbox

DROP_SKEW_SECONDS = 0.5  # another site's clock may differ from this node's by this much
DROP_AGAIN_SECONDS = 0.5  # a drop is repeated this much later (see `forget`)

Found = dict[str, tuple[Entry | None, bool]]  # by mailbox key: entry (None: incomplete), any part


class Shelf:
    def __init__(
        self,
        store: CacheStore,
        keys: KeyPolicy,
        *,
        ttl_seconds: float,
        local_seconds: float,
        local_entries: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._dropped: OrderedDict[str, float] = OrderedDict()  # address -> when last dropped
        self._again: set[asyncio.Task[None]] = set()
        self.store = store
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.local_seconds = local_seconds
        self.local_entries = local_entries
        self._memo: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    async def entries(self, mailboxes: Sequence[Mailbox], ask: Ask) -> Found:
        """Each mailbox's entry for `ask` (None if incomplete), and whether any part is kept."""
        keys = {key_of(m): self.keys.keys(m, ask) for m in mailboxes}
        values: dict[str, Any] = {}
        wanted: list[str] = []
        for mailbox_keys in keys.values():
            for key in mailbox_keys:
                value = self._memo_get(key)
                if value is None:
                    wanted.append(key)
                else:
                    values[key] = value
        if wanted:
            try:
                raw = await self.store.get_many(wanted)
            except CacheUnavailable:
                raw = [None] * len(wanted)
            for key, blob in zip(wanted, raw):
                if blob is None:
                    continue
                try:
                    values[key] = self.keys.decode(blob)
                except ValueError:
                    continue
                self._memo_put(key, values[key])
        found: Found = {}
        for mailbox in mailboxes:
            got = [values.get(k) for k in keys[key_of(mailbox)]]
            entry = self.keys.entry(mailbox, ask, got)
            found[key_of(mailbox)] = (entry, any(v is not None for v in got))
        return found

    async def write(self, items: Sequence[tuple[str, Any]], now: float) -> None:
        if not items:
            return
        for key, value in items:
            self._memo_put(key, value)
        try:
            encoded = [(k, self.keys.encode(v, now)) for k, v in items]
            await self.store.set_many(encoded, self.ttl_seconds)
        except CacheUnavailable:
            pass

    async def renew(self, mailbox: Mailbox, ask: Ask, now: float) -> None:
        """Mark a mailbox's entry as vouched for now (it was confirmed unchanged)."""
        keys = self.keys.keys(mailbox, ask)
        values = [self._memo_get(k) for k in keys]
        wanted = [k for k, v in zip(keys, values) if v is None]
        if wanted:
            try:
                raw = dict(zip(wanted, await self.store.get_many(wanted)))
            except CacheUnavailable:
                return
            for i, key in enumerate(keys):
                blob = raw.get(key)
                if values[i] is None and blob is not None:
                    try:
                        values[i] = self.keys.decode(blob)
                    except ValueError:
                        return
        if any(v is None for v in values):
            return
        await self.write([(k, self.keys.renew(v, now)) for k, v in zip(keys, values)], now)

    def drop_local(self, mailbox: Mailbox, ask: Ask) -> None:
        """Forget this node's first-level copy (another node just wrote a fresher one)."""
        for key in self.keys.keys(mailbox, ask):
            self._memo.pop(key, None)

    async def missing(self, mailboxes: Sequence[Mailbox]) -> set[str]:
        """The mailboxes remembered as having no calendar."""
        negative = {key_of(m): self.keys.negative(m) for m in mailboxes}
        wanted = [k for k in negative.values() if k is not None]
        if not wanted:
            return set()
        try:
            raw = dict(zip(wanted, await self.store.get_many(wanted)))
        except CacheUnavailable:
            return set()
        return {k for k, n in negative.items() if n is not None and raw.get(n) is not None}

    async def remember_missing(self, mailbox: Mailbox, ttl_seconds: float) -> None:
        negative = self.keys.negative(mailbox)
        if negative is None:
            return
        try:
            await self.store.set(negative, b"1", ttl_seconds)
        except CacheUnavailable:
            pass

    async def forget(self, mailbox: Mailbox) -> int:
        """Drop everything kept of a mailbox; how many store keys went. `CacheUnavailable`
        passes: the caller reports that nothing could be dropped."""
        self.drop_mailbox_locally(mailbox)
        dropped = 0
        for prefix in self.keys.prefixes(mailbox):
            dropped += await self.store.delete_matching(prefix)
        if self.keys.channel is not None:
            await self.store.publish(self.keys.channel, mailbox.address)
        task = asyncio.get_running_loop().create_task(self._drop_again(mailbox))
        self._again.add(task)
        task.add_done_callback(self._again.discard)
        return dropped

    async def _drop_again(self, mailbox: Mailbox) -> None:
        """The drop once more, a moment later: another node of the site whose read was under
        way may have written it back before it heard of the drop."""
        await asyncio.sleep(DROP_AGAIN_SECONDS)
        try:
            for prefix in self.keys.prefixes(mailbox):
                await self.store.delete_matching(prefix)
        except CacheUnavailable:
            pass  # the first drop was reported; this one is only a safety net

    def cancel(self) -> None:
        for task in list(self._again):
            task.cancel()

    def drop_mailbox_locally(self, mailbox: Mailbox) -> None:
        """Forget this node's first-level copies of a mailbox (it changed, or another node of
        the site dropped it), and remember when (`changed_after`)."""
        address = mailbox.address.casefold()
        self._dropped[address] = self.clock()
        self._dropped.move_to_end(address)
        while len(self._dropped) > self.local_entries:
            self._dropped.popitem(last=False)
        prefixes = tuple(self.keys.prefixes(mailbox))
        for key in [k for k in self._memo if k.startswith(prefixes)]:
            del self._memo[key]

    def changed_after(self, address: str, since: float) -> bool:
        """Was the mailbox dropped here at or after `since`? Data read or vouched for at `since`
        may then be older than the change: not to be kept."""
        dropped = self._dropped.get(address.casefold())
        return dropped is not None and dropped >= since

    def _memo_get(self, key: str) -> Any:
        entry = self._memo.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._memo[key]
            return None
        return entry[1]

    def _memo_put(self, key: str, value: Any) -> None:
        if self.local_seconds <= 0:
            return
        self._memo[key] = (time.monotonic() + self.local_seconds, value)
        self._memo.move_to_end(key)
        while len(self._memo) > self.local_entries:
            self._memo.popitem(last=False)
