"""OpenSearch documents and bulk actions, read from the same SQL view as the PostgreSQL
search tables (`search_document_source`, see `indexer/projection.py`), so both engines
index the same data.

A document is the projection row (ids, names, catalogue slugs, languages, price, rating,
flags, position, availability, version) plus the texts the PostgreSQL engine folds into
its `tsvector`: `display_name`, `headline`, the catalogue words of the provider's subjects
or expertises (`search_catalogue.terms`, as in the view) and `bio`. The mapping
(`infra/opensearch/`) copies those into `text_fr` / `text_en` / `text_simple`.

Actions (opensearch-py bulk helper format):
- a searchable provider: `index` into its kind's alias (`tutors` or `coaches`) with
  `version` = `provider_profiles.version`, `version_type: external` — a replay or an
  out-of-order write of an older (or the same) version is refused with a 409, which the
  writer counts as success — and an unversioned `delete` from the other alias (a
  provider whose kind changed; a 404 is success);
- a provider that is gone, inactive or KYC-rejected: unversioned `delete` from both.
  Deletes carry no version because the document is always rebuilt from the *current*
  state, in commit order per provider, so a delete is never older than what it removes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from search.engines.opensearch.index import alias_name

_SELECT = """
SELECT s.provider_id, s.kind, s.searchable, s.version, s.display_name, s.headline, s.city,
       s.country_code, s.subjects, s.expertises, s.languages, s.price_minor, s.currency,
       s.rating_avg, s.rating_count, s.rating_sort, s.online, s.in_person, s.lat, s.lng,
       (SELECT coalesce(json_agg(json_build_object('gte', lower(r), 'lt', upper(r))
                                 ORDER BY lower(r)), '[]'::json)
          FROM unnest(s.availability) AS r) AS availability,
       p.bio,
       (SELECT coalesce(string_agg(c.terms, ' ' ORDER BY c.slug), '')
          FROM search_catalogue c
         WHERE c.slug = ANY (s.subjects) OR c.slug = ANY (s.expertises)) AS catalogue_terms
  FROM search_document_source s
  JOIN provider_profiles p ON p.user_id = s.provider_id
"""
BY_IDS = _SELECT + " WHERE s.provider_id = ANY(%(ids)s)"
ALL_SEARCHABLE = _SELECT + " WHERE s.searchable ORDER BY s.provider_id"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of `search_document_source` with the texts OpenSearch analyses."""

    provider_id: uuid.UUID
    kind: str
    searchable: bool
    version: int
    display_name: str
    headline: str
    city: str | None
    country_code: str | None
    subjects: list[str]
    expertises: list[str]
    languages: list[str]
    price_minor: int
    currency: str
    rating_avg: Decimal | None
    rating_count: int
    rating_sort: Decimal
    online: bool
    in_person: bool
    lat: float | None
    lng: float | None
    availability: list[dict[str, str]]
    bio: str
    catalogue_terms: str

    @property
    def family(self) -> str:
        """`tutors` or `coaches` (coaches and mentors share an index)."""
        return "tutors" if self.kind == "tutor" else "coaches"


def fetch_rows(conn: psycopg.Connection[Any], ids: Sequence[uuid.UUID]) -> list[SourceRow]:
    """The source rows of `ids` (providers that no longer exist are absent), in the
    caller's transaction."""
    if not ids:
        return []
    rows = conn.execute(BY_IDS, {"ids": list(ids)}).fetchall()
    return [SourceRow(*r) for r in rows]


def iter_searchable(conn: psycopg.Connection[Any], *, batch: int = 2000) -> Iterator[SourceRow]:
    """Every searchable provider's row, streamed with a server-side cursor (needs a
    transaction: the caller's snapshot decides what is seen)."""
    with conn.cursor(name="opensearch_reindex_source") as cur:
        cur.itersize = batch
        cur.execute(ALL_SEARCHABLE)
        for r in cur:
            yield SourceRow(*r)


def document(row: SourceRow, *, now: datetime | None = None) -> dict[str, Any]:
    """The `_source` of a searchable provider (field names of `infra/opensearch/`)."""
    doc: dict[str, Any] = {
        "provider_id": str(row.provider_id),
        "version": row.version,
        "display_name": row.display_name,
        "headline": row.headline,
        "catalogue_terms": row.catalogue_terms,
        "bio": row.bio or "",
        "city": row.city,
        "country_code": row.country_code.strip() if row.country_code else None,
        "languages": list(row.languages),
        "price_minor": row.price_minor,
        "currency": row.currency.strip(),
        "rating_avg": float(row.rating_avg) if row.rating_avg is not None else None,
        "rating_count": row.rating_count,
        "rating_sort": float(row.rating_sort),
        "online": row.online,
        "in_person": row.in_person,
        "availability": list(row.availability),
        "indexed_at": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
    }
    if row.kind == "tutor":
        doc["subjects"] = list(row.subjects)
        doc["location"] = (
            {"lat": row.lat, "lon": row.lng}
            if row.lat is not None and row.lng is not None
            else None
        )
    else:
        doc["kind"] = row.kind
        doc["expertises"] = list(row.expertises)
    return doc


def actions(
    ids: Sequence[uuid.UUID],
    rows: Sequence[SourceRow],
    *,
    targets: dict[str, str] | None = None,
    prefix: str = "",
) -> list[dict[str, Any]]:
    """Bulk actions bringing the documents of `ids` to the state of `rows`.

    `targets` maps a family (`tutors`, `coaches`) to the index or alias written (default:
    the aliases under `prefix`).
    """
    where = targets or {f: alias_name(f, prefix) for f in ("tutors", "coaches")}
    by_id = {r.provider_id: r for r in rows}
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for pid in dict.fromkeys(ids):
        row = by_id.get(pid)
        keep = row.family if row is not None and row.searchable else None
        for family, index in where.items():
            if family == keep:
                assert row is not None
                out.append(
                    {
                        "_op_type": "index",
                        "_index": index,
                        "_id": str(pid),
                        "version": row.version,
                        "version_type": "external",
                        "_source": document(row, now=now),
                    }
                )
            else:
                out.append({"_op_type": "delete", "_index": index, "_id": str(pid)})
    return out


def row_actions(rows: Sequence[SourceRow], *, targets: dict[str, str]) -> list[dict[str, Any]]:
    """Index actions only (a bulk load into empty indices: no deletes needed)."""
    now = datetime.now(UTC)
    return [
        {
            "_op_type": "index",
            "_index": targets[r.family],
            "_id": str(r.provider_id),
            "version": r.version,
            "version_type": "external",
            "_source": document(r, now=now),
        }
        for r in rows
        if r.searchable
    ]
