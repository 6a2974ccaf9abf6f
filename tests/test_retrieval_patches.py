"""Query reading and patching: ground resolution, patch grid, centres, nodata and bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from osgeo import gdal, osr

from rsloc_assets.raster import rotated_crop
from rsloc_assets.retrieval.encoders import resize_square
from rsloc_assets.retrieval.patches import (
    QueryImage,
    cut_patches,
    heading_views,
    headings_deg,
    plan_patches,
    read_query,
)


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
    # 700 px high, 900 px patches: one row of windows centred on the image's height.
    strip = cut_patches(q, plan)
    assert set(strip["y0"].to_pylist()) == {-100} and strip["x0"].to_pylist() == [0, 200, 400]
    np.testing.assert_allclose(strip["valid_fraction"].to_numpy(), 700 / 900)
    assert strip["north_m"].to_pylist() == [0.0] * 3
    with pytest.raises(ValueError, match="less than one gallery tile"):
        cut_patches(q, plan_patches((5000.0, 5000.0), q.gsd_m))
    plan = plan_patches((200.0, 200.0), q.gsd_m)  # 150 px patches, 50 px stride
    table = cut_patches(q, plan)
    x0, cx = table["x0"].to_numpy(), table["cx"].to_numpy()
    assert x0.min() == 0 and x0.max() == 1000 - 150
    np.testing.assert_allclose(cx, x0 + 75)  # the centre, not (x + size) / 2
    row = table.slice(0, 1).to_pylist()[0]
    assert row["east_m"] == pytest.approx((75 - 500) * 4.0)
    assert row["north_m"] == pytest.approx((350 - 75) * 4.0)
    views, valid = heading_views(q, table, plan, 0.0)
    assert np.array_equal(views[0], rgb[:150, :150]) and (valid == 1).all()


def test_nodata_patches_are_dropped(tmp_path):
    rgb = np.random.default_rng(0).integers(1, 255, (300, 300, 3), dtype=np.uint8)
    rgb[:, 150:] = 0
    path = write_tif(tmp_path / "q.tif", rgb, 32631, (500000, 4.0, 0, 5300000, 0, -4.0), 0)
    q = read_query(path, ref_lat=47.0)
    table = cut_patches(q, plan_patches((100.0, 100.0), q.gsd_m))
    assert table.num_rows > 0
    assert (table["x0"].to_numpy() + table["width"].to_numpy() / 2 <= 150 + 38).all()
    assert (table["valid_fraction"].to_numpy() >= 0.5).all()


def _image(rgb: np.ndarray, gsd: float = 4.0) -> QueryImage:
    return QueryImage("q", Path("q.tif"), rgb, np.ones(rgb.shape[:2], bool), (gsd, gsd))


def test_headings_are_evenly_spaced():
    assert headings_deg(1) == (0.0,)
    assert headings_deg(4) == (0.0, 90.0, 180.0, 270.0)
    assert headings_deg(8)[1::2] == (45.0, 135.0, 225.0, 315.0)
    with pytest.raises(ValueError, match="at least one heading"):
        headings_deg(0)


def test_quarter_turns_are_exact_rotations_of_the_patch():
    rgb = np.random.default_rng(1).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    q = _image(rgb)
    plan = plan_patches((200.0, 200.0), q.gsd_m)  # square on the ground: 150 px
    table = cut_patches(q, plan)
    x0, y0 = table["x0"].to_numpy(), table["y0"].to_numpy()
    patch = rgb[y0[3] : y0[3] + 150, x0[3] : x0[3] + 150]
    for k, heading in enumerate(headings_deg(4)):
        views, valid = heading_views(q, table, plan, heading)
        assert np.array_equal(views[3], np.rot90(patch, k)) and (valid == 1).all()


def test_a_quarter_turn_keeps_the_mosaic_ground_and_blanks_what_lies_off_the_image():
    """A patch 2 tiles wide and 3 high turned 90° is cut from a window 3 wide and 2 high about
    its centre, so it still shows a mosaic's ground; what falls off the image is black."""
    rgb = np.random.default_rng(2).integers(1, 255, (300, 400, 3), dtype=np.uint8)
    q = _image(rgb)
    plan = plan_patches((100.0, 150.0), q.gsd_m)  # 75 × 112 px (rounded), stride 25 × 38
    table = cut_patches(q, plan).slice(0, 1)  # the top-left patch: centre (37.5, 56)
    views, valid = heading_views(q, table, plan, 90.0)
    assert views.shape[1:3] == (plan.height, plan.width)
    window = np.zeros((plan.width, plan.height, 3), np.uint8)  # 112 wide, 75 high
    window[:, 18:] = rgb[18:93, :94]  # x0 = round(37.5 − 56) = −18 (half a pixel rounded)
    assert np.array_equal(views[0], np.rot90(window, 1))
    assert valid[0] == pytest.approx(94 / 112)


