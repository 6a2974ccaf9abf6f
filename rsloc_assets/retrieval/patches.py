"""Query images: read pixels and ground resolution, and cut them into gallery-mosaic-sized patches.

The pipeline never reads where a query is: only its pixel size. Georeference is evaluation's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
from osgeo import gdal, osr

from rsloc_assets.geodesy import metres_per_degree
from rsloc_assets.records import PATCH_SCHEMA, GalleryInfo
from rsloc_assets.retrieval.encoders import resize_square

gdal.UseExceptions()
log = logging.getLogger(__name__)

MIN_VALID_FRACTION = 0.5
# Ground resolutions a query may have, m/px: from drone imagery to coarser than any gallery level
# rsloc can cut a patch for (a z10 tile is ≈ 150 m/px); outside it is surely a wrong sidecar or
# georeference, and is refused before any pixel is read.
GSD_RANGE_M = (0.01, 1000.0)
# Smallest patch side worth embedding (the encoder sees 260 px), and most patches one query may
# be cut into: a 20,000² px query at its level's resolution is ≈ 6,100 patches.
MIN_PATCH_PX, MAX_PATCHES = 16, 20_000
# Valid pixels varying less than this (grey levels, standard deviation) hold nothing to find: an
# all-black or flat image; a JPEG of one colour varies by < 1.
MIN_CONTENT_STD = 2.0
# Queries are held as RGB uint8 plus a validity mask, 4 bytes a pixel: up to 20,000² px (1.6 GB);
# larger ones are refused before any pixel is read. They are read this many rows at a time, and
# non-byte imagery's stretch is taken from a read at most this many pixels a side.
MAX_QUERY_PX, READ_ROWS, STRETCH_SAMPLE_PX = 20_000 * 20_000, 512, 2048
# A query smaller than a patch is one patch padded to a mosaic's ground; below one gallery tile
# of ground (1/9 of a mosaic) the padding would be most of what the encoder sees.
MIN_COVER = 1 / 9


@dataclass
class QueryImage:
    """A query's RGB pixels, which of them hold data, and its ground metres per pixel (x, y)."""

    name: str
    path: Path
    rgb: np.ndarray
    valid: np.ndarray
    gsd_m: tuple[float, float]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


@dataclass(frozen=True)
class PatchPlan:
    """Patch size and stride in query pixels for one query."""

    width: int
    height: int
    stride_x: int
    stride_y: int


def sidecar_gsd(path: Path) -> float | None:
    """Ground resolution in m/px from `<image>.json` (`{"gsd_m": 0.5}`), when the sidecar exists;
    a one-line error naming the sidecar for anything else in it."""
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f'{sidecar}: not JSON ({err}); write {{"gsd_m": <m/px>}}') from None
    gsd = record.get("gsd_m") if isinstance(record, dict) else None
    if isinstance(gsd, bool) or not isinstance(gsd, int | float):
        raise ValueError(f'{sidecar}: needs {{"gsd_m": <metres per pixel>}}, got {record!r:.80}')
    return check_gsd(float(gsd) if abs(gsd) < 1e300 else math.inf, f"{sidecar} (gsd_m)")


def check_gsd(gsd_m: float, source: str) -> float:
    """`gsd_m` when it is a ground resolution rsloc can work at (`GSD_RANGE_M`), else a one-line
    error naming where it came from."""
    low, high = GSD_RANGE_M
    if not (math.isfinite(gsd_m) and low <= gsd_m <= high):
        raise ValueError(
            f"{source}: ground resolution {gsd_m:g} m/px is outside {low:g}–{high:g} m/px"
        )
    return gsd_m


