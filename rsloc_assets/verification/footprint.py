"""A query's ground footprint, fitted robustly to the points its verified patches place.

Each accepted patch maps query pixels (corner convention: the image spans [0, W] × [0, H]) to
mosaic pixels, and so to lon/lat; one similarity (or affine) map from query pixels to the ground
must agree with all of them. Patches that disagree are wrong candidates and are left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
from pyproj import Transformer

from rsloc_assets.grids import TileGrid, TileKey, mercator_to_lonlat

log = logging.getLogger(__name__)


class FootprintModel(StrEnum):
    """The query-pixel → ground map: a similarity for ortho images, an affine map for uncertain
    pixel aspect or skew."""

    SIMILARITY = "similarity"
    AFFINE = "affine"


_MAX_REFITS = 10
_MIN_SPREAD_PX2 = 1.0  # below this mean squared spread a patch's points propose no model


def mosaic_to_lonlat(
    grid: TileGrid, centre: TileKey, xy: np.ndarray, size: int = 768
) -> np.ndarray:
    """Lon/lat (M×2) of pixels `xy` (M×2, corner convention) of the size × size mosaic of the
    3×3 tiles around `centre`: linear in the grid's native CRS, then to degrees."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    top_left = grid.native_bounds(TileKey(centre.z, centre.col - 1, centre.row - 1))
    bottom_right = grid.native_bounds(TileKey(centre.z, centre.col + 1, centre.row + 1))
    x = top_left.west + xy[:, 0] / size * (bottom_right.east - top_left.west)
    y = top_left.north - xy[:, 1] / size * (top_left.north - bottom_right.south)
    if grid.crs == "EPSG:4326":
        return np.column_stack([x, y])
    if grid.crs == "EPSG:3857":
        return np.column_stack(mercator_to_lonlat(x, y))
    raise ValueError(f"mosaic_to_lonlat: unsupported grid CRS {grid.crs!r}")


@dataclass
class PatchGeoPoints:
    """Ground control from one verified patch: query pixels and where they lie (lon/lat)."""

    patch: int
    query_xy: np.ndarray  # float64 (M, 2): query image px, corner convention
    lonlat: np.ndarray  # float64 (M, 2)


@dataclass
class Footprint:
    """Where a query lies: its corners and centre on the ground, pose, and how well patches agree.

    `rotation_deg` is the counter-clockwise angle from east to the image's x axis (as
    `synthetic.queries.QueryTruth`); corners are TL, TR, BR, BL, i.e. pixels (0,0), (W,0), (W,H),
    (0,H).
    """

    corners_lonlat: list[tuple[float, float]]
    centre_lon: float
    centre_lat: float
    scale_m_per_px: float
    rotation_deg: float
    patches_agreeing: int
    patches_used: int
    error_m: float  # RMS ground residual of the inlier points
    inliers: int  # points within max_residual_m in agreeing patches
    agreeing: list[int] = field(default_factory=list)  # ids of the agreeing patches
    model: FootprintModel = FootprintModel.SIMILARITY

    def summary(self) -> dict:
        """The footprint as plain JSON-ready values."""
        return {**asdict(self), "corners_lonlat": [list(c) for c in self.corners_lonlat]}


