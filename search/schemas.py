"""Query and response models of the search API (pydantic).

Query models are frozen and normalized at construction: list parameters are split on
commas, de-duplicated and sorted, codes are case-folded, `q` is reduced to its words
(accents and case folded), datetimes are converted to UTC. So two spellings of one query
give equal models and the same cache key (`normalized()`).

Units: prices in integer minor units of the provider's own currency (ISO 4217), compared
with the provider's amount as is (pass `currency` to stay within one currency); distances
in km; coordinates WGS84 degrees; ratings 1-5. `bbox` is `min_lng,min_lat,max_lng,max_lat`
(GeoJSON / OpenSearch order).

Bad values raise `search.errors.InvalidParameter` (a 422 naming the parameter). A
parameter given with an empty value (`?lat=`) is a bad value when it must be a number, a
date-time or one of a set (`sort`, `mode`, `currency`), as FastAPI treats a typed query
parameter; an empty `q`, list item or `cursor` means none.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SkipValidation,
    computed_field,
    model_validator,
)

from core.languages import is_language
from core.money import is_currency
from profiles.catalogue import SLUG_RE, is_expertise, is_subject
from search.errors import InvalidParameter

Sort = Literal["distance", "rating", "price", "relevance"]
SORTS: tuple[str, ...] = ("distance", "rating", "price", "relevance")
Mode = Literal["online", "in_person"]
DEFAULT_RADIUS_KM = 25.0
MAX_RADIUS_KM = 500.0
MAX_WORDS = 8
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def fold_text(q: str | None) -> tuple[str, ...]:
    """Words of `q`, accents stripped and case folded: ' Mathé-matiques ' → ('mathe', 'matiques').

    At most `MAX_WORDS` words of at most 40 characters; underscores count as separators.
    """
    if not q:
        return ()
    decomposed = unicodedata.normalize("NFKD", q)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    words = [w[:40] for w in _WORD_RE.findall(stripped.replace("_", " "))]
    return tuple(words[:MAX_WORDS])


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return out


def _utc(param: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if value == "":
        raise InvalidParameter(param, "empty: give an RFC 3339 date-time or leave it out")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParameter(param, "not an RFC 3339 date-time") from None
    if not isinstance(value, datetime):
        raise InvalidParameter(param, "not an RFC 3339 date-time")
    if value.tzinfo is None:
        raise InvalidParameter(param, "a time zone offset is required (e.g. Z or +01:00)")
    return value.astimezone(UTC)


def _number(param: str, value: Any, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if value == "":
        kind = "an integer" if integer else "a number"
        raise InvalidParameter(param, f"empty: give {kind} or leave it out", type_="type_error")
    try:
        out = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(
            param, "not an integer" if integer else "not a number", type_="type_error"
        ) from None
    if not integer and not math.isfinite(out):
        raise InvalidParameter(param, "not a finite number")
    return out


class _Filters(BaseModel):
    """Filters shared by every search endpoint."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    q: tuple[str, ...] = ()
    language: tuple[str, ...] = ()
    min_price: int | None = None
    max_price: int | None = None
    currency: str | None = None
    min_rating: float | None = None
    mode: Mode | None = None
    available_from: datetime | None = None
    available_to: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalize_filters(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        q = d.get("q")
        d["q"] = fold_text(q) if isinstance(q, str) or q is None else tuple(q)
        langs = sorted({x.lower() for x in _split(d.get("language"))})
        for code in langs:
            if not is_language(code):
                raise InvalidParameter("language", f"unknown ISO 639-1 code {code!r}")
        d["language"] = tuple(langs)
        for name in ("min_price", "max_price"):
            d[name] = _number(name, d.get(name), integer=True)
            if d[name] is not None and d[name] < 0:
                raise InvalidParameter(name, "must be ≥ 0 (minor units)")
        lo, hi = d["min_price"], d["max_price"]
        if lo is not None and hi is not None and lo > hi:
            raise InvalidParameter("min_price", "min_price must be ≤ max_price")
        cur = d.get("currency")
        if cur is not None:
            cur = str(cur).upper()
            if not is_currency(cur):
                raise InvalidParameter("currency", f"unknown ISO 4217 code {cur!r}")
        d["currency"] = cur
        d["min_rating"] = _number("min_rating", d.get("min_rating"))
        if d["min_rating"] is not None and not 1 <= d["min_rating"] <= 5:
            raise InvalidParameter("min_rating", "must be between 1 and 5")
        mode = d.get("mode")
        if mode is None:
            d["mode"] = None
        elif mode not in ("online", "in_person"):
            raise InvalidParameter("mode", "must be 'online' or 'in_person'")
        d["available_from"] = _utc("available_from", d.get("available_from"))
        d["available_to"] = _utc("available_to", d.get("available_to"))
        if d["available_from"] and d["available_to"] and d["available_from"] >= d["available_to"]:
            raise InvalidParameter("available_to", "available_to must be after available_from")
        return d


def _slugs(param: str, value: Any, check: Any) -> tuple[str, ...]:
    slugs = sorted({s.lower() for s in _split(value)})
    for s in slugs:
        if not SLUG_RE.match(s):
            raise InvalidParameter(param, f"{s!r} is not a slug (lower-case words and hyphens)")
        if not check(s):
            raise InvalidParameter(param, f"unknown {param} {s!r}")
    return tuple(slugs)


def _paging(d: dict[str, Any], sorts: tuple[str, ...]) -> None:
    sort = d.get("sort")
    if sort is None:
        d["sort"] = None
    elif sort not in sorts:
        raise InvalidParameter("sort", f"must be one of {', '.join(sorts)}")
    limit = _number("limit", d.get("limit"), integer=True)
    if limit is None:
        limit = 20
    if not 1 <= limit <= 100:
        raise InvalidParameter("limit", "must be between 1 and 100")
    d["limit"] = limit
    d["cursor"] = d.get("cursor") or None


class _Geo(_Filters):
    subject: tuple[str, ...] = ()
    lat: float | None = None
    lng: float | None = None
    radius_km: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalize_geo(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        d["subject"] = _slugs("subject", d.get("subject"), is_subject)
        lat = _number("lat", d.get("lat"))
        lng = _number("lng", d.get("lng"))
        if lat is not None and not -90 <= lat <= 90:
            raise InvalidParameter("lat", "must be between -90 and 90")
        if lng is not None and not -180 <= lng <= 180:
            raise InvalidParameter("lng", "must be between -180 and 180")
        if (lat is None) != (lng is None):
            raise InvalidParameter("lng" if lng is None else "lat", "lat and lng go together")
        radius = _number("radius_km", d.get("radius_km"))
        if radius is not None:
            if not 0 < radius <= MAX_RADIUS_KM:
                raise InvalidParameter("radius_km", f"must be > 0 and ≤ {MAX_RADIUS_KM:g} km")
            if lat is None:
                raise InvalidParameter("radius_km", "radius_km needs lat and lng")
        elif lat is not None:
            radius = DEFAULT_RADIUS_KM
        d.update(lat=lat, lng=lng, radius_km=radius)
        return d


class TutorQuery(_Geo):
    """`GET /api/v1/search/tutors`. Defaults: `radius_km` 25 when `lat`/`lng` are given;
    `sort` = relevance with `q`, else distance with a position, else rating."""

    sort: Sort = "rating"
    limit: int = 20
    cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalize_paging(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        _paging(d, SORTS)
        # the position as `_Geo` reads it (this validator may run before `_Geo`'s)
        located = _number("lat", d.get("lat")) is not None
        if d["sort"] is None:
            d["sort"] = "relevance" if d.get("q") else "distance" if located else "rating"
        if d["sort"] == "distance" and not located:
            raise InvalidParameter("sort", "sort=distance needs lat and lng")
        if d["sort"] == "relevance" and not d.get("q"):
            raise InvalidParameter("sort", "sort=relevance needs q")
        return d


class TutorMapQuery(_Geo):
    """`GET /api/v1/search/tutors/map`: the tutor filters plus a viewport `bbox`
    (min_lng, min_lat, max_lng, max_lat; degrees) and a `zoom` (0-22, web-map tiles)."""

    bbox: tuple[float, float, float, float]
    zoom: int

    @model_validator(mode="before")
    @classmethod
    def _normalize_bbox(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        raw = d.get("bbox")
        parts = _split(raw) if not isinstance(raw, tuple) else list(raw)
        if len(parts) != 4:
            raise InvalidParameter("bbox", "bbox is min_lng,min_lat,max_lng,max_lat")
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            raise InvalidParameter("bbox", "bbox values must be numbers") from None
        min_lng, min_lat, max_lng, max_lat = box
        if not all(math.isfinite(v) for v in box):
            raise InvalidParameter("bbox", "bbox values must be finite")
        if not (-180 <= min_lng <= 180 and -180 <= max_lng <= 180):
            raise InvalidParameter("bbox", "longitudes must be between -180 and 180")
        if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
            raise InvalidParameter("bbox", "latitudes must be between -90 and 90")
        if min_lng > max_lng or min_lat > max_lat:
            raise InvalidParameter(
                "bbox", "min must be ≤ max (split a viewport crossing the antimeridian in two)"
            )
        d["bbox"] = box
        zoom = _number("zoom", d.get("zoom"), integer=True)
        if zoom is None or not 0 <= zoom <= 22:
            raise InvalidParameter("zoom", "zoom must be an integer between 0 and 22")
        d["zoom"] = zoom
        return d


class CoachQuery(_Filters):
    """`GET /api/v1/search/coaches`: expertise, language, kind, q, price, rating, paging.
    Default sort: relevance with `q`, else rating. No geo."""

    expertise: tuple[str, ...] = ()
    kind: tuple[Literal["coach", "mentor"], ...] = ()
    sort: Literal["rating", "price", "relevance"] = "rating"
    limit: int = 20
    cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalize_coach(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        d["expertise"] = _slugs("expertise", d.get("expertise"), is_expertise)
        kinds = sorted({k.lower() for k in _split(d.get("kind"))})
        for k in kinds:
            if k not in ("coach", "mentor"):
                raise InvalidParameter("kind", "must be 'coach' or 'mentor'")
        d["kind"] = tuple(kinds)
        _paging(d, ("rating", "price", "relevance"))
        if d["sort"] is None:
            d["sort"] = "relevance" if d.get("q") else "rating"
        if d["sort"] == "relevance" and not d.get("q"):
            raise InvalidParameter("sort", "sort=relevance needs q")
        return d


def normalized(query: BaseModel, *, exclude: set[str] | None = None) -> dict[str, Any]:
    """The query as a canonical JSON-able dict (defaults included, datetimes as RFC 3339),
    the basis of cache keys and of the cursor's query fingerprint."""
    return query.model_dump(mode="json", exclude=exclude)


# ---------------------------------------------------------------- responses
#
# The engines return `Results` / `MapResults`; the service sends them as JSON bytes. Their
# bulky fields are the engines' own output (plain dicts and lists built from SQL rows) and
# are not re-validated (`SkipValidation`): that cost ~0.1-0.3 ms per request for nothing.
# The exact shape of a response body is described by the `*Page` models below, which the
# OpenAPI document publishes and the tests check real bodies against (`extra="forbid"`).


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Money(_Doc):
    amount_minor: int = Field(description="Integer minor units (ISO 4217)")
    currency: str = Field(description="ISO 4217 code")


class Rating(_Doc):
    avg: float | None = Field(description="Average 1-5, null when unrated")
    count: int


class LatLng(_Doc):
    lat: float
    lng: float


class TutorItem(_Doc):
    id: str
    display_name: str
    headline: str
    subjects: list[str]
    languages: list[str]
    price: Money
    rating: Rating
    online: bool
    in_person: bool
    location: LatLng | None
    city: str | None
    country_code: str | None
    distance_km: float | None = Field(description="WGS84 geodesic km, with a position")


class CoachItem(_Doc):
    id: str
    kind: Literal["coach", "mentor"]
    display_name: str
    headline: str
    expertises: list[str]
    languages: list[str]
    price: Money
    rating: Rating
    online: bool
    in_person: bool
    city: str | None
    country_code: str | None


class RatingBucket(_Doc):
    key: Literal["1-2", "2-3", "3-4", "4-5"]
    from_: int = Field(alias="from")
    to: int
    count: int


class PriceStats(_Doc):
    currency: str
    min: int
    avg: float
    max: int
    count: int


class CatalogueCount(_Doc):
    value: str
    label_fr: str
    label_en: str
    count: int


class LanguageCount(_Doc):
    value: str
    count: int


class TutorFacets(_Doc):
    rating: list[RatingBucket]
    price: list[PriceStats]
    subjects: list[CatalogueCount]
    languages: list[LanguageCount]


class CoachFacets(_Doc):
    rating: list[RatingBucket]
    price: list[PriceStats]
    expertises: list[CatalogueCount]
    languages: list[LanguageCount]


class _Answer(_Doc):
    engine: str = Field(description="The engine that answered")
    cached: bool
    took_ms: float
    degraded: bool = Field(
        default=False, description="Present (true) only when the fallback engine answered"
    )
    degraded_reason: str | None = Field(
        default=None, description="Present only when degraded, e.g. opensearch_timeout"
    )


class TutorPage(_Answer):
    """The body of `GET /api/v1/search/tutors`."""

    items: list[TutorItem]
    facets: TutorFacets
    total: int
    next_cursor: str | None


class CoachPage(_Answer):
    """The body of `GET /api/v1/search/coaches`."""

    items: list[CoachItem]
    facets: CoachFacets
    total: int
    next_cursor: str | None


class Bounds(_Doc):
    min_lat: float
    min_lng: float
    max_lat: float
    max_lng: float


class MapCluster(_Doc):
    count: int
    centroid: LatLng
    bounds: Bounds


class MapPoint(_Doc):
    id: str
    lat: float
    lng: float
    display_name: str
    price: Money
    rating: Rating


class MapPage(_Answer):
    """The body of `GET /api/v1/search/tutors/map`: clusters below zoom 13, else points."""

    mode: Literal["clusters", "points"]
    clusters: list[MapCluster]
    points: list[MapPoint]
    total: int


class Rendered:
    """A response list given either as dicts or as the JSON array an engine rendered
    (UTF-8 bytes), exactly one of them (TypeError otherwise, naming `name` and
    `name`_json): `dicts()` parses the JSON once on first use, `body()` is what the
    response body carries (the rendered JSON as an `orjson.Fragment`, written as is,
    else the dicts)."""

    __slots__ = ("_dicts", "_json")

    def __init__(self, name: str, dicts: list[dict[str, Any]] | None, rendered: bytes | None):
        if (dicts is None) == (rendered is None):
            raise TypeError(f"takes {name} or {name}_json")
        self._dicts, self._json = dicts, rendered

    def dicts(self) -> list[dict[str, Any]]:
        """The list as dicts."""
        if self._dicts is None:
            self._dicts = orjson.loads(self._json or b"[]")
        return self._dicts

    def body(self) -> Any:
        """The list for the response body."""
        return orjson.Fragment(self._json) if self._json is not None else self._dicts


class Results(BaseModel):
    """A list response: `items`, `facets`, `total`, `next_cursor`, `engine`, `cached`,
    `took_ms` (the service fills the last two). Shape: `TutorPage` / `CoachPage`.

    The items come either as dicts (`items=`) or as the JSON array an engine rendered
    (`items_json=`, UTF-8 bytes: the PostgreSQL engine joins them from its blocks), which
    the response carries as is (`body_fields`); `items` (in `model_dump()` too) parses it
    on first use."""

    _items: Rendered = PrivateAttr()
    facets: SkipValidation[dict[str, Any]]
    total: int
    next_cursor: str | None
    engine: str
    cached: bool = False
    took_ms: float = 0.0

    def __init__(
        self,
        *,
        items: list[dict[str, Any]] | None = None,
        items_json: bytes | None = None,
        **data: Any,
    ) -> None:
        """TypeError unless exactly one of `items` and `items_json` is given."""
        items_of = Rendered("items", items, items_json)
        super().__init__(**data)
        self._items = items_of

    @computed_field  # type: ignore[prop-decorator]
    @property
    def items(self) -> list[dict[str, Any]]:
        """The items as dicts (parsed once from `items_json` when that is what came)."""
        return self._items.dicts()

    def items_body(self) -> Any:
        """The items for the response body (`Rendered.body`)."""
        return self._items.body()


TutorResults = Results
CoachResults = Results


class MapResults(BaseModel):
    """The map response: `mode` clusters|points, `clusters`, `points`, `total`. Shape:
    `MapPage`. The points come as dicts (`points`) or as their rendered JSON array
    (`points_json`, bytes: sent as is, `points_body`)."""

    _points: Rendered = PrivateAttr()
    mode: Literal["clusters", "points"]
    clusters: SkipValidation[list[dict[str, Any]]]
    total: int
    engine: str
    cached: bool = False
    took_ms: float = 0.0

    def __init__(
        self,
        *,
        points: list[dict[str, Any]] | None = None,
        points_json: bytes | None = None,
        **data: Any,
    ) -> None:
        """TypeError unless exactly one of `points` and `points_json` is given."""
        points_of = Rendered("points", points, points_json)
        super().__init__(**data)
        self._points = points_of

    @computed_field  # type: ignore[prop-decorator]
    @property
    def points(self) -> list[dict[str, Any]]:
        """The points as dicts (parsed once from `points_json` when that is what came)."""
        return self._points.dicts()

    def points_body(self) -> Any:
        """The points for the response body (`Rendered.body`)."""
        return self._points.body()


SERVICE_FIELDS = frozenset({"cached", "took_ms"})


def body_fields(result: BaseModel) -> dict[str, Any]:
    """An engine result as the response's dict, in field order, without the fields the
    service appends (`cached`, `took_ms`): what `model_dump()` gave minus its cost (no
    copy of the items, no type inference; orjson walks them once)."""
    out = {"items": result.items_body()} if isinstance(result, Results) else {}
    for k in type(result).model_fields:
        if k not in SERVICE_FIELDS:
            out[k] = getattr(result, k)
        if k == "clusters" and isinstance(result, MapResults):
            out["points"] = result.points_body()
    return out