def test_a_diagonal_heading_undoes_the_query_turn():
    """A north-up scene turned 45° counter-clockwise looks north-up again in its 45° view (and
    not in its 315° one)."""
    rng = np.random.default_rng(3)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (600, 600, 3), dtype=np.uint8), (0, 0), 3)
    turned, pose = rotated_crop(scene, (300.0, 300.0), (400, 400), 45.0)
    q = _image(turned)
    plan = plan_patches((200.0, 200.0), q.gsd_m)  # 150 px
    table = cut_patches(q, plan).slice(12, 1)  # a patch off the centre, corners off the image
    sx, sy = (round(v) for v in pose @ (table["cx"][0].as_py(), table["cy"][0].as_py(), 1.0))
    truth = scene[sy - 75 : sy + 75, sx - 75 : sx + 75]
    right, valid = heading_views(q, table, plan, 45.0)
    wrong, _ = heading_views(q, table, plan, 315.0)

    def error(view: np.ndarray) -> float:
        return float(np.abs(view[0, 20:-20, 20:-20].astype(float) - truth[20:-20, 20:-20]).mean())

    assert error(right) < 1.0 and error(wrong) > 5 * error(right)  # measured 0.5 and 7.9
    assert 0.9 < valid[0] < 1.0  # a corner of the turned window lies off the image


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ("[1, 2]", "needs"),
        ("not json", "not JSON"),
        ("true", "needs"),
        ('{"gsd_m": true}', "needs"),
        ('{"gsd_m": "2"}', "needs"),
        ('{"gsd_m": 1e-320}', "outside"),
        ('{"gsd_m": 1e6}', "outside"),
        ('{"gsd_m": 1e400}', "outside"),
        ('{"gsd_m": ' + "9" * 400 + "}", "outside"),
    ],
)
def test_a_bad_sidecar_is_a_one_line_error_naming_it(tmp_path, sidecar, message):
    path = write_tif(tmp_path / "plain.tif", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "plain.json").write_text(sidecar)
    with pytest.raises(ValueError, match=message) as err:
        read_query(path, ref_lat=47.0)
    assert "plain.json" in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_tiff_is_a_one_line_error(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    path = write_tif(tmp_path / "cut.tif", rgb, 32631, (500000, 4.0, 0, 5300000, 0, -4.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.tif") as err:
        read_query(path, ref_lat=47.0)
    assert "\n" not in str(err.value)


def test_absurd_patch_plans_are_refused():
    with pytest.raises(ValueError, match="too coarse"):
        plan_patches((800.0, 1200.0), (500.0, 500.0))
    huge = _image(np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), np.uint8))
    with pytest.raises(ValueError, match="patches"):
        cut_patches(huge, plan_patches((40.0, 40.0), huge.gsd_m))


@pytest.mark.parametrize("value", [0, 128])
def test_an_image_without_content_has_no_patches(value):
    flat = _image(np.full((900, 900, 3), value, np.uint8))
    with pytest.raises(ValueError, match="no content"):
        cut_patches(flat, plan_patches((200.0, 200.0), flat.gsd_m))


READ_PEAK = """
import resource, sys
from rsloc_assets.retrieval.patches import read_query
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
query = read_query(sys.argv[1], 47.0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_reading_a_query_holds_about_four_bytes_a_pixel(tmp_path):
    """RGB uint8 and a mask, read in blocks of rows (it was 55 bytes a pixel, through float64)."""
    n = 4000
    rgb = np.random.default_rng(0).integers(0, 255, (n, n, 3), dtype=np.uint8)
    path = write_tif(tmp_path / "big.tif", rgb, 32631, (500000, 1.0, 0, 5300000, 0, -1.0))
    del rgb
    run = subprocess.run(
        [sys.executable, "-c", READ_PEAK, str(path)], capture_output=True, text=True, check=True
    )
    grown = int(run.stdout.split()[-1])
    assert grown < 6 * n * n, grown / (n * n)


def test_a_query_too_large_to_hold_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.tif"
    size = (30_000, 20_000, 3, gdal.GDT_Byte, ["SPARSE_OK=TRUE", "TILED=YES"])
    ds = gdal.GetDriverByName("GTiff").Create(str(path), *size)
    ds.SetGeoTransform((500000, 1.0, 0, 5300000, 0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    with pytest.raises(ValueError, match="split it into tiles"):
        read_query(path, ref_lat=47.0)


@pytest.mark.parametrize(
    ("side_px", "heading"), [(500, 45.0), (500, 90.0), (120, 0.0), (120, 45.0)]
)
def test_views_resized_as_cut_are_the_encoders_resize_of_the_full_views(side_px, heading):
    """Views asked for at the encoder's input size are exactly `resize_square` of the views at
    full resolution, for a query larger than a patch and for one smaller (cropped views)."""
    rng = np.random.default_rng(4)
    q = _image(rng.integers(0, 255, (side_px, side_px, 3), dtype=np.uint8))
    plan = plan_patches((200.0, 200.0), q.gsd_m)  # 150 px
    table = cut_patches(q, plan)
    full, valid = heading_views(q, table, plan, heading)
    small, small_valid = heading_views(q, table, plan, heading, size=64)
    assert len(full) > 0 and small.shape == (len(full), 64, 64, 3)
    assert np.array_equal(small_valid, valid)
    assert all(np.array_equal(s, resize_square(f, 64)) for s, f in zip(small, full, strict=True))
