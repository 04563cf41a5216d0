"""The facet record's one definition (`search/engines/postgres/record_layout.py`) and its
three readers and writers agree: the committed C header is the one it generates, the
compiled kernels use its offsets, the numpy dtype has them, and a row packed by the SQL
expression reads back through the dtype with the row's values."""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from search.engines.postgres import _kernels, record_layout
from search.engines.postgres.blocks import DTYPE, PACK_SQL

HEADER = Path(record_layout.__file__).with_name("record_layout.h")


def test_committed_header_is_the_generated_one() -> None:
    """`record_layout.h` is what `python -m search.engines.postgres.record_layout` writes
    (setup.py writes it before compiling; commit the new one after a layout change)."""
    assert HEADER.read_text() == record_layout.header()


def _header_defines() -> dict[str, int]:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^#define (\w+) (-?\d+)", HEADER.read_text(), re.MULTILINE)
    }


@pytest.mark.parametrize("family", record_layout.FAMILIES)
def test_numpy_dtype_has_the_header_offsets(family: str) -> None:
    defines = _header_defines()
    dtype = DTYPE[family]
    size = defines["TUTOR_SIZE" if family == "tutor" else "BASE_SIZE"]
    assert dtype.itemsize == size == record_layout.record_size(family)
    for f in record_layout.FIELDS[family]:
        first = f.numpy[0][0]
        assert dtype.fields is not None
        assert dtype.fields[first][1] == defines[f"OFF_{f.name.upper()}"], f.name
        assert sum(dtype.fields[n][0].itemsize for n, _ in f.numpy) == f.size
        assert defines[f"SIZE_{f.name.upper()}"] == f.size


def test_compiled_kernels_use_the_header() -> None:
    """The kernels were built with this layout (a stale build would differ)."""
    defines = _header_defines()
    compiled = _kernels.RECORD_LAYOUT
    for f in record_layout.FIELDS["tutor"]:
        assert compiled[f.name] == defines[f"OFF_{f.name.upper()}"], f.name
    for name in ("BASE_SIZE", "TUTOR_SIZE"):
        assert compiled[name] == defines[name]
    for name, bit in record_layout.FLAGS.items():
        assert compiled[f"F_{name}"] == defines[f"F_{name}"] == bit


_ROWS: dict[str, str] = {
    # (provider_id, bits, language_bits, price, rating, online, in_person, others, kind, cur, geom)
    "tutor": (
        "SELECT * FROM (VALUES"
        " ('f0000000-0000-4000-8000-000000000001'::uuid, 5::bigint, (-9223372036854775807 - 1)::bigint,"
        " 2500, 4.87::numeric, true, false, ARRAY['tlh'], 'tutor', 'EUR',"
        " ST_SetSRID(ST_MakePoint(2.3522, 48.8566), 4326)),"
        " ('00000000-0000-4000-8000-0000000000ff'::uuid, 0::bigint, 3::bigint, 0, NULL::numeric,"
        " false, true, NULL::text[], 'tutor', 'USD', NULL::geometry))"
        " f(provider_id, subject_bits, language_bits, price_minor, rating_avg, online,"
        " in_person, languages_other, kind, currency, geom)"
    ),
    "coach": (
        "SELECT * FROM (VALUES"
        " ('f0000000-0000-4000-8000-000000000002'::uuid, 9::bigint, 1::bigint, 900,"
        " 3.5::numeric, true, true, NULL::text[], 'mentor', 'GBP'),"
        " ('10000000-0000-4000-8000-000000000003'::uuid, 0::bigint, 0::bigint, 120000,"
        " 5.0::numeric, false, false, ARRAY['qya'], 'coach', 'CHF'))"
        " f(provider_id, expertise_bits, language_bits, price_minor, rating_avg, online,"
        " in_person, languages_other, kind, currency)"
    ),
}


@pytest.mark.parametrize("family", record_layout.FAMILIES)
def test_a_row_packed_in_sql_reads_back_through_the_dtype(family: str, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        # rating_sort (the damped rank, migration 0018) follows the other columns
        rows = conn.execute(
            f"SELECT f.*, {PACK_SQL[family]} FROM (SELECT *, round(coalesce(rating_avg, 0)"
            f" * 0.9, 2) AS rating_sort FROM ({_ROWS[family]}) f0) f"
        ).fetchall()
    assert len(rows) == 2
    flags = record_layout.FLAGS
    for row in rows:
        packed = bytes(row[-1])
        assert len(packed) == DTYPE[family].itemsize
        rec = np.frombuffer(packed, dtype=DTYPE[family])[0]
        pid: uuid.UUID = row[0]
        want: dict[str, Any] = {
            "id_hi": pid.int >> 64,
            "id_lo": pid.int & ((1 << 64) - 1),
            "cat": row[1],
            "lang": row[2],
            "price": row[3],
            "rating": -1 if row[4] is None else int(row[4] * 100),
            "flags": (flags["ONLINE"] if row[5] else 0)
            | (flags["IN_PERSON"] if row[6] else 0)
            | (flags["OTHERS"] if row[7] is not None else 0)
            | (flags["MENTOR"] if family == "coach" and row[8] == "mentor" else 0),
            "currency": row[9].encode(),
            "rank": int(row[-2] * 100),
        }
        assert {k: rec[k].item() for k in want} == want
        if family == "tutor":
            geom = row[10]
            if geom is None:
                assert math.isnan(rec["lat"])
                assert math.isnan(rec["lng"])
            else:
                assert (rec["lat"], rec["lng"]) == (48.8566, 2.3522)
