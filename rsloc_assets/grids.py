"""Tile grids of the galleries rsloc reads: RSLoc's geographic grid and Web-Mercator XYZ.

Rows count downward in both grids; MBTiles stores TMS rows (counted upward), converted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rsloc_assets.geodesy import metres_per_degree

TILE_PX = 256
MERCATOR_HALF = 20037508.342789244  # π · 6378137 m: half the Web-Mercator world width


@dataclass(frozen=True, order=True)
class TileKey:
    """One tile of a grid: zoom level, column, row (rows count downward)."""

    z: int
    col: int
    row: int

    @property
    def key(self) -> str:
        return f"{self.z}/{self.col}/{self.row}"

    @classmethod
    def parse(cls, key: str) -> TileKey:
        z, col, row = (int(v) for v in key.split("/"))
        return cls(z, col, row)


@dataclass(frozen=True)
class Bounds:
    """A lon/lat (or native CRS) box: west, south, east, north."""

    west: float
    south: float
    east: float
    north: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.west + self.east) / 2, (self.south + self.north) / 2


class TileGrid(Protocol):
    """What the gallery, builder and pipeline need from a tile grid."""

    name: str
    crs: str

    def native_bounds(self, tile: TileKey) -> Bounds: ...
    def bounds(self, tile: TileKey) -> Bounds: ...
    def tile_at(self, lon: float, lat: float, z: int) -> TileKey: ...
    def centres(
        self, z: int, cols: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


def ground_size_m(grid: TileGrid, tile: TileKey) -> tuple[float, float]:
    """Width and height of a tile on the ground in metres, at its centre latitude (WGS84)."""
    b = grid.bounds(tile)
    m_lon, m_lat = metres_per_degree(b.centre[1])
    return float((b.east - b.west) * m_lon), float((b.north - b.south) * m_lat)


class GeoGrid:
    """RSLoc's `ge_tiles` grid: tiles 360/2^z degrees on both axes, rows down from latitude +180."""

    name = "ge"
    crs = "EPSG:4326"

    @staticmethod
    def size_deg(z: int) -> float:
        return 360.0 / (1 << z)

    def native_bounds(self, tile: TileKey) -> Bounds:
        d = self.size_deg(tile.z)
        return Bounds(
            tile.col * d - 180.0,
            180.0 - (tile.row + 1) * d,
            (tile.col + 1) * d - 180.0,
            180.0 - tile.row * d,
        )

    bounds = native_bounds

    def tile_at(self, lon: float, lat: float, z: int) -> TileKey:
        d = self.size_deg(z)
        return TileKey(z, math.floor((lon + 180.0) / d), math.floor((180.0 - lat) / d))

    def centres(self, z: int, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.size_deg(z)
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        return (cols + 0.5) * d - 180.0, 180.0 - (rows + 0.5) * d


class WebMercatorGrid:
    """The XYZ (slippy map) grid in EPSG:3857, rows down from the north edge."""

    name = "xyz"
    crs = "EPSG:3857"

    @staticmethod
    def size_m(z: int) -> float:
        return 2 * MERCATOR_HALF / (1 << z)

    def native_bounds(self, tile: TileKey) -> Bounds:
        s = self.size_m(tile.z)
        x0 = -MERCATOR_HALF + tile.col * s
        y1 = MERCATOR_HALF - tile.row * s
        return Bounds(x0, y1 - s, x0 + s, y1)

    def bounds(self, tile: TileKey) -> Bounds:
        b = self.native_bounds(tile)
        w, s = mercator_to_lonlat(b.west, b.south)
        e, n = mercator_to_lonlat(b.east, b.north)
        return Bounds(float(w), float(s), float(e), float(n))

    def tile_at(self, lon: float, lat: float, z: int) -> TileKey:
        x, y = lonlat_to_mercator(lon, lat)
        s = self.size_m(z)
        return TileKey(z, math.floor((x + MERCATOR_HALF) / s), math.floor((MERCATOR_HALF - y) / s))

    def centres(self, z: int, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.size_m(z)
        x = -MERCATOR_HALF + (np.asarray(cols, dtype=np.float64) + 0.5) * s
        y = MERCATOR_HALF - (np.asarray(rows, dtype=np.float64) + 0.5) * s
        return mercator_to_lonlat(x, y)


def mercator_to_lonlat(x, y):
    """Spherical Web-Mercator metres to lon/lat degrees (scalars or arrays)."""
    r = MERCATOR_HALF / math.pi
    lon = np.degrees(np.asarray(x, dtype=np.float64) / r)
    lat = np.degrees(2 * np.arctan(np.exp(np.asarray(y, dtype=np.float64) / r)) - math.pi / 2)
    return lon, lat


def lonlat_to_mercator(lon, lat):
    """Lon/lat degrees to spherical Web-Mercator metres (scalars or arrays)."""
    r = MERCATOR_HALF / math.pi
    x = np.radians(np.asarray(lon, dtype=np.float64)) * r
    y = np.log(np.tan(math.pi / 4 + np.radians(np.asarray(lat, dtype=np.float64)) / 2)) * r
    return x, y


def tms_row(row: int, z: int) -> int:
    """Flip a row between XYZ (down from north) and TMS/MBTiles (up from south); self-inverse."""
    return (1 << z) - 1 - row


GRIDS: dict[str, TileGrid] = {"ge": GeoGrid(), "xyz": WebMercatorGrid()}


def get_grid(name: str) -> TileGrid:
    """The grid called `name` ("ge" or "xyz")."""
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown tile grid {name!r}: expected one of {sorted(GRIDS)}") from None
