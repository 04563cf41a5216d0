"""Streaming writes that stay on their page: a text key, and no unused sort indexes.

Building a document's `search_vector` (five `to_tsvector` calls with unaccent over name,
headline, subject terms and bio) was about half the cost of a streaming batch, yet
most writes (price, rating, languages, slots) leave the text as it
was. `search_document_source.text_key` is an md5 (as a uuid) of every input of the
vector — name, headline, bio, the account's locale (the bio's configuration) and the
catalogue terms of its subjects/expertises with their split flag (the catalogue's stored
vectors are generated from its terms) — and the documents keep it in `text_key`; a batch
reuses the stored vector of a document whose key is unchanged
(`indexer.projection._rebuild_statement`). The record's text form keeps NULL and ''
apart, so the key is unambiguous.

Existing documents get a NULL key (their next write re-tokenizes them).

With the vector unchanged, a price or rating write changes no indexed column of a
document once the two btrees nothing reads are gone, so PostgreSQL updates it in place
(HOT: no insertion into the GIN and GiST indexes). Dropped: `rating_sort` and
`price_minor` (pages come from the facet blocks; the SQL pass that remains for wrapping
radius boxes sorts its filtered rows). The GIN indexes on `languages` and `subjects` /
`expertises` and the GiST index on `availability` stay, as DESIGN §3 lists them, although
the engine filters on the bit columns and the facet rows (language and slot writes
therefore still insert into them). `fillfactor` goes from 90 to 75: a ~2 KB document needs
that much free space for its new version on the same page.

Revision ID: 0009_text_key
Revises: 0008_facet_blocks
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0009_text_key"
down_revision = "0008_facet_blocks"
branch_labels = None
depends_on = None

TEXT_KEY = "md5(ROW(p.display_name, p.headline, p.bio, u.locale, t.terms, t.split)::text)::uuid"


def _view_0007() -> str:
    path = Path(__file__).with_name("0007_search_perf2.py")
    spec = importlib.util.spec_from_file_location("_educonnect_0007_search_perf2", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.SOURCE_VIEW)


def source_view() -> str:
    """The 0007 view with `text_key` as its last column (CREATE OR REPLACE VIEW may only
    add columns at the end)."""
    view = _view_0007()
    anchor = "\nFROM provider_profiles p\n"
    assert view.count(anchor) == 1
    return view.replace(anchor, f",\n    {TEXT_KEY} AS text_key{anchor}")


# name -> definition, as 0002 created them
UNUSED_INDEXES = {
    f"{t}_{name}": f"ON {t} {how}"
    for t in ("tutor_documents", "coach_documents")
    for name, how in (
        ("rating_idx", "(rating_sort DESC, provider_id)"),
        ("price_idx", "(price_minor, provider_id)"),
    )
}


def upgrade() -> None:
    op.execute(source_view())
    for family in ("tutor", "coach"):
        op.execute(
            f"ALTER TABLE {family}_documents ADD COLUMN text_key uuid, SET (fillfactor = 75)"
        )
    for name in UNUSED_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade() -> None:
    for name, definition in UNUSED_INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}")
    for family in ("tutor", "coach"):
        op.execute(f"ALTER TABLE {family}_documents DROP COLUMN text_key, SET (fillfactor = 90)")
    op.execute("DROP VIEW search_document_source")
    op.execute(_view_0007())
