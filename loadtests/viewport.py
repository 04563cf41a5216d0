"""A map viewport the way a web-map UI (Leaflet, MapLibre) moves it.

The map has a screen size in pixels, an integer zoom and a centre kept on the zoom's pixel
grid (web-Mercator, 256-pixel tiles): panning drags it by whole pixels, zooming steps by
one level, and the bbox sent to the API is what the screen shows. So successive requests
repeat exactly the way a real UI's do (the API then snaps the bbox outward to its cluster
grid for the query and the cache key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TILE = 256
MAX_LAT = 85.05112878


def _world_px(zoom: int) -> float:
    return TILE * 2.0**zoom


def to_pixels(lat: float, lng: float, zoom: int) -> tuple[float, float]:
    """Web-Mercator pixel coordinates (x right, y down) of a point at `zoom`."""
    lat = max(-MAX_LAT, min(MAX_LAT, lat))
    size = _world_px(zoom)
    x = (lng + 180.0) / 360.0 * size
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * size
    return x, y


def to_lat_lng(x: float, y: float, zoom: int) -> tuple[float, float]:
    """Inverse of `to_pixels`."""
    size = _world_px(zoom)
    lng = x / size * 360.0 - 180.0
    n = math.pi - 2.0 * math.pi * y / size
    lat = math.degrees(math.atan(math.sinh(n)))
    return lat, lng


@dataclass(slots=True)
class Viewport:
    """A screen of `width` x `height` pixels centred on a pixel of the zoom's grid."""

    cx: float
    cy: float
    zoom: int
    width: int = 1280
    height: int = 800
    min_zoom: int = 3
    max_zoom: int = 18

    @classmethod
    def around(
        cls, lat: float, lng: float, zoom: int, width: int = 1280, height: int = 800
    ) -> Viewport:
        """A viewport centred on (lat, lng), the centre rounded to a whole pixel."""
        x, y = to_pixels(lat, lng, zoom)
        return cls(round(x), round(y), zoom, width, height)

    @property
    def center(self) -> tuple[float, float]:
        """(lat, lng) of the centre."""
        return to_lat_lng(self.cx, self.cy, self.zoom)

    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lng, min_lat, max_lng, max_lat) of the screen, clamped to the world and
        rounded to 6 decimals (what a UI serialises)."""
        size = _world_px(self.zoom)
        x0 = max(0.0, self.cx - self.width / 2)
        x1 = min(size, self.cx + self.width / 2)
        y0 = max(0.0, self.cy - self.height / 2)
        y1 = min(size, self.cy + self.height / 2)
        max_lat, min_lng = to_lat_lng(x0, y0, self.zoom)
        min_lat, max_lng = to_lat_lng(x1, y1, self.zoom)
        return (round(min_lng, 6), round(min_lat, 6), round(max_lng, 6), round(max_lat, 6))

    def bbox_param(self) -> str:
        """The `bbox` query parameter."""
        return ",".join(f"{v:.6f}" for v in self.bbox())

    def pan(self, dx: int, dy: int) -> None:
        """Drag the map by whole pixels (positive dx shows what is east, dy south)."""
        size = _world_px(self.zoom)
        self.cx = max(self.width / 2, min(size - self.width / 2, self.cx + int(dx)))
        self.cy = max(self.height / 2, min(size - self.height / 2, self.cy + int(dy)))

    def zoom_by(self, step: int, at: tuple[float, float] | None = None) -> None:
        """Zoom by `step` levels (±1 for a wheel notch or a double click), keeping the
        centre, or centring on `at` = (lat, lng) (a click on a cluster)."""
        new = max(self.min_zoom, min(self.max_zoom, self.zoom + step))
        lat, lng = at if at is not None else self.center
        x, y = to_pixels(lat, lng, new)
        self.zoom, self.cx, self.cy = new, round(x), round(y)

    def radius_km(self) -> float:
        """Half the screen diagonal in km (the radius a 'search this area' list uses)."""
        min_lng, min_lat, max_lng, max_lat = self.bbox()
        lat = math.radians((min_lat + max_lat) / 2)
        w = (max_lng - min_lng) * 111.32 * math.cos(lat)
        h = (max_lat - min_lat) * 110.57
        return max(1.0, min(500.0, math.hypot(w, h) / 2))
