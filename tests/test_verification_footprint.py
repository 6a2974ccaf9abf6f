"""Footprint fitting, mosaic georeference and GeoJSON output, checked against independent maths:
ground points are placed with pyproj's geodesic (Geod.fwd), GeoJSON is read back with GDAL/OGR."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from pyproj import Geod

from rsloc_assets.geodesy import distance_m
from rsloc_assets.grids import TileGrid, TileKey, get_grid
from rsloc_assets.verification.footprint import (
    Footprint,
    PatchGeoPoints,
    fit_footprint,
    footprint_geojson,
    mosaic_to_lonlat,
)

ogr.UseExceptions()
GEOD = Geod(ellps="WGS84")
CENTRE = (2.35, 47.9)
ROTATION_DEG, GSD_M = 7.0, 4.5
WIDTH, HEIGHT = 1800, 1500


def centre(grid: TileGrid, tile: TileKey) -> tuple[float, float]:
    lon, lat = grid.centres(tile.z, np.array([tile.col]), np.array([tile.row]))
    return float(lon[0]), float(lat[0])


def ground(xy: np.ndarray, shift_east_m: float = 0.0) -> np.ndarray:
    """Lon/lat of query pixels under the true pose, by geodesics from the true centre."""
    dx, dy = xy[:, 0] - WIDTH / 2, xy[:, 1] - HEIGHT / 2
    c, s = math.cos(math.radians(ROTATION_DEG)), math.sin(math.radians(ROTATION_DEG))
    east = GSD_M * (c * dx + s * dy) + shift_east_m  # image y points down
    north = GSD_M * (s * dx - c * dy)
    azimuth = np.degrees(np.arctan2(east, north))
    n = len(xy)
    lon, lat, _ = GEOD.fwd(
        np.full(n, CENTRE[0]), np.full(n, CENTRE[1]), azimuth, np.hypot(east, north)
    )
    return np.column_stack([lon, lat])


def patches(n_true: int, n_shifted: int, noise_m: float = 2.0) -> list[PatchGeoPoints]:
    """`n_true` patches on a grid over the image plus `n_shifted` placed 2 km east of the truth."""
    rng = np.random.default_rng(11)
    out = []
    cells = [(i, j) for j in range(3) for i in range(5)]
    for k in range(n_true + n_shifted):
        i, j = cells[k % len(cells)]
        x0, y0 = i * (WIDTH - 600) / 4, j * (HEIGHT - 600) / 2
        xy = rng.uniform(0, 600, (25, 2)) + np.array([x0, y0])
        lonlat = ground(xy, 2000.0 if k >= n_true else 0.0)
        m_lon = 111_320 * math.cos(math.radians(CENTRE[1]))
        lonlat += rng.normal(0, noise_m, lonlat.shape) / [m_lon, 111_200]
        out.append(PatchGeoPoints(patch=100 + k, query_xy=xy, lonlat=lonlat))
    return out


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_fit_recovers_pose_and_drops_outlier_patches(model):
    points = patches(12, 3)
    fp = fit_footprint(points, WIDTH, HEIGHT, model=model)
    assert fp is not None and fp.model == model
    assert distance_m(fp.centre_lon, fp.centre_lat, *CENTRE) < 5.0
    assert abs(fp.rotation_deg - ROTATION_DEG) < 0.2
    assert abs(fp.scale_m_per_px / GSD_M - 1) < 0.005
    assert (fp.patches_agreeing, fp.patches_used) == (12, 15)
    assert fp.agreeing == [100 + k for k in range(12)]
    assert fp.inliers == 12 * 25 and fp.error_m < 5.0
    truth = ground(np.array([[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]], np.float64))
    assert distance_m(*np.array(fp.corners_lonlat).T, *truth.T).max() < 5.0


def test_too_few_agreeing_patches_give_none():
    one_true_two_wrong = patches(1, 2)
    one_true_two_wrong[2].lonlat[:, 1] += 0.05  # 5.5 km north
    assert fit_footprint(one_true_two_wrong, WIDTH, HEIGHT) is None
    assert fit_footprint([], WIDTH, HEIGHT) is None
    rng = np.random.default_rng(5)  # one patch of scattered points agrees not even with itself
    scattered = PatchGeoPoints(
        0, rng.uniform(0, 600, (20, 2)), CENTRE + rng.normal(0, 0.02, (20, 2))
    )
    assert fit_footprint([scattered], WIDTH, HEIGHT, min_patches=1) is None
    assert fit_footprint(patches(2, 0), WIDTH, HEIGHT).patches_agreeing == 2


def test_non_finite_points_are_dropped():
    points = patches(4, 0)
    points[0].lonlat[:5] = np.nan
    points[1].query_xy = points[1].query_xy[:2]  # too few points left to use
    points[1].lonlat = points[1].lonlat[:2]
    fp = fit_footprint(points, WIDTH, HEIGHT)
    assert fp is not None and fp.patches_used == 3 and fp.inliers == 25 * 3 - 5


def test_mosaic_pixels_on_the_geographic_grid():
    grid, tile = get_grid("ge"), TileKey(15, 16158, 12025)
    got = mosaic_to_lonlat(grid, tile, np.array([[384, 384], [0, 0], [768, 768]]))
    np.testing.assert_allclose(got[0], centre(grid, tile), atol=1e-12)
    top_left = grid.native_bounds(TileKey(15, 16157, 12024))
    bottom_right = grid.native_bounds(TileKey(15, 16159, 12026))
    np.testing.assert_allclose(got[1], (top_left.west, top_left.north), atol=1e-12)
    np.testing.assert_allclose(got[2], (bottom_right.east, bottom_right.south), atol=1e-12)
    np.testing.assert_allclose(got[1], (-2.48291 - 360 / 2**15, 47.88940 + 360 / 2**15), atol=1e-5)


def test_mosaic_pixels_on_the_web_mercator_grid():
    grid, tile = get_grid("xyz"), TileKey(15, 16598, 11702)
    got = mosaic_to_lonlat(grid, tile, np.array([[384, 384], [0, 0], [768, 768], [128, 640]]))
    np.testing.assert_allclose(got[0], centre(grid, tile), atol=1e-10)
    top_left = grid.bounds(TileKey(15, 16597, 11701))
    bottom_right = grid.bounds(TileKey(15, 16599, 11703))
    np.testing.assert_allclose(got[1], (top_left.west, top_left.north), atol=1e-10)
    np.testing.assert_allclose(got[2], (bottom_right.east, bottom_right.south), atol=1e-10)
    # (128, 640) is the centre of the bottom-left tile.
    np.testing.assert_allclose(got[3], centre(grid, TileKey(15, 16597, 11703)), atol=1e-10)


def test_geojson_is_plain_rfc7946_and_opens_with_ogr(tmp_path: Path):
    fp = fit_footprint(patches(6, 1), WIDTH, HEIGHT)
    assert isinstance(fp, Footprint)
    doc = footprint_geojson("q007", fp, {"seconds": np.float32(1.5), "method": "verified"})
    polygon, centre = doc["features"]
    ring = polygon["geometry"]["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    x, y = np.array(ring[:-1]).T
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # counter-clockwise
    assert {tuple(c) for c in ring} == {tuple(c) for c in fp.corners_lonlat}
    assert centre["geometry"] == {"type": "Point", "coordinates": [fp.centre_lon, fp.centre_lat]}
    props = polygon["properties"]
    assert props["query"] == "q007" and props["patches_agreeing"] == 6
    assert props["seconds"] == 1.5 and props["method"] == "verified"
    assert "crs" not in doc

    path = tmp_path / "q007.geojson"
    path.write_text(json.dumps(doc))
    source = ogr.Open(str(path))  # kept referenced: OGR layers die with their source
    layer = source.GetLayer(0)
    assert layer.GetFeatureCount() == 2
    feature = layer.GetNextFeature()
    geometry = feature.GetGeometryRef()
    assert geometry.GetGeometryName() == "POLYGON" and geometry.IsValid()
    assert feature.GetField("query") == "q007"
    area_m2 = GSD_M**2 * WIDTH * HEIGHT
    m_lon = 111_320 * math.cos(math.radians(CENTRE[1]))
    assert geometry.Area() * m_lon * 111_200 == pytest.approx(area_m2, rel=0.01)
    assert json.loads(json.dumps(fp.summary()))["patches_agreeing"] == 6
