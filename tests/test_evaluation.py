"""Evaluation: truth from a rotated georeference, error, tile success and the paper's Acc."""

import numpy as np
import pyarrow as pa
import pytest
from osgeo import gdal, osr

from rsloc_assets.evaluation import read_truth, score_query, summarise, summary_line
from rsloc_assets.geodesy import offset_lonlat
from rsloc_assets.grids import get_grid
from rsloc_assets.localize import Localization

GRID = get_grid("ge")


@pytest.fixture
def rotated_query(tmp_path):
    """A 400×300 px UTM 31N query at 5 m/px rotated by 10°."""
    path = tmp_path / "q.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 400, 300, 3, gdal.GDT_Byte)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    a = np.radians(10)
    ds.SetGeoTransform(
        (450000, 5 * np.cos(a), 5 * np.sin(a), 5300000, 5 * np.sin(a), -5 * np.cos(a))
    )
    ds = None
    return path


def test_truth_corners_follow_the_rotated_geotransform(rotated_query):
    truth = read_truth(rotated_query)
    tl, tr, br, bl = truth.corners_lonlat
    cx, cy = truth.centre_lonlat
    assert cx == pytest.approx(np.mean([tl[0], br[0]]), abs=1e-5)
    assert cy == pytest.approx(np.mean([tr[1], bl[1]]), abs=1e-5)
    assert tr[1] > tl[1]  # rotated counter-clockwise: the top edge rises to the east


def test_plain_image_has_no_truth(tmp_path):
    path = tmp_path / "plain.tif"
    gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 3, gdal.GDT_Byte)
    assert read_truth(path) is None


def loc_at(lon, lat):
    return Localization("q", "retrieval-vote", lon, lat, confidence=0.5)


def test_score_success_and_acc(rotated_query):
    truth = read_truth(rotated_query)
    empty = pa.table({"cx": pa.array([], pa.float64()), "cy": pa.array([], pa.float64())})
    cands = pa.table({"query": [], "key": [], "rank": []})
    lon, lat = offset_lonlat(*truth.centre_lonlat, 300.0, 0.0)
    near = score_query(loc_at(float(lon), float(lat)), truth, GRID, 15, empty, cands)
    assert near.error_m == pytest.approx(300, rel=0.01)
    assert near.within_1_tile and near.acc
    lon, lat = offset_lonlat(*truth.centre_lonlat, 0.0, 2500.0)
    far = score_query(loc_at(float(lon), float(lat)), truth, GRID, 15, empty, cands)
    assert not far.within_1_tile and far.within_3_tiles
    lon, lat = offset_lonlat(*truth.centre_lonlat, 0.0, 9000.0)
    lost = score_query(loc_at(float(lon), float(lat)), truth, GRID, 15, empty, cands)
    assert not lost.acc and not lost.within_3_tiles
    missing = score_query(Localization("q", "not-localized"), truth, GRID, 15, empty, cands)
    assert missing.error_m is None and not missing.acc
    s = summarise([near, far, lost, missing], total=5)
    assert (s.evaluated, s.within_1_tile, s.within_3_tiles, s.acc) == (4, 1, 2, 1)
    assert summary_line(s).startswith("demo: 1/5 queries within 1 tile; median error ")


def test_patch_recall_counts_the_true_tile(rotated_query):
    truth = read_truth(rotated_query)
    patches = pa.table({"cx": [200.0, 100.0], "cy": [150.0, 50.0]})
    lon, lat = truth.pixel_to_lonlat(np.array([200.0]), np.array([150.0]))
    key = GRID.tile_at(float(lon[0]), float(lat[0]), 15).key
    cands = pa.table({"query": [0, 0, 1], "key": ["15/0/0", key, "15/1/1"], "rank": [0, 1, 0]})
    score = score_query(loc_at(*truth.centre_lonlat), truth, GRID, 15, patches, cands)
    assert (score.recall_at_1, score.recall_at_10, score.recall_at_k) == (0.0, 0.5, 0.5)
