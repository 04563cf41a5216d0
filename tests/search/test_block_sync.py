"""The block directory (`search/engines/postgres/block_sync.py`, migration 0010): a
process's copy of which facet blocks exist, in which version, follows every committed
re-pack, including one committed after a newer one, an emptied cell and a replaced table;
a query computed on blocks that changed before its page was read is computed again."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.projection import build_all, rebuild_documents
from search.engines.postgres.block_sync import BlockDirectory, TableReplaced
from search.engines.postgres.blocks import CellRanges
from search.engines.postgres.engine import PostgresEngine
from search.schemas import CoachQuery, TutorQuery
from tests.conftest import EngineThread
from tests.indexer.projection_check import assert_equals_from_scratch

# --------------------------------------------------------------- the directory (no DB)

_ENTRY = np.dtype([("cell", ">i4"), ("version", ">i8"), ("n", ">i4")])


def _answer(horizon: int, filenode: int, blocks: dict[int, tuple[int, int]]) -> bytes:
    """A check's answer listing `blocks` {cell: (version, n)}."""
    e = np.zeros(len(blocks), dtype=_ENTRY)
    for i, (cell, (version, n)) in enumerate(sorted(blocks.items())):
        e[i] = (cell, version, n)
    return np.array([horizon, filenode], dtype=">i8").tobytes() + e.tobytes()


_cells = st.integers(-1024, 40)
_states = st.dictionaries(_cells, st.tuples(st.integers(1, 5), st.integers(0, 3)), max_size=25)


@settings(max_examples=200, deadline=None)
@given(first=_states, writes=st.lists(_states, max_size=4))
def test_directory_follows_partial_answers(
    first: dict[int, tuple[int, int]], writes: list[dict[int, tuple[int, int]]]
) -> None:
    """Whole answer, then partial ones (each lists some blocks in their new state, some
    unchanged): the directory always equals the non-empty blocks, and `apply` reports
    exactly the cells whose non-empty block appeared, changed version or went."""
    d = BlockDirectory()
    state = dict(first)
    d.apply(_answer(7, 1, state), whole=True)

    def visible(s: dict[int, tuple[int, int]]) -> dict[int, int]:
        return {c: v for c, (v, n) in s.items() if n > 0}

    assert dict(zip(d.cells.tolist(), d.versions.tolist(), strict=True)) == visible(state)

    def copy_of(cell: int, version: int) -> bytes:
        return f"{cell}@{version}".encode()

    for step, write in enumerate(writes):
        # hold a copy of every other block: a write keeps those of unchanged blocks only
        listed = dict(zip(d.cells.tolist(), d.versions.tolist(), strict=True))
        for cell, version in list(listed.items())[::2]:
            d.hold(cell, version, copy_of(cell, version), 1, None, b"a" * (cell % 3))
        held = d.held_copies()
        before = visible(state)
        state.update(write)
        after = visible(state)
        changed = d.apply(_answer(8 + step, 1, write), whole=False)
        expected = {c for c in set(before) | set(after) if before.get(c) != after.get(c)}
        assert set(changed.tolist()) == expected
        assert dict(zip(d.cells.tolist(), d.versions.tolist(), strict=True)) == after
        assert d.horizon == 8 + step
        # copies stay aligned on their cells, kept exactly for the blocks unchanged
        assert d.held_copies() == {c: b for c, b in held.items() if c not in expected}
        for i, (cell, version) in enumerate(zip(d.cells.tolist(), d.versions.tolist(),
                                                strict=True)):  # fmt: skip
            if d.copies[i] is None:
                assert (d.held[i], d.avails[i]) == (-1, b"")
            else:
                assert (d.held[i], d.copies[i]) == (version, copy_of(cell, version))
                assert d.avails[i] == b"a" * (cell % 3)
        assert d.nbytes == sum(len(b or b"") + len(a) for b, a in zip(d.copies, d.avails,
                                                                         strict=True))  # fmt: skip