def raster_gsd(ds: gdal.Dataset, ref_lat: float) -> tuple[float, float] | None:
    """Ground m/px of a georeferenced raster from its pixel size alone (None without a CRS).

    Mercator and geographic pixel sizes are scaled at `ref_lat`, the gallery's latitude: the
    query's own position is never used.
    """
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        return None
    sx, sy = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    srs = osr.SpatialReference(wkt=wkt)
    if srs.IsGeographic():
        m_lon, m_lat = metres_per_degree(ref_lat)
        return float(sx * m_lon), float(sy * m_lat)
    projection = (srs.GetAttrValue("PROJECTION") or "").lower()
    scale = srs.GetLinearUnits()
    if projection.startswith("mercator") or "pseudo_mercator" in projection:
        scale *= math.cos(math.radians(ref_lat))  # Mercator's nominal metres shrink with latitude
    return sx * scale, sy * scale


def read_query(path: str | Path, ref_lat: float) -> QueryImage:
    """Read a query image (GeoTIFF, or JPEG/PNG with a gsd sidecar) as RGB with a validity mask."""
    path = Path(path)
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    gsd = sidecar_gsd(path)
    if gsd is not None:
        gsd_xy = (gsd, gsd)
    else:
        pixel = raster_gsd(ds, ref_lat)
        if pixel is None:
            raise ValueError(
                f"{path}: no georeference to give its ground resolution; add {path.stem}.json "
                'with {"gsd_m": <metres per pixel>}'
            )
        gsd_xy = tuple(check_gsd(g, f"{path} (its georeference)") for g in pixel)
    if ds.RasterXSize * ds.RasterYSize > MAX_QUERY_PX:
        raise ValueError(
            f"{path}: {ds.RasterXSize}×{ds.RasterYSize} px is more than a query may hold "
            f"({MAX_QUERY_PX / 1e6:.0f} Mpx): split it into tiles and localize each"
        )
    try:
        rgb, valid = _read_rgb(ds)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        why = f"cannot read its pixels ({first}); is the file complete?"
        raise ValueError(f"{path}: {why}") from None
    return QueryImage(path.stem, path, rgb, valid, gsd_xy)


def thumbnail(path: Path, size: int) -> np.ndarray:
    """The image as RGB uint8 at most `size` px a side, read decimated by GDAL (any image size)."""
    ds = gdal.Open(str(path))
    colour, alpha = _bands(ds)
    shape = _decimated(ds, size)
    data = np.stack([b.ReadAsArray(**shape) for b in colour], axis=-1).astype(np.float32)
    if colour[0].DataType != gdal.GDT_Byte:
        lo, hi = _stretch_range(ds, colour, alpha)
        data = (data - lo) * (255.0 / max(hi - lo, 1e-9))
    return np.clip(data, 0, 255).astype(np.uint8)


def _bands(ds: gdal.Dataset) -> tuple[list[gdal.Band], list[gdal.Band]]:
    """The three bands read as RGB (a grey image's one band thrice) and the alpha bands."""
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    alpha = [b for b in bands if b.GetColorInterpretation() == gdal.GCI_AlphaBand]
    colour = [b for b in bands if b not in alpha][:3]
    if not colour:
        raise ValueError(f"{ds.GetDescription()}: no colour band")
    while len(colour) < 3:
        colour.append(colour[0])
    return colour, alpha


def _decimated(ds: gdal.Dataset, size: int) -> dict[str, int]:
    """`ReadAsArray` buffer sizes that read the whole image at most `size` px a side."""
    scale = max(1.0, max(ds.RasterXSize, ds.RasterYSize) / size)
    return {
        "buf_xsize": max(1, round(ds.RasterXSize / scale)),
        "buf_ysize": max(1, round(ds.RasterYSize / scale)),
    }


