"""Facets: what they count and how the engines' raw aggregates become the response.

Semantics (documented in the README, tested):

- Facets count the whole filtered set, not the page.
- `subjects` / `expertises` and `languages` are *disjunctive*: each ignores its own
  filter (a checkbox list shows how many results every other option would add) but
  applies all the others. Values selected in the query always appear, with 0 if need be.
- `rating` buckets `[1,2) [2,3) [3,4) [4,5]` and `price` statistics count exactly the
  result set (every filter applied, `min_rating` and prices included). Unrated providers
  are in no rating bucket.
- `price` is per currency (providers price in their own currency): min, max, avg (2
  decimals, minor units) and count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from profiles.catalogue import EXPERTISES_BY_SLUG, SUBJECTS_BY_SLUG

RATING_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1-2", 1, 2),
    ("2-3", 2, 3),
    ("3-4", 3, 4),
    ("4-5", 4, 5),
)


def rating_bucket(rating: float | None) -> int | None:
    """Index in `RATING_BUCKETS` of a rating (4-5 includes 5), None when unrated."""
    if rating is None:
        return None
    return min(int(rating), 4) - 1


def _counts(counts: dict[str, int], selected: Iterable[str]) -> list[tuple[str, int]]:
    merged = dict(counts)
    for value in selected:
        merged.setdefault(value, 0)
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))


def build_facets(
    *,
    catalogue_facet: str,
    catalogue_counts: dict[str, int],
    catalogue_selected: Iterable[str],
    language_counts: dict[str, int],
    language_selected: Iterable[str],
    rating_counts: dict[int, int],
    price_stats: dict[str, tuple[int, int, int, int]],
) -> dict[str, Any]:
    """The `facets` object from raw aggregates.

    `catalogue_facet` is `subjects` or `expertises`; `rating_counts` maps a bucket index
    to a count; `price_stats` maps a currency to (count, min, max, sum) in minor units.
    """
    entries = SUBJECTS_BY_SLUG if catalogue_facet == "subjects" else EXPERTISES_BY_SLUG
    catalogue = []
    for slug, n in _counts(catalogue_counts, catalogue_selected):
        e = entries.get(slug)
        catalogue.append(
            {
                "value": slug,
                "label_fr": e.fr if e else slug,
                "label_en": e.en if e else slug,
                "count": n,
            }
        )
    return {
        "rating": [
            {"key": key, "from": lo, "to": hi, "count": rating_counts.get(i, 0)}
            for i, (key, lo, hi) in enumerate(RATING_BUCKETS)
        ],
        "price": [
            {
                "currency": cur,
                "min": mn,
                "avg": round(total / n, 2),
                "max": mx,
                "count": n,
            }
            for cur, (n, mn, mx, total) in sorted(
                price_stats.items(), key=lambda kv: (-kv[1][0], kv[0])
            )
        ],
        catalogue_facet: catalogue,
        "languages": [
            {"value": code, "count": n} for code, n in _counts(language_counts, language_selected)
        ],
    }
