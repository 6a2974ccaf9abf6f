"""Small WGS84 helpers: metres per degree, distances and metric offsets on the ground."""

from __future__ import annotations

import numpy as np
from pyproj import Geod

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
_GEOD = Geod(ellps="WGS84")


def metres_per_degree(lat):
    """Ground metres per degree of longitude and of latitude at `lat` (WGS84 radii of curvature)."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    w = 1.0 - WGS84_E2 * np.sin(phi) ** 2
    meridional = WGS84_A * (1.0 - WGS84_E2) / w**1.5
    normal = WGS84_A / np.sqrt(w)
    return np.radians(normal * np.cos(phi)), np.radians(meridional)


def distance_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Geodesic distance in metres between lon/lat points (arrays broadcast)."""
    lon1, lat1, lon2, lat2 = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
    )
    _, _, dist = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.asarray(dist)


def offset_lonlat(lon, lat, east_m, north_m):
    """Move lon/lat points by metric east/north offsets (local tangent plane; fine below ~50 km)."""
    m_lon, m_lat = metres_per_degree(lat)
    return np.asarray(lon) + np.asarray(east_m) / m_lon, np.asarray(lat) + np.asarray(
        north_m
    ) / m_lat