def _read_rgb(ds: gdal.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The image as RGB uint8 and its validity, read `READ_ROWS` rows at a time in the bands'
    own type, so that reading needs little beyond the 4 bytes per pixel of what it returns."""
    colour, alpha = _bands(ds)
    width, height = ds.RasterXSize, ds.RasterYSize
    stretch = None if colour[0].DataType == gdal.GDT_Byte else _stretch_range(ds, colour, alpha)
    rgb = np.zeros((height, width, 3), np.uint8)
    valid = np.ones((height, width), bool)
    for y0 in range(0, height, READ_ROWS):
        rows = min(READ_ROWS, height - y0)
        block = [b.ReadAsArray(0, y0, width, rows) for b in colour]
        opacity = alpha[0].ReadAsArray(0, y0, width, rows) if alpha else None
        for band in {*colour, *alpha}:
            band.FlushCache()  # drop GDAL's cached blocks: they would double what is held
        ok = _block_valid(block, colour, opacity)
        valid[y0 : y0 + rows] = ok
        for i, data in enumerate(block):
            if stretch is not None:
                lo, hi = stretch
                data = (data.astype(np.float32) - lo) * np.float32(255.0 / max(hi - lo, 1e-9))
            channel = np.clip(data, 0, 255)
            channel[~ok] = 0
            rgb[y0 : y0 + rows, :, i] = channel
    return rgb, valid


def _block_valid(
    block: list[np.ndarray], colour: list[gdal.Band], alpha: np.ndarray | None
) -> np.ndarray:
    """Pixels of a block of rows that are finite, not any band's nodata, and not transparent."""
    ok = np.ones(block[0].shape, bool)
    for data, band in zip(block, colour, strict=True):
        if np.issubdtype(data.dtype, np.floating):
            ok &= np.isfinite(data)
        nodata = band.GetNoDataValue()
        if nodata is not None:
            ok &= data != nodata
    if alpha is not None:
        ok &= alpha > 0
    return ok


def _stretch_range(
    ds: gdal.Dataset, colour: list[gdal.Band], alpha: list[gdal.Band]
) -> tuple[float, float]:
    """The 2–98 % range of non-byte imagery's valid values, from a read of at most
    `STRETCH_SAMPLE_PX` per side (GDAL decimates), to stretch it linearly to 0–255."""
    size = _decimated(ds, STRETCH_SAMPLE_PX)
    sample = [b.ReadAsArray(**size) for b in colour]
    ok = _block_valid(sample, colour, alpha[0].ReadAsArray(**size) if alpha else None)
    if not ok.any():
        return 0.0, 1.0
    lo, hi = np.percentile(np.stack(sample, axis=-1)[ok], [2, 98])
    return float(lo), float(hi)


def nearest_level(levels: Sequence[GalleryInfo], gsd_m: tuple[float, float]) -> GalleryInfo:
    """The gallery level whose pixels are nearest the query's ground resolution (by ratio; ties
    to the finer), the level a query works at."""
    if not levels:
        raise ValueError("the gallery has no working level")
    gsd = math.sqrt(gsd_m[0] * gsd_m[1])
    return min(levels, key=lambda info: (abs(math.log(info.pixel_m / gsd)), -info.zoom))


def plan_patches(
    tile_ground_m: tuple[float, float],
    gsd_m: tuple[float, float],
    cut_th: float = 1.0,
    stride_tiles: float = 1.0,
) -> PatchPlan:
    """Patch = ground footprint of one 3×3 gallery mosaic × `cut_th`, in query pixels.

    The stride is `stride_tiles` gallery tiles on the ground (one tile: patches overlap by 2/3).
    """
    (tw, th), (gx, gy) = tile_ground_m, gsd_m
    width, height = round(3 * tw * cut_th / gx), round(3 * th * cut_th / gy)
    if min(width, height) < MIN_PATCH_PX:
        raise ValueError(
            f"a patch would be {width}×{height} px at {gx:g} m/px: the query is too coarse for "
            "this gallery level (set `zoom` to a coarser one, or check its ground resolution)"
        )
    return PatchPlan(
        width, height, max(1, round(stride_tiles * tw / gx)), max(1, round(stride_tiles * th / gy))
    )


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Window origins on a regular grid; the last window ends flush with the image edge. An image
    narrower than a patch has one window, centred on it (starting before the image)."""
    last = size - patch
    if last < 0:
        return [last // 2]
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def has_content(query: QueryImage) -> bool:
    """Whether the query's valid pixels vary (`MIN_CONTENT_STD`), judged on about a million."""
    step = max(1, math.isqrt(query.width * query.height // 1_000_000))
    rgb, valid = query.rgb[::step, ::step], query.valid[::step, ::step]
    return bool(valid.any()) and float(rgb[valid].std()) >= MIN_CONTENT_STD


def coverable_share(width: int, height: int, plan: PatchPlan) -> float:
    """The share of a patch window an image of `width`×`height` px can fill: 1 unless the image
    is smaller than a patch along an axis."""
    return min(width, plan.width) * min(height, plan.height) / (plan.width * plan.height)


def min_valid_share(width: int, height: int, plan: PatchPlan) -> float:
    """The valid share a patch (or a view of it) needs to be kept: `MIN_VALID_FRACTION` of what
    the image can fill, so that a query smaller than a patch keeps its one whole-image patch."""
    return MIN_VALID_FRACTION * coverable_share(width, height, plan)


def cut_patches(query: QueryImage, plan: PatchPlan) -> pa.Table:
    """Regular grid of patches over the whole query, nodata-dominated ones dropped: one row per
    kept patch (window, centre in pixels, centre offset from the image centre in ground metres
    along the image's x and up axes; `heading_views` gives the pixels). Along an axis where the
    query is smaller than a patch, its one window is centred on the image (as AnyLoc and EarthLoc
    localize single images); a query covering less than `MIN_COVER` of a patch is an error."""
    if not has_content(query):
        raise ValueError(
            f"query {query.name} has no content: no valid pixels, or all of nearly one value"
        )
    cover = coverable_share(query.width, query.height, plan)
    if cover < MIN_COVER:
        raise ValueError(
            f"query {query.name} is {query.width}×{query.height} px, less than one gallery tile "
            f"of ground (a patch is {plan.width}×{plan.height} px)"
        )
    needed = min_valid_share(query.width, query.height, plan)
    ys = _starts(query.height, plan.height, plan.stride_y)
    xs = _starts(query.width, plan.width, plan.stride_x)
    if len(xs) * len(ys) > MAX_PATCHES:
        raise ValueError(
            f"query {query.name} would be cut into {len(xs) * len(ys)} patches (at most "
            f"{MAX_PATCHES}): split the image, or work at a coarser gallery level (`zoom`)"
        )
    rows = []
    for y0 in ys:
        for x0 in xs:
            valid = float(window_of(query.valid, x0, y0, plan.width, plan.height).mean())
            if valid < needed:
                continue
            cx, cy = x0 + plan.width / 2, y0 + plan.height / 2
            rows.append(
                {
                    "patch": len(rows),
                    "x0": x0,
                    "y0": y0,
                    "width": plan.width,
                    "height": plan.height,
                    "cx": cx,
                    "cy": cy,
                    "east_m": (cx - query.width / 2) * query.gsd_m[0],
                    "north_m": (query.height / 2 - cy) * query.gsd_m[1],
                    "valid_fraction": valid,
                }
            )
    log.info("query %s: %d patches of %d×%d px", query.name, len(rows), plan.width, plan.height)
    return pa.Table.from_pylist(rows, schema=PATCH_SCHEMA)


def headings_deg(count: int) -> tuple[float, ...]:
    """`count` headings evenly spaced from 0°: 4 gives 0/90/180/270°, 8 adds the diagonals."""
    if count < 1:
        raise ValueError(f"need at least one heading, got {count}")
    return tuple(360.0 * i / count for i in range(count))


def heading_views(
    query: QueryImage,
    patches: pa.Table,
    plan: PatchPlan,
    heading_deg: float,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every patch as the gallery would show it if the query were turned `heading_deg`
    counter-clockwise from north-up (its x axis that far from east): the ground of one mosaic
    around the patch centre, north-up, stacked for the encoder, and each view's valid share.
    With `size`, each view is resized to size × size as the encoder would (`resize_square`), so
    a heading's views are stacked small: 40 full-resolution views of a 2,560² RSLoc query are
    ≈ 100 MB, and stacking them took 3 of `query_patches`' 21 s (bench-query's profile).

    Pixels beyond the query are black and invalid: the view is cut from the whole image, so
    corners come from neighbouring image where there is some. A multiple of 90° is an exact
    `np.rot90` of a window with the mosaic's ground size turned (the patch itself at 0° and
    180°); other headings resample bilinearly. A query smaller than a patch is seen without the
    padding: its views are cropped to where any of them holds image, and the encoder stretches
    them to a mosaic. On the small demo world (64 tiles), crops of 1.9 × 1.7 km of its 4 queries
    put the true tile at ranks 0, 2, 0, 6 stretched against 33, 44, 42, 46 padded.
    """
    centres = zip(patches["cx"].to_pylist(), patches["cy"].to_pylist(), strict=True)
    cut = [_heading_view(query, plan, cx, cy, heading_deg) for cx, cy in centres]
    if not cut:
        return np.zeros((0, plan.height, plan.width, 3), np.uint8), np.zeros(0, np.float32)
    shares = np.array([mask.mean() for _, mask in cut], np.float32)
    rows, cols = slice(None), slice(None)
    if coverable_share(query.width, query.height, plan) < 1.0 and shares.any():
        held = np.logical_or.reduce([mask for _, mask in cut])
        r, c = np.flatnonzero(held.any(axis=1)), np.flatnonzero(held.any(axis=0))
        rows, cols = slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)
    views = [np.ascontiguousarray(rgb[rows, cols]) for rgb, _ in cut]
    if size is not None:
        views = [resize_square(view, size) for view in views]
    return np.stack(views), shares


def _heading_view(
    query: QueryImage, plan: PatchPlan, cx: float, cy: float, heading_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """One patch's view at one heading and where it holds image (see `heading_views`)."""
    (gx, gy), (w, h) = query.gsd_m, (plan.width, plan.height)
    quarters = heading_deg / 90.0
    if quarters == round(quarters):
        k = round(quarters) % 4
        if k % 2:  # the window's x axis runs north-south on the ground
            w, h = round(plan.height * gy / gx), round(plan.width * gx / gy)
        x0, y0 = round(cx - w / 2), round(cy - h / 2)
        rgb = np.rot90(window_of(query.rgb, x0, y0, w, h), k)
        valid = np.rot90(window_of(query.valid, x0, y0, w, h), k)
        return np.ascontiguousarray(rgb), valid
    # View pixel (u, v) (corner convention) is ground ((u − w/2)·gx, (h/2 − v)·gy) east/north of
    # the centre; turned by −heading into the image's axes, then to query pixels.
    c, s = math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))
    a = np.array([[c, -s * gy / gx], [s * gx / gy, c]])
    origin = np.array([cx, cy]) - a @ (w / 2, h / 2)
    warp = np.hstack([a, (origin + a @ (0.5, 0.5) - 0.5)[:, None]])  # pixel-centre indices
    inverse = cv2.WARP_INVERSE_MAP
    rgb = cv2.warpAffine(query.rgb, warp, (w, h), flags=cv2.INTER_LINEAR | inverse)
    mask = query.valid.view(np.uint8)
    valid = cv2.warpAffine(mask, warp, (w, h), flags=cv2.INTER_NEAREST | inverse)
    return rgb, valid.astype(bool)


def window_of(a: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """`a[y0 : y0 + h, x0 : x0 + w]`, zero (black, invalid) where the window leaves `a`."""
    out = np.zeros((h, w, *a.shape[2:]), a.dtype)
    ys, ye = max(y0, 0), min(y0 + h, a.shape[0])
    xs, xe = max(x0, 0), min(x0 + w, a.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = a[ys:ye, xs:xe]
    return out
