"""The replica rule: the order in which a node tries the nodes of a target site for one mailbox.

Pure: no I/O, no clock, no randomness. `replica_order(key, candidates)` yields the nodes in the
order the rule tries them; a caller tries each in turn and moves to the next on failure (or on
"not mine"), and reports an error for the mailbox when the iterator is exhausted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from sitemap.model import Mailbox

__all__ = ["Candidate", "choose_node", "replica_key", "replica_order", "stable_hash"]

# Theory of operation (docs/protocols.md §7, after Outlook's choice of a public-folder replica)
# ------------------------------------------------------------------------------------------
# Every node that forwards for a mailbox should pick the same node of the target site, so that
# node's caches stay warm for that mailbox; when that node fails, the load of its mailboxes
# should spread over the others instead of landing on one neighbour.
#
# 1. De-duplicate candidates by URL (a URL listed twice keeps its lowest cost), then group them
#    by cost, lowest cost first. Inside a group, sort by URL, so the order in which the nodes
#    were discovered (DNS answers rotate) does not matter: only the *set* counts.
# 2. h = stable_hash(key): the first 8 bytes of SHA-256 over the UTF-8 of the casefolded key
#    (the mailbox's legacy DN, else its address), read as a big-endian unsigned integer.
#    Python's hash() is salted per process and would send each node elsewhere.
# 3. In the current group of n nodes, try the node at index h mod n. On failure remove it;
#    n decreases by one and the next try is the node at h mod (n - 1) of what is left, and so
#    on until the group is empty.
# 4. Then do the same with the next group (the next-lowest cost), and so on.
# 5. When every group is exhausted, nothing is left: the caller reports the mailbox's error.
#
# While the set of nodes is unchanged, a mailbox always gets the same first node; over many
# mailboxes the first choices spread evenly over the lowest-cost group. Removing node X from
# the set moves only the mailboxes whose choice depends on X's position; that is the price of
# the simple modulo rule the design prescribes (a consistent hash would move fewer).


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that may answer for the target site, and the cost of reaching it.

    `name` is the host name a node discovered through DNS SRV is known by (the record's
    target) while `url` carries its address: TLS verifies the peer's certificate against the
    name, since certificates name hosts, not pod addresses.
    """

    url: str
    cost: int = 0
    name: str | None = None


def stable_hash(key: str) -> int:
    """First 8 bytes of SHA-256(casefold(key) as UTF-8), big-endian: the same in every process."""
    digest = hashlib.sha256(key.casefold().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def replica_key(mailbox: Mailbox) -> str:
    """What the rule hashes for a mailbox: its legacy DN, or its address when it has none."""
    return mailbox.legacy_dn or mailbox.address


def _groups(candidates: Iterable[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by cost, lowest first, each group sorted by URL, URLs unique."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        known = best.get(candidate.url)
        if known is None or candidate.cost < known.cost:
            best[candidate.url] = candidate
    by_cost: dict[int, list[Candidate]] = {}
    for candidate in best.values():
        by_cost.setdefault(candidate.cost, []).append(candidate)
    return [sorted(by_cost[cost], key=lambda c: c.url) for cost in sorted(by_cost)]


def replica_order(key: str, candidates: Iterable[Candidate]) -> Iterator[Candidate]:
    """The candidates in the order the replica rule tries them for `key` (see the theory above).

    The candidates are read when iteration starts. Each node appears once; an empty iterator
    (no candidates) means the mailbox gets an error.
    """
    groups = _groups(candidates)
    h = stable_hash(key)
    for group in groups:
        while group:
            yield group.pop(h % len(group))


def choose_node(
    key: str, candidates: Iterable[Candidate], *, failed: Collection[str] = ()
) -> Candidate | None:
    """The node to try next for `key` after the nodes whose URLs are in `failed` failed.

    The first node of `replica_order` not in `failed`; None when every node has failed. When
    the failures happened in try order this is exactly remove-and-retry; a node known to have
    failed out of turn is skipped without moving the mailboxes whose choice came before it.
    """
    for candidate in replica_order(key, candidates):
        if candidate.url not in failed:
            return candidate
    return None
