"""Type stub of the C extension `search/engines/postgres/_kernels.c` (docstrings there)."""

from typing import Any

# The record layout compiled in (`record_layout.h`): field offsets, sizes, flag bits.
RECORD_LAYOUT: dict[str, int]

def facet_pass(
    records: Any,
    itemsize: int,
    keep: Any | None,
    hits: Any,
    by_cat: Any,
    min_price: int | None,
    max_price: int | None,
    currency: bytes | None,
    min_rating: int | None,
    mode: int,
    kinds: int,
    cat_mask: int | None,
    lang_mask: int | None,
    lang_extra: Any | None,
) -> tuple[
    int,
    int,
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    list[tuple[bytes, int, int, int, int]],
]: ...
def edge_test(
    records: Any,
    itemsize: int,
    edge: Any,
    keep: Any,
    lat: float,
    lng: float,
    cos_in: float,
    cos_out: float,
    radius_m: float,
    margin: float,
) -> list[int]: ...
def vincenty(lat1: float, lng1: float, lat2: float, lng2: float) -> float: ...
def radius_cover(
    lat: float,
    lng: float,
    cos_in: float,
    cos_near: float,
    ix0: int,
    ix1: int,
    iy0: int,
    iy1: int,
) -> bytes: ...
def grid_runs(state: Any, nx: int, ny: int, ix0: int, iy0: int) -> bytes: ...
def gather(copies: list[bytes | None] | list[bytes], idx: Any, lengths: Any | None) -> bytes: ...
def page(
    records: Any,
    itemsize: int,
    hits: Any,
    sort: int,
    rank: Any | None,
    limit: int,
    after: tuple[float, int, int] | None,
) -> list[int]: ...
def hex_ids(records: Any, itemsize: int, idx: list[int]) -> list[str]: ...
def text_gather(
    group: dict[int, Any], cells: Any, versions: Any, starts: Any, ranked: bool
) -> tuple[bytes, bytes | None, list[int]]: ...
def clusters(
    records: Any, itemsize: int, hits: Any, cell: float
) -> list[tuple[int, float, float, float, float, float, float, int, int]]: ...
def nearest(
    records: Any,
    itemsize: int,
    hits: Any,
    lat: float,
    lng: float,
    limit: int,
    after: float | None,
) -> list[int]: ...
def st_distance(
    records: Any, itemsize: int, idx: list[int], lat: float, lng: float
) -> list[float]: ...
def items_json(parts: list[bytes], ns: list[int], js: list[int], tails: list[bytes]) -> bytes: ...
def points_json(parts: list[bytes], ns: list[int], js: list[int]) -> bytes: ...
