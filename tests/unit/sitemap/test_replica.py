"""The replica rule: try orders computed by hand, failure sequences, stability and spread."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sitemap.model import Mailbox
from sitemap.replica import Candidate, choose_node, replica_key, replica_order, stable_hash


def sha256_prefix(key: str) -> int:
    """The rule's hash, computed here independently of the module under test."""
    return int.from_bytes(hashlib.sha256(key.casefold().encode("utf-8")).digest()[:8], "big")


A, B, C = (
    Candidate("https://a:443", 0),
    Candidate("https://b:443", 0),
    Candidate("https://c:443", 0),
)
D, E = Candidate("https://d:443", 10), Candidate("https://e:443", 10)
NODES = [E, C, A, D, B]  # deliberately unsorted: only the set counts

ANN = "/o=Contoso/ou=EU/cn=Recipients/cn=ann"
CAROL = "/o=contoso/ou=us/cn=Recipients/cn=carol"

# key, (h mod 3, h mod 2), the order worked out by hand from those residues:
# lowest-cost group [a, b, c] (sorted by URL): pick index h%3, then h%2 of the two left, then the
# last; then group [d, e]: index h%2, then the other.
TABLE = [
    (ANN, (2, 1), [C, B, A, E, D]),  # [a,b,c][2]=c; [a,b][1]=b; a; [d,e][1]=e; d
    ("bob@contoso.test", (2, 0), [C, A, B, D, E]),  # c; [a,b][0]=a; b; [d,e][0]=d; e
    (CAROL, (0, 0), [A, B, C, D, E]),  # a; [b,c][0]=b; c; d; e
    ("dave@contoso.test", (0, 1), [A, C, B, E, D]),  # a; [b,c][1]=c; b; e; d
]


@pytest.mark.parametrize(("key", "residues", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_try_order_matches_the_hand_computed_table(
    key: str, residues: tuple[int, int], expected: list[Candidate]
) -> None:
    h = sha256_prefix(key)
    assert (h % 3, h % 2) == residues  # the table's premise
    assert list(replica_order(key, NODES)) == expected


def test_stable_hash_is_the_first_8_bytes_of_sha256_of_the_casefolded_key() -> None:
    assert stable_hash("x") == 0x2D711642B726B044
    assert stable_hash(ANN) == 0x6D25DDDE1B1E42A9 == stable_hash(ANN.upper())
    assert stable_hash("bob@contoso.test") == sha256_prefix("bob@contoso.test")


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        (set(), C),  # first choice
        ({C.url}, B),  # c failed: h mod 2 over [a, b]
        ({C.url, B.url}, A),  # then the last of the group
        ({A.url, B.url, C.url}, E),  # group exhausted: h mod 2 over [d, e]
        ({A.url, B.url, C.url, E.url}, D),
        ({A.url, B.url, C.url, D.url, E.url}, None),  # nothing left: the caller's error
        ({A.url}, C),  # a node failing out of turn does not move ann
    ],
)
def test_failure_sequence_for_one_mailbox(failed: set[str], expected: Candidate | None) -> None:
    assert choose_node(ANN, NODES, failed=failed) == expected


def test_a_caller_walks_the_order_until_a_node_answers() -> None:
    down = {C.url, B.url, A.url}
    tried = []
    for node in replica_order(ANN, NODES):
        tried.append(node.url)
        if node.url not in down:
            break
    assert tried == [C.url, B.url, A.url, E.url]


def test_remove_and_retry_equals_rerunning_the_rule_without_the_failed_node() -> None:
    # after the first choice fails, the rule continues over the rest with count - 1
    first, *rest = replica_order(ANN, NODES)
    assert list(replica_order(ANN, [n for n in NODES if n != first])) == rest


def test_no_candidates_give_nothing() -> None:
    assert list(replica_order(ANN, [])) == []
    assert choose_node(ANN, []) is None


def test_a_url_listed_twice_keeps_its_lowest_cost() -> None:
    order = list(replica_order(ANN, [Candidate(A.url, 10), A, Candidate(A.url, 5), D]))
    assert order == [A, D]


def test_a_single_cheaper_node_always_comes_first() -> None:
    cheap = Candidate("https://z:443", -1)
    for key in ("a", "b", "c", ANN):
        assert next(replica_order(key, [*NODES, cheap])) == cheap


def test_replica_key_is_the_legacy_dn_else_the_address() -> None:
    assert replica_key(Mailbox("ann@contoso.test", "eu", legacy_dn=ANN)) == ANN
    assert replica_key(Mailbox("ann@contoso.test", "eu")) == "ann@contoso.test"


urls = st.lists(
    st.from_regex(r"https://[a-z]{1,6}:[1-9][0-9]{0,3}", fullmatch=True), unique=True, max_size=8
)
candidate_sets = urls.flatmap(
    lambda us: st.tuples(*(st.builds(Candidate, st.just(u), st.integers(0, 3)) for u in us))
).map(list)


@given(key=st.text(max_size=40), candidates=candidate_sets, data=st.data())
def test_same_key_and_same_set_give_the_same_order(
    key: str, candidates: list[Candidate], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(candidates))
    order = list(replica_order(key, candidates))
    assert order == list(replica_order(key, shuffled))
    assert order == list(replica_order(key.casefold(), candidates))  # case does not matter
    assert sorted(order, key=lambda c: c.url) == sorted(candidates, key=lambda c: c.url)
    assert [c.cost for c in order] == sorted(c.cost for c in candidates)


def test_first_choices_spread_over_the_lowest_cost_group() -> None:
    group = [Candidate(f"https://node{i}.eu.contoso.test:443", 0) for i in range(4)]
    far = Candidate("https://node9.us.contoso.test:443", 10)
    first = Counter(
        next(replica_order(f"/o=contoso/ou=eu/cn=Recipients/cn=user{n}", [*group, far])).url
        for n in range(4000)
    )
    assert set(first) == {c.url for c in group}  # the costlier node is never first
    assert all(850 <= count <= 1150 for count in first.values()), first  # ~1000 each


def test_after_a_failure_the_moved_mailboxes_spread_over_the_rest() -> None:
    group = [Candidate(f"https://node{i}:443", 0) for i in range(4)]
    keys = [f"user{n}@contoso.test" for n in range(4000)]
    moved = Counter(
        choose_node(k, group, failed={group[0].url}).url  # type: ignore[union-attr]
        for k in keys
        if next(replica_order(k, group)) == group[0]
    )
    assert set(moved) == {c.url for c in group[1:]}
    assert all(count > 200 for count in moved.values()), moved
