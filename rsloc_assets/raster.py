"""Raster helpers shared by the synthetic world and the benchmarks: GeoTIFF output, rotated crops
with their georeference, and zero-filled shifts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from osgeo import gdal, osr

from rsloc_assets.layout import write_atomic

gdal.UseExceptions()


def write_geotiff(
    path: Path,
    rgb: np.ndarray,
    geotransform: Sequence[float],
    crs: int | str,
    valid: np.ndarray | None = None,
) -> Path:
    """Write an RGB uint8 array as a tiled DEFLATE GeoTIFF (crs: EPSG code or WKT), atomically;
    with `valid`, an alpha band marks the pixels that hold data."""
    h, w = rgb.shape[:2]
    options = [
        "TILED=YES",
        "COMPRESS=DEFLATE",
        "PREDICTOR=2",
        "PHOTOMETRIC=RGB",
        "NUM_THREADS=ALL_CPUS",
    ]
    srs = osr.SpatialReference()
    if isinstance(crs, int):
        srs.ImportFromEPSG(crs)
    else:
        srs.ImportFromWkt(crs)

    def write(tmp: str) -> None:
        bands = 3 if valid is None else 4
        extra = [] if valid is None else ["ALPHA=YES"]
        driver = gdal.GetDriverByName("GTiff")
        ds = driver.Create(tmp, w, h, bands, gdal.GDT_Byte, options=options + extra)
        ds.SetGeoTransform([float(v) for v in geotransform])
        ds.SetProjection(srs.ExportToWkt())
        pixels = rgb if valid is None else np.dstack([rgb, np.where(valid, 255, 0)])
        ds.WriteArray(np.moveaxis(pixels.astype(np.uint8), -1, 0))
        ds.FlushCache()
        ds = None

    write_atomic(path, write)
    return path


def rotated_crop(
    image: np.ndarray,
    centre_px: tuple[float, float],
    size_px: tuple[int, int],
    rotation_deg: float,
    scale: float = 1.0,
    border: int = cv2.BORDER_CONSTANT,
) -> tuple[np.ndarray, np.ndarray]:
    """A (w, h) crop centred on a source pixel, rotated counter-clockwise and scaled, and the 2×3
    affine taking its pixel corners (u, v) to the source's (GDAL's corner convention)."""
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    a = scale * np.array([[c, s], [-s, c]])
    t = np.asarray(centre_px, dtype=np.float64) - a @ (np.asarray(size_px) / 2)
    warp = np.hstack([a, (t + a @ np.array([0.5, 0.5]) - 0.5)[:, None]])  # pixel centres
    crop = cv2.warpAffine(
        image, warp, size_px, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border
    )
    return crop, np.hstack([a, t[:, None]])


def crop_geotransform(gt: Sequence[float], pose: np.ndarray) -> tuple[float, ...]:
    """Geotransform of a crop whose pixel corners map to the source's by the 2×3 `pose`."""
    src = np.array([[gt[1], gt[2]], [gt[4], gt[5]]])
    lin = src @ pose[:, :2]
    origin = np.array([gt[0], gt[3]]) + src @ pose[:, 2]
    return tuple(float(v) for v in (origin[0], *lin[0], origin[1], *lin[1]))


def shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`a` moved by (dx, dy) pixels, zero-filled."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out
