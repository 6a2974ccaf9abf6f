"""Synthetic queries and the world GeoTIFF: real georeference, truth that matches the pixels,
poses that follow the seed, and clear errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from osgeo import gdal, osr

from rsloc_assets.geodesy import distance_m
from rsloc_assets.synthetic.landscape import WorldSpec
from rsloc_assets.synthetic.queries import QueryTruth, write_queries, write_world
from rsloc_assets.synthetic.seasons import render

gdal.UseExceptions()
SPEC = WorldSpec.small()


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def to_lonlat(wkt: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Projected points to lon/lat with GDAL's own transformation (traditional GIS order)."""
    src, dst = osr.SpatialReference(wkt=wkt), osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    pts = osr.CoordinateTransformation(src, dst).TransformPoints(np.c_[x, y].tolist())
    return np.asarray(pts)[:, :2]


def read_truths(out: Path) -> list[QueryTruth]:
    """The QueryTruth records of `out/truth.json`, paths resolved against `out`."""
    doc = json.loads((out / "truth.json").read_text())
    return [QueryTruth(**{**r, "path": out / r["path"]}) for r in doc["queries"]]


def apply_gt(gt: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return gt[0] + u * gt[1] + v * gt[2], gt[3] + u * gt[4] + v * gt[5]


def test_write_world_georeferences_the_centre(tmp_path: Path):
    path = write_world(SPEC, tmp_path / "world.tif")
    ds = gdal.Open(str(path))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (SPEC.width_px, SPEC.height_px, 3)
    assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    assert srs.GetAuthorityCode(None) == "32631"
    gt = ds.GetGeoTransform()
    x, y = apply_gt(gt, np.array([ds.RasterXSize / 2]), np.array([ds.RasterYSize / 2]))
    lon, lat = to_lonlat(ds.GetProjection(), x, y)[0]
    assert distance_m(lon, lat, SPEC.centre_lon, SPEC.centre_lat) < SPEC.gsd_m
    pixels = np.moveaxis(ds.ReadAsArray(), 0, -1)
    assert np.array_equal(pixels, render(SPEC, "summer"))


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("queries")
    truths = write_queries(SPEC, out, n=3, seed=11, size_m=(2400.0, 2000.0), cloud_cover=(0, 0))
    return out, truths


def test_truth_json_matches_each_query_file(queries: tuple[Path, list]):
    out, written = queries
    truths = read_truths(out)
    assert [t.name for t in truths] == ["q000", "q001", "q002"] == [t.name for t in written]
    for t in truths:
        ds = gdal.Open(str(t.path))
        assert (ds.RasterXSize, ds.RasterYSize) == (t.width_px, t.height_px)
        assert t.width_px == round(2400 / t.gsd_m) and 0.95 <= t.scale <= 1.05
        gt = ds.GetGeoTransform()
        if abs(t.rotation_deg) > 0.01:
            assert gt[2] != 0 and gt[4] != 0
        assert np.hypot(gt[1], gt[4]) == pytest.approx(t.gsd_m)
        u = np.array([0.0, t.width_px, t.width_px, 0.0, t.width_px / 2])
        v = np.array([0.0, 0.0, t.height_px, t.height_px, t.height_px / 2])
        lonlat = to_lonlat(ds.GetProjection(), *apply_gt(gt, u, v))
        np.testing.assert_allclose(lonlat[:4], np.array(t.corners_lonlat), atol=1e-7)
        np.testing.assert_allclose(lonlat[4], [t.centre_lon, t.centre_lat], atol=1e-7)


def test_query_pixels_match_the_world_at_the_truth(queries: tuple[Path, list]):
    _, truths = queries
    world = grey(render(SPEC, "autumn")).astype(np.float32)
    wgt = SPEC.geotransform
    for t in truths:
        ds = gdal.Open(str(t.path))
        q = grey(np.moveaxis(ds.ReadAsArray(), 0, -1))
        gt = ds.GetGeoTransform()
        vv, uu = np.mgrid[0:160, 0:160].astype(np.float64)
        uu += t.width_px // 2 - 80
        vv += t.height_px // 2 - 80
        patch = q[vv.astype(int), uu.astype(int)]
        east, north = apply_gt(gt, uu + 0.5, vv + 0.5)
        scores = []
        for offset_m in (0.0, 1000.0):
            mx = ((east + offset_m - wgt[0]) / wgt[1] - 0.5).astype(np.float32)
            my = ((north - wgt[3]) / wgt[5] - 0.5).astype(np.float32)
            sample = cv2.remap(world, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            scores.append(ncc(patch, sample))
        assert scores[0] > 0.6 and scores[1] < 0.4 and scores[0] - scores[1] > 0.4, scores


def test_query_poses_follow_the_seed(tmp_path: Path):
    kw = {"n": 2, "size_m": (1500.0, 1500.0)}
    a = write_queries(SPEC, tmp_path / "a", seed=3, **kw)
    b = write_queries(SPEC, tmp_path / "b", seed=3, **kw)
    c = write_queries(SPEC, tmp_path / "c", seed=4, **kw)
    assert [(t.centre_lon, t.centre_lat, t.rotation_deg) for t in a] == [
        (t.centre_lon, t.centre_lat, t.rotation_deg) for t in b
    ]
    assert a[0].path.read_bytes() == b[0].path.read_bytes()
    assert all(
        distance_m(x.centre_lon, x.centre_lat, y.centre_lon, y.centre_lat) > 50
        for x, y in zip(a, c, strict=True)
    )


def test_clouds_cover_about_the_requested_fraction(tmp_path: Path):
    kw = {"n": 1, "seed": 5, "size_m": (3000.0, 3000.0)}
    clear = write_queries(SPEC, tmp_path / "clear", cloud_cover=(0.0, 0.0), **kw)[0]
    cloudy = write_queries(SPEC, tmp_path / "cloudy", cloud_cover=(0.3, 0.3), **kw)[0]
    bright = [
        float(np.mean(grey(np.moveaxis(gdal.Open(str(t.path)).ReadAsArray(), 0, -1)) > 215))
        for t in (clear, cloudy)
    ]
    assert bright[0] < 0.05 and 0.15 < bright[1] - bright[0] < 0.4, bright


def test_bad_requests_fail_with_clear_errors(tmp_path: Path):
    with pytest.raises(
        ValueError, match=r"^unknown season 'winter': expected one of spring, summer, autumn$"
    ):
        render(SPEC, "winter")
    with pytest.raises(ValueError, match="do not fit"):
        write_queries(SPEC, tmp_path, n=1, seed=0, size_m=(8000.0, 8000.0))
    with pytest.raises(ValueError, match="at least 100 px"):
        WorldSpec(width_m=500.0, height_m=500.0, gsd_m=8.0)
