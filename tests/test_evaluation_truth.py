"""Truth from a query's own georeference: corners and centre under a rotated geotransform."""

import numpy as np
import pytest
from osgeo import gdal

from rsloc_assets.evaluation.truth import read_truth


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
