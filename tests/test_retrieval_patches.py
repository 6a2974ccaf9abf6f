"""Query reading and patching: ground resolution, patch grid, centres, nodata and bad input."""

import json
import math

import numpy as np
import pytest
from osgeo import gdal, osr

from rsloc_assets.retrieval.patches import cut_patches, plan_patches, read_query


def write_tif(path, array, epsg=None, gt=None, nodata=None):
    h, w = array.shape[:2]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 3, gdal.GDT_Byte)
    for i in range(3):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(array[..., i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
        ds.SetGeoTransform(gt)
    ds = None
    return path


def test_mercator_pixel_size_is_scaled_by_gallery_latitude(tmp_path):
    rgb = np.full((64, 64, 3), 100, np.uint8)
    path = write_tif(tmp_path / "q.tif", rgb, 3857, (0, 4.7773, 0, 6e6, 0, -4.7773))
    q = read_query(path, ref_lat=46.0)
    assert q.gsd_m[0] == pytest.approx(4.7773 * math.cos(math.radians(46.0)))


def test_utm_pixel_size_is_ground_size(tmp_path):
    rgb = np.full((64, 64, 3), 100, np.uint8)
    path = write_tif(tmp_path / "q.tif", rgb, 32631, (500000, 5.0, 0, 5300000, 0, -5.0))
    assert read_query(path, ref_lat=47.0).gsd_m == pytest.approx((5.0, 5.0))


def test_plain_image_needs_a_sidecar(tmp_path):
    rgb = np.full((64, 64, 3), 100, np.uint8)
    path = write_tif(tmp_path / "plain.tif", rgb)
    with pytest.raises(ValueError, match=r"no georeference.*plain\.json"):
        read_query(path, ref_lat=47.0)
    (tmp_path / "plain.json").write_text(json.dumps({"gsd_m": 2.5}))
    assert read_query(path, ref_lat=47.0).gsd_m == (2.5, 2.5)
    (tmp_path / "plain.json").write_text(json.dumps({"gsd_m": float("nan")}))
    with pytest.raises(ValueError, match="gsd_m"):
        read_query(path, ref_lat=47.0)


def test_patch_grid_covers_image_with_true_centres(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (700, 1000, 3), dtype=np.uint8)
    path = write_tif(tmp_path / "q.tif", rgb, 32631, (500000, 4.0, 0, 5300000, 0, -4.0))
    q = read_query(path, ref_lat=47.0)
    plan = plan_patches((800.0, 1200.0), q.gsd_m)
    assert (plan.width, plan.height) == (600, 900)
    with pytest.raises(ValueError, match="smaller than one patch"):
        cut_patches(q, plan)
    plan = plan_patches((200.0, 200.0), q.gsd_m)  # 150 px patches, 50 px stride
    table, pixels = cut_patches(q, plan)
    x0, cx = table["x0"].to_numpy(), table["cx"].to_numpy()
    assert x0.min() == 0 and x0.max() == 1000 - 150
    np.testing.assert_allclose(cx, x0 + 75)  # the centre, not (x + size) / 2
    row = table.slice(0, 1).to_pylist()[0]
    assert row["east_m"] == pytest.approx((75 - 500) * 4.0)
    assert row["north_m"] == pytest.approx((350 - 75) * 4.0)
    assert np.array_equal(pixels[0], rgb[:150, :150])


def test_nodata_patches_are_dropped(tmp_path):
    rgb = np.full((300, 300, 3), 120, np.uint8)
    rgb[:, 150:] = 0
    path = write_tif(tmp_path / "q.tif", rgb, 32631, (500000, 4.0, 0, 5300000, 0, -4.0), 0)
    q = read_query(path, ref_lat=47.0)
    table, _ = cut_patches(q, plan_patches((100.0, 100.0), q.gsd_m))
    assert table.num_rows > 0
    assert (table["x0"].to_numpy() + table["width"].to_numpy() / 2 <= 150 + 38).all()
    assert (table["valid_fraction"].to_numpy() >= 0.5).all()