def test_directory_lookup_current_and_copies() -> None:
    """`lookup` finds the blocks of ranges; `current` tells whether they are still what a
    query computed on; a copy is held with its version, not when the directory has moved
    past it, and is dropped when its cell changes."""
    d = BlockDirectory()
    d.apply(_answer(1, 1, {-3: (1, 2), 5: (2, 1), 6: (3, 0), 9: (4, 1), 20: (5, 2)}), whole=True)
    ranges = CellRanges.of([(9, 30, True), (-5, 5, False)])
    idx, edge = d.lookup(ranges)
    cells, versions = d.cells[idx], d.versions[idx]
    assert cells.tolist() == [-3, 5, 9, 20]
    assert versions.tolist() == [1, 2, 4, 5]
    assert edge.tolist() == [False, False, True, True]
    assert d.current(ranges, cells, versions)
    generation = d.generation
    assert d.current(ranges, cells, versions, generation)
    d.apply(_answer(2, 1, {7: (6, 1)}), whole=False)  # a new cell outside the ranges
    assert d.generation != generation
    assert d.current(ranges, cells, versions, generation)
    d.apply(_answer(3, 1, {8: (7, 1)}), whole=False)  # one inside
    assert not d.current(CellRanges.of([(9, 30, True), (-5, 8, False)]), cells, versions)
    d.hold(9, 4, b"x" * 10, 1, None)
    d.hold(20, 3, b"y", 1, None)  # older than the directory's version: not held
    d.hold(6, 9, b"z", 1, None)  # a cell the directory does not list: not held
    assert d.held_copies() == {9: b"x" * 10}
    assert d.held[np.searchsorted(d.cells, 9)] == 4
    assert d.nbytes == 10
    d.hold(9, 11, b"w", 1, ["0:xx"], b"", b"<items>")  # newer: the directory takes it
    assert d.versions[np.searchsorted(d.cells, 9)] == 11
    assert d.others == {9: ["0:xx"]}
    assert d.nbytes == 1 + len(b"<items>")
    cell_9, cell_20 = np.array([9]), np.array([9, 20])
    assert d.items_of(cell_9, np.array([11])) == [b"<items>"]
    assert d.items_of(np.array([9, 9]), np.array([11, 11])) == [b"<items>"] * 2
    assert d.items_of(cell_9, np.array([4])) is None  # not that version
    assert d.items_of(cell_20, np.array([11, 5])) is None  # 20 listed, not held
    assert d.items_of(np.array([10]), np.array([1])) is None  # not listed
    assert d.items_of(np.array([999]), np.array([1])) is None  # beyond every cell
    assert d.items_of(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []
    d.apply(_answer(4, 1, {9: (12, 1)}), whole=False)
    assert d.items_of(cell_9, np.array([11])) is None  # re-packed: the copy is forgotten
    assert d.held_copies() == {}
    assert d.others == {}
    assert d.nbytes == 0
    assert d.held.tolist() == [-1] * d.cells.size


def test_directory_wants_a_whole_read_of_a_replaced_table() -> None:
    d = BlockDirectory()
    d.apply(_answer(1, 10, {1: (1, 1)}), whole=True)
    with pytest.raises(TableReplaced):
        d.apply(_answer(2, 11, {}), whole=False)
    assert not d.loaded
    assert d.apply(_answer(3, 11, {2: (5, 1)}), whole=True).tolist() == [1, 2]
    assert d.cells.tolist() == [2]


# --------------------------------------------------------------- against PostgreSQL


def _price(conn: psycopg.Connection[Any], pid: uuid.UUID, minor: int) -> None:
    conn.execute(
        "UPDATE provider_profiles SET hourly_rate_minor = %s, currency = 'EUR' WHERE user_id = %s",
        (minor, pid),
    )


def test_a_repack_committed_after_a_newer_one_is_seen(
    market: psycopg.Connection[Any],
    database_url: str,
    engines: tuple[EngineThread, PostgresEngine],
) -> None:
    """Transaction A re-packs a cell first (older block version) but commits last; B
    re-packs another cell and commits; the engine checks in between. After A commits,
    the engine's next answer has A's write: A's transaction id is at or above the horizon
    of the check that did not see it (asking by version would have skipped it: B's
    version is the newer one). Every answer equals the SQL pass."""
    et, sql = engines
    a, b = market.execute(
        "SELECT x.provider_id, ST_Y(x.geom), ST_X(x.geom), x.cell FROM tutor_facets a"
        " JOIN tutor_facets b ON b.cell >= 0 AND b.cell <> a.cell"
        " AND ST_DWithin(a.geom::geography, b.geom::geography, 50000)"
        " CROSS JOIN LATERAL (VALUES (a.provider_id, a.geom, a.cell),"
        " (b.provider_id, b.geom, b.cell)) x(provider_id, geom, cell)"
        " WHERE a.cell >= 0 AND a.provider_id = (SELECT provider_id FROM tutor_facets"
        " WHERE cell >= 0 ORDER BY provider_id LIMIT 1) ORDER BY b.provider_id LIMIT 2"
    ).fetchall()
    q = TutorQuery(lat=a[1], lng=a[2], radius_km=100, sort="price", limit=5)

    def both() -> Any:
        got = et.run(et.engine.search_tutors(q))
        assert got.model_dump() == et.run(sql.search_tutors(q)).model_dump()
        return got

    both()  # the directory and the blocks are held
    with psycopg.connect(database_url) as writer_a:
        _price(writer_a, a[0], 2)
        rebuild_documents(writer_a, [a[0]])  # A holds its xid, uncommitted
        _price(market, b[0], 1)
        with market.transaction():
            rebuild_documents(market, [b[0]])
        version_b = market.execute(
            "SELECT version FROM tutor_facet_blocks WHERE cell = %s", (b[3],)
        ).fetchone()
        got = both()
        assert got.items[0]["id"] == str(b[0])
        assert all(i["price"]["amount_minor"] != 2 for i in got.items), "A is not visible"
        writer_a.commit()
    got = both()
    assert [i["id"] for i in got.items[:2]] == [str(b[0]), str(a[0])]
    assert got.items[1]["price"]["amount_minor"] == 2
    # A's block is older by version (taken when it wrote) but was committed last
    newer_a = market.execute(
        "SELECT version FROM tutor_facet_blocks WHERE cell = %s", (a[3],)
    ).fetchone()
    assert newer_a is not None
    assert version_b is not None
    assert newer_a[0] < version_b[0]


def test_a_query_on_blocks_that_changed_is_computed_again(
    market: psycopg.Connection[Any], engines: tuple[EngineThread, PostgresEngine]
) -> None:
    """The engine computes on the blocks it holds and checks the directory with its page:
    after a write, the first computation is found stale and done again (counted in
    `recomputed`); a write outside the query's cells costs nothing; an emptied cell (its
    only tutor moved away) and a rebuilt table (TRUNCATE: another file) are followed.
    Every answer equals the SQL pass and the tables equal a build from scratch."""
    et, sql = engines
    pid, lat, lng, cell = market.execute(
        "SELECT provider_id, ST_Y(geom), ST_X(geom), f.cell FROM tutor_facets f"
        " WHERE cell >= 0 AND (SELECT n FROM tutor_facet_blocks b WHERE b.cell = f.cell) = 1"
        " ORDER BY provider_id LIMIT 1"
    ).fetchone()
    q = TutorQuery(lat=lat, lng=lng, radius_km=50, sort="price", limit=5)

    def both() -> Any:
        got = et.run(et.engine.search_tutors(q))
        assert got.model_dump() == et.run(sql.search_tutors(q)).model_dump()
        return got

    both()
    recomputed = et.engine.recomputed
    both()
    assert et.engine.recomputed == recomputed, "nothing changed: computed once"
    _price(market, pid, 1)
    with market.transaction():
        rebuild_documents(market, [pid])
    assert both().items[0]["id"] == str(pid)
    assert et.engine.recomputed == recomputed + 1
    # a write far away: its cell is outside the radius
    far = market.execute(
        "SELECT provider_id FROM tutor_facets WHERE cell >= 0 AND NOT ST_DWithin(geom::geography,"
        " ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, 400000) LIMIT 1",
        (lng, lat),
    ).fetchone()
    assert far is not None
    _price(market, far[0], 3)
    with market.transaction():
        rebuild_documents(market, [far[0]])
    both()
    assert et.engine.recomputed == recomputed + 1
    # the tutor moves far away: its cell's block is left empty
    market.execute(
        "UPDATE provider_profiles SET location = ST_SetSRID(ST_MakePoint(-21.94, 64.15),"
        " 4326)::geography WHERE user_id = %s",
        (pid,),
    )
    with market.transaction():
        rebuild_documents(market, [pid])
    assert market.execute(
        "SELECT n FROM tutor_facet_blocks WHERE cell = %s", (cell,)
    ).fetchone() == (0,)
    assert str(pid) not in [i["id"] for i in both().items]
    assert cell not in et.engine.block_path.directory["tutor"].cells.tolist()
    assert_equals_from_scratch(market)
    # a build from scratch truncates the tables: the directory is read again
    market.execute("UPDATE provider_profiles SET hourly_rate_minor = 2 WHERE user_id = %s", (pid,))
    with market.transaction():
        build_all(market)
    both()


def test_coach_blocks_are_decoded_once_until_one_changes(
    market: psycopg.Connection[Any], engines: tuple[EngineThread, PostgresEngine]
) -> None:
    """Coach queries read every coach block: once they are held, the engine decodes them
    once and shares them between queries while the directory is unchanged, and decodes
    again after a write.
    Every answer equals the SQL pass; the text ranks of one query do not leak into the
    next (relevance, then price on the same shared blocks)."""
    et, sql = engines

    def both(q: CoachQuery) -> Any:
        got = et.run(et.engine.search_coaches(q))
        assert got.model_dump() == et.run(sql.search_coaches(q)).model_dump()
        return got

    by_price = CoachQuery(sort="price", limit=5)
    both(by_price)  # reads the blocks
    both(by_price)  # decodes what it holds
    decoded = et.engine.block_path.whole["coach"]
    both(CoachQuery(q="coach", sort="relevance", limit=5))
    both(by_price)
    assert et.engine.block_path.whole["coach"] is decoded, "nothing changed: decoded once"
    (pid,) = market.execute(
        "SELECT provider_id FROM coach_facets ORDER BY price_minor DESC, provider_id LIMIT 1"
    ).fetchone()
    _price(market, pid, 1)
    with market.transaction():
        rebuild_documents(market, [pid])
    recomputed = et.engine.recomputed
    assert both(by_price).items[0]["id"] == str(pid)
    assert et.engine.recomputed == recomputed + 1, "the shared blocks were found stale"
    both(by_price)
    assert et.engine.block_path.whole["coach"] is not decoded