def fit_footprint(
    points: list[PatchGeoPoints],
    width: int,
    height: int,
    max_residual_m: float = 50.0,
    min_patches: int = 2,
    model: FootprintModel | str = FootprintModel.SIMILARITY,
) -> Footprint | None:
    """Fit one query-pixel → ground map to the patches' points, keeping the patches it agrees
    with (median point residual ≤ `max_residual_m`); None when fewer than `min_patches` agree.

    Every usable patch proposes the map fitted to its own points; the proposal most patches
    agree with is refitted on those patches' inlier points until the agreeing set is stable.
    `model` "similarity" (default: ortho images) or "affine" (uncertain pixel aspect or skew).
    """
    if model not in set(FootprintModel):
        raise ValueError(f"model must be one of {', '.join(FootprintModel)}, got {model!r}")
    model = FootprintModel(model)
    if width <= 0 or height <= 0 or max_residual_m <= 0 or min_patches < 1:
        raise ValueError("fit_footprint needs width, height, max_residual_m > 0, min_patches ≥ 1")
    usable = [p for p in (_clean(p) for p in points) if p is not None]
    if not usable:
        return None
    all_lonlat = np.concatenate([p.lonlat for p in usable])
    lon0, lat0 = (float(v) for v in np.median(all_lonlat, axis=0))
    to_ground, to_lonlat = _local_frame(lon0, lat0)
    xy = [p.query_xy for p in usable]
    en = [np.column_stack(to_ground.transform(*p.lonlat.T)) for p in usable]
    fit = _fit_similarity if model == FootprintModel.SIMILARITY else _fit_affine

    best = None
    for k in range(len(usable)):
        proposal = fit(xy[k], en[k])
        if proposal is None:
            continue
        agree, score = _agreement(proposal, xy, en, max_residual_m)
        if best is None or score > best[2]:
            best = (proposal, agree, score)
    if best is None:
        return None
    transform, agree, _ = best
    for _ in range(_MAX_REFITS):
        if len(agree) < min_patches:
            break
        refit = fit(*_inlier_points(agree, transform, xy, en, max_residual_m))
        if refit is None:
            break
        transform = refit
        new_agree, _ = _agreement(transform, xy, en, max_residual_m)
        if new_agree == agree:
            break
        agree = new_agree
    if len(agree) < min_patches:
        log.info("footprint: %d of %d patches agree, need %d", len(agree), len(usable), min_patches)
        return None
    src, dst = _inlier_points(agree, transform, xy, en, max_residual_m)
    residual = np.hypot(*(_apply(transform, src) - dst).T)

    a = transform[:, :2]
    pixels = np.array([[0, 0], [width, 0], [width, height], [0, height], [width / 2, height / 2]])
    lon, lat = to_lonlat.transform(*_apply(transform, pixels.astype(np.float64)).T)
    return Footprint(
        corners_lonlat=[(float(x), float(y)) for x, y in zip(lon[:4], lat[:4], strict=True)],
        centre_lon=float(lon[4]),
        centre_lat=float(lat[4]),
        scale_m_per_px=float(math.sqrt(abs(np.linalg.det(a)))),
        rotation_deg=float(math.degrees(math.atan2(a[1, 0], a[0, 0]))),
        patches_agreeing=len(agree),
        patches_used=len(usable),
        error_m=float(np.sqrt(np.mean(residual**2))),
        inliers=len(src),
        agreeing=[usable[k].patch for k in agree],
        model=model,
    )


def closed_ring(corners_lonlat: Sequence[tuple[float, float]]) -> list[list[float]]:
    """A polygon's corners as a GeoJSON exterior ring: counter-clockwise (RFC 7946), closed."""
    ring = [[float(lon), float(lat)] for lon, lat in corners_lonlat]
    x, y = np.array(ring).T
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # shoelace: clockwise
        ring.reverse()
    return [*ring, ring[0]]


def footprint_geojson(query: str, fp: Footprint, properties: dict | None = None) -> dict:
    """RFC 7946 FeatureCollection: the footprint polygon (closed, counter-clockwise) and its
    centre point, both carrying the query name, the fit's figures and `properties`."""
    ring = closed_ring(fp.corners_lonlat)
    props = {
        **{k: _plain(v) for k, v in (properties or {}).items()},
        "query": query,
        "scale_m_per_px": fp.scale_m_per_px,
        "rotation_deg": fp.rotation_deg,
        "patches_agreeing": fp.patches_agreeing,
        "patches_used": fp.patches_used,
        "agreeing_patches": list(fp.agreeing),
        "error_m": fp.error_m,
        "inliers": fp.inliers,
        "model": fp.model,
    }
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {**props, "feature": "footprint"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [fp.centre_lon, fp.centre_lat]},
                "properties": {**props, "feature": "centre"},
            },
        ],
    }


