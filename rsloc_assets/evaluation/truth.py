"""Where a query really is, read from its own georeference: only evaluation ever reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()


@dataclass(frozen=True)
class Truth:
    """Where a query really is: its corners (TL, TR, BR, BL) and centre in lon/lat."""

    corners_lonlat: list[tuple[float, float]]
    centre_lonlat: tuple[float, float]
    geotransform: tuple[float, ...]
    wkt: str

    def pixel_to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of query pixel coordinates (x right, y down) under the true georeference."""
        gt = self.geotransform
        ex = gt[0] + x * gt[1] + y * gt[2]
        ny = gt[3] + x * gt[4] + y * gt[5]
        return _to_lonlat(self.wkt, ex, ny)


def _to_lonlat(wkt: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = osr.SpatialReference(wkt=wkt)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    pts = osr.CoordinateTransformation(src, dst).TransformPoints(
        np.stack([np.ravel(x), np.ravel(y)], axis=1).astype(float).tolist()
    )
    arr = np.asarray(pts, dtype=np.float64).reshape(np.size(x), 3)
    return arr[:, 0].reshape(np.shape(x)), arr[:, 1].reshape(np.shape(x))


def read_truth(path: str | Path) -> Truth | None:
    """The true footprint from a query file's georeference; None when it has none."""
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        return None
    w, h = ds.RasterXSize, ds.RasterYSize
    truth = Truth([], (0.0, 0.0), tuple(gt), wkt)
    lon, lat = truth.pixel_to_lonlat(np.array([0, w, w, 0, w / 2]), np.array([0, 0, h, h, h / 2]))
    corners = [(float(lon[i]), float(lat[i])) for i in range(4)]
    return Truth(corners, (float(lon[4]), float(lat[4])), tuple(gt), wkt)
