"""Map geometry: the cluster grid and viewport snapping (so map cache keys repeat).

The grid is regular in degrees, aligned on (0, 0): at zoom z a web-map tile spans
360 / 2^z degrees of longitude; clusters use 4 cells per tile width. Viewports are snapped
outward to whole cells before they are queried or become a cache key, so panning a little
reuses the cached answer and cluster cells never straddle two requests differently.
"""

from __future__ import annotations

import math

POINTS_ZOOM = 13
MAX_POINTS = 500


def cell_deg(zoom: int) -> float:
    """Cluster cell size in degrees at `zoom` (0–22)."""
    return 360.0 / (2**zoom) / 4.0


def snap_bbox(
    bbox: tuple[float, float, float, float], zoom: int
) -> tuple[float, float, float, float]:
    """`bbox` (min_lng, min_lat, max_lng, max_lat) grown to whole cells of `cell_deg(zoom)`,
    clamped to the world."""
    c = cell_deg(zoom)
    min_lng, min_lat, max_lng, max_lat = bbox
    return (
        max(-180.0, math.floor(min_lng / c) * c),
        max(-90.0, math.floor(min_lat / c) * c),
        min(180.0, math.ceil(max_lng / c) * c),
        min(90.0, math.ceil(max_lat / c) * c),
    )