def _plain(value: object) -> object:
    """numpy scalars and arrays as plain Python values, for JSON."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value


def _clean(p: PatchGeoPoints) -> PatchGeoPoints | None:
    """The patch with its finite points only, or None when fewer than 3 remain."""
    xy = np.asarray(p.query_xy, dtype=np.float64).reshape(-1, 2)
    ll = np.asarray(p.lonlat, dtype=np.float64).reshape(-1, 2)
    if len(xy) != len(ll):
        raise ValueError(f"patch {p.patch}: {len(xy)} query points but {len(ll)} lon/lat points")
    ok = np.isfinite(xy).all(axis=1) & np.isfinite(ll).all(axis=1)
    if not ok.all():
        log.warning("patch %d: dropped %d non-finite points", p.patch, int((~ok).sum()))
    if ok.sum() < 3:
        return None
    return PatchGeoPoints(p.patch, xy[ok], ll[ok])


def _local_frame(lon0: float, lat0: float) -> tuple[Transformer, Transformer]:
    """Lon/lat ↔ metres east/north in a transverse Mercator centred on (lon0, lat0): conformal,
    with scale error below 10⁻⁶ within 10 km."""
    tm = f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
    return (
        Transformer.from_crs("EPSG:4326", tm, always_xy=True),
        Transformer.from_crs(tm, "EPSG:4326", always_xy=True),
    )


def _fit_similarity(xy: np.ndarray, en: np.ndarray) -> np.ndarray | None:
    """Least-squares 2×3 map (x, y) → (E, N) = s·R(θ)·(x, −y) + t, the image y axis pointing
    down; None when the points do not spread."""
    z = xy[:, 0] - 1j * xy[:, 1]
    w = en[:, 0] + 1j * en[:, 1]
    zc, wc = z - z.mean(), w - w.mean()
    spread = float(np.sum(np.abs(zc) ** 2))
    if spread < _MIN_SPREAD_PX2 * len(z):
        return None
    c = np.sum(np.conj(zc) * wc) / spread
    t = w.mean() - c * z.mean()
    return np.array([[c.real, c.imag, t.real], [c.imag, -c.real, t.imag]])


def _fit_affine(xy: np.ndarray, en: np.ndarray) -> np.ndarray | None:
    """Least-squares 2×3 affine map (x, y) → (E, N); None when the points are near-collinear."""
    design = np.column_stack([xy, np.ones(len(xy))])
    if len(xy) < 3 or np.linalg.cond(design - [*xy.mean(axis=0), 0]) > 1e8:
        return None
    coef, *_ = np.linalg.lstsq(design, en, rcond=None)
    return coef.T


def _apply(transform: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ transform[:, :2].T + transform[:, 2]


def _agreement(
    transform: np.ndarray, xy: list[np.ndarray], en: list[np.ndarray], max_residual_m: float
) -> tuple[list[int], tuple[int, int]]:
    """Patches whose median residual under `transform` is within bounds, and the score
    (agreeing patches, their inlier points) that ranks proposals."""
    agree, points = [], 0
    for k, (pxy, pen) in enumerate(zip(xy, en, strict=True)):
        residual = np.hypot(*(_apply(transform, pxy) - pen).T)
        if np.median(residual) <= max_residual_m:
            agree.append(k)
            points += int((residual <= max_residual_m).sum())
    return agree, (len(agree), points)


def _inlier_points(
    agree: list[int],
    transform: np.ndarray,
    xy: list[np.ndarray],
    en: list[np.ndarray],
    max_residual_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The agreeing patches' points within `max_residual_m` of `transform`."""
    src = np.concatenate([xy[k] for k in agree])
    dst = np.concatenate([en[k] for k in agree])
    keep = np.hypot(*(_apply(transform, src) - dst).T) <= max_residual_m
    return src[keep], dst[keep]
