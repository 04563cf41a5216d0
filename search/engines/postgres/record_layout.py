"""The one definition of a packed facet record: its fields, in order, each with its C
type and size, the numpy fields that read it and the SQL expression that writes it.

Three readers and writers of the record come from `FIELDS`: the SQL that packs a
`{family}_facets` row (`pack_sql`, used by `blocks.block_rows_sql`), the numpy dtype the
engine decodes blocks with (`numpy_fields`, `blocks.DTYPE`), and the C header the kernels
read records with (`header`, `record_layout.h`: offsets, sizes, record sizes, flag bits).
`setup.py` writes the header before it compiles the kernels; the committed copy is
checked by `tests/search/test_record_layout.py`, which also packs rows in SQL and reads them
back with the dtype and through the compiled kernels' offsets.

A record is big-endian, as PostgreSQL's `*send` functions write it; records of a block
are in `provider_id` order. Both families share the first fields; tutors add their
position.

| field    | C type         | bytes | value                                                  |
|----------|----------------|------:|--------------------------------------------------------|
| id       | uint8_t[16]    | 16    | `provider_id` (read as two unsigned int8: hi, lo)      |
| cat      | int64_t        | 8     | `subject_bits` (tutors) / `expertise_bits` (coaches)   |
| lang     | int64_t        | 8     | `language_bits`                                        |
| price    | int32_t        | 4     | `price_minor`                                          |
| rating   | int16_t        | 2     | `rating_avg` x 100, -1 when unrated                    |
| rank     | int16_t        | 2     | `rating_sort` x 100: the damped rating the page sorts by |
| flags    | int16_t        | 2     | `FLAGS`: online, in person, has `languages_other`, mentor |
| currency | char[3]        | 3     | ISO 4217 code (ASCII)                                  |
| lat, lng | double         | 8, 8  | tutors only: the position in degrees (NaN without one) |

This module imports nothing outside the standard library: `setup.py` loads it from its
file before any dependency is installed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

FAMILIES = ("tutor", "coach")

# Bits of the `flags` field.
FLAGS: dict[str, int] = {"ONLINE": 1, "IN_PERSON": 2, "OTHERS": 4, "MENTOR": 8}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the record: `name` (the C macros `OFF_<NAME>`, `SIZE_<NAME>`), its
    C type (big-endian in the record), its size in bytes, the numpy fields (name, dtype)
    that read its bytes, in order, and the SQL expression (a `bytea` of exactly `size`
    bytes over a `{family}_facets` row) that writes it, with `{cat_bits}` and
    `{mentor_flag}` filled per family (`SQL_NAMES`)."""

    name: str
    ctype: str
    size: int
    numpy: tuple[tuple[str, str], ...]
    sql: str


def _flag(column: str, name: str) -> str:
    """SQL: the flag bit `name` set when the boolean expression `column` is true."""
    return f"(({column})::int << {FLAGS[name].bit_length() - 1})"


_COMMON = (
    Field("id", "uint8_t[16]", 16, (("id_hi", ">u8"), ("id_lo", ">u8")), "uuid_send(provider_id)"),
    Field("cat", "int64_t", 8, (("cat", ">i8"),), "int8send({cat_bits})"),
    Field("lang", "int64_t", 8, (("lang", ">i8"),), "int8send(language_bits)"),
    Field("price", "int32_t", 4, (("price", ">i4"),), "int4send(price_minor)"),
    Field(
        "rating",
        "int16_t",
        2,
        (("rating", ">i2"),),
        "int2send(coalesce((rating_avg * 100)::smallint, -1::smallint))",
    ),
    Field("rank", "int16_t", 2, (("rank", ">i2"),), "int2send((rating_sort * 100)::smallint)"),
    Field(
        "flags",
        "int16_t",
        2,
        (("flags", ">i2"),),
        f"int2send(({_flag('online', 'ONLINE')} | {_flag('in_person', 'IN_PERSON')}"
        f" | {_flag('languages_other IS NOT NULL', 'OTHERS')}{{mentor_flag}})::smallint)",
    ),
    Field(
        "currency", "char[3]", 3, (("currency", "S3"),), "convert_to(currency::text, 'SQL_ASCII')"
    ),
)
_POSITION = (
    Field("lat", "double", 8, (("lat", ">f8"),), "float8send(coalesce(ST_Y(geom), 'NaN'))"),
    Field("lng", "double", 8, (("lng", ">f8"),), "float8send(coalesce(ST_X(geom), 'NaN'))"),
)

FIELDS: dict[str, tuple[Field, ...]] = {"tutor": _COMMON + _POSITION, "coach": _COMMON}

# The per-family names the SQL expressions are written with.
_MENTOR = " | " + _flag("kind = 'mentor'", "MENTOR")
SQL_NAMES: dict[str, dict[str, str]] = {
    "tutor": {"cat_bits": "subject_bits", "mentor_flag": ""},
    "coach": {"cat_bits": "expertise_bits", "mentor_flag": _MENTOR},
}


def offsets(family: str) -> dict[str, int]:
    """{field name: byte offset} of `family`'s record."""
    out, at = {}, 0
    for f in FIELDS[family]:
        out[f.name] = at
        at += f.size
    return out


def record_size(family: str) -> int:
    """The bytes of one record of `family`."""
    return sum(f.size for f in FIELDS[family])


def numpy_fields(family: str) -> list[tuple[str, str]]:
    """The fields of `family`'s numpy dtype (name, big-endian dtype string), in order:
    `np.dtype(numpy_fields(family))` reads one record."""
    return [part for f in FIELDS[family] for part in f.numpy]


def pack_sql(family: str) -> str:
    """SQL: one `{family}_facets` row packed as one record (a `bytea`)."""
    return " || ".join(f.sql.format(**SQL_NAMES[family]) for f in FIELDS[family])


def header() -> str:
    """The C header of the record layout (`record_layout.h`): `OFF_<FIELD>` and
    `SIZE_<FIELD>` of every field (the tutor record's, whose first fields are the
    coach record's), `BASE_SIZE` (a record of either family holds at least this:
    the coach record), `TUTOR_SIZE`, and the `F_<FLAG>` bits."""
    lines = [
        "/* Generated by `python -m search.engines.postgres.record_layout` from",
        " * search/engines/postgres/record_layout.py (setup.py runs it before compiling the",
        " * kernels); tests/search/test_record_layout.py checks this copy. Do not edit. */",
        "#ifndef EDUCONNECT_RECORD_LAYOUT_H",
        "#define EDUCONNECT_RECORD_LAYOUT_H",
        "",
    ]
    at = offsets("tutor")
    common = {f.name for f in FIELDS["coach"]}
    for f in FIELDS["tutor"]:
        scope = "" if f.name in common else ", tutors only"
        lines.append(f"#define OFF_{f.name.upper()} {at[f.name]} /* {f.ctype}{scope} */")
        lines.append(f"#define SIZE_{f.name.upper()} {f.size}")
    lines += [
        f"#define BASE_SIZE {record_size('coach')}",
        f"#define TUTOR_SIZE {record_size('tutor')}",
        "",
        *(f"#define F_{name} {bit}" for name, bit in FLAGS.items()),
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def _check() -> None:
    """The families share their first fields (the kernels read both with one set of
    offsets)."""
    coach = FIELDS["coach"]
    if FIELDS["tutor"][: len(coach)] != coach:
        raise AssertionError("the coach record must be the tutor record's first fields")


_check()

if __name__ == "__main__":
    sys.stdout.write(header())
