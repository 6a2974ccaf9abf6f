"""The real-data benchmark's query makers keep the true georeference; absent data is a skip."""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from bench import real

RSLOC = sorted((real.SHARED_DATA / "rsloc").glob("test*/*.tiff"))
NAIP = sorted((real.SHARED_DATA / "naip").glob("m_*.tif"))
needs_rsloc = pytest.mark.skipif(not RSLOC, reason="../shared/data/rsloc is absent")
needs_naip = pytest.mark.skipif(not NAIP, reason="../shared/data/naip is absent")


def _back_onto_source(query: Path, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Warp the query back onto the source's pixel grid; return both as grey, where covered."""
    src = gdal.Open(str(source))
    gt = src.GetGeoTransform()
    warped = gdal.Warp(
        "",
        str(query),
        format="MEM",
        outputBounds=(
            gt[0],
            gt[3] + gt[5] * src.RasterYSize,
            gt[0] + gt[1] * src.RasterXSize,
            gt[3],
        ),
        width=src.RasterXSize,
        height=src.RasterYSize,
        dstAlpha=True,
        resampleAlg="bilinear",
    )
    moved = warped.ReadAsArray()
    covered = moved[-1] > 0
    grey = moved[:3].astype(np.float64).mean(axis=0)
    ref = src.ReadAsArray(band_list=[1, 2, 3]).astype(np.float64).mean(axis=0)
    return grey[covered], ref[covered]


@needs_rsloc
def test_rotated_rsloc_crop_lies_where_its_georeference_says(tmp_path):
    rng = np.random.default_rng(3)
    (path,) = real.rsloc_crops(RSLOC[:1], tmp_path, rng, per_image=1)
    moved, ref = _back_onto_source(path, RSLOC[0])
    assert moved.size > 1_000_000
    assert np.corrcoef(moved, ref)[0, 1] > 0.8  # photometric changes, same place
    shifted = np.corrcoef(moved[:-4000], ref[4000:])[0, 1]
    assert shifted < 0.5  # a misplaced footprint would not correlate


@needs_naip
def test_naip_crop_is_an_untouched_window_of_another_date(tmp_path):
    rng = np.random.default_rng(4)
    (path,) = real.naip_crops(NAIP[:1], tmp_path, rng, per_date=1)
    moved, ref = _back_onto_source(path, NAIP[0])
    np.testing.assert_allclose(moved, ref, atol=1.0)
    crop = gdal.Open(str(path))
    assert crop.RasterCount == 4 and 500 <= crop.RasterXSize <= 700


def test_absent_shared_data_is_a_one_line_skip(tmp_path, capsys):
    lines = real.main(["--shared", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path)])
    assert lines == [
        f"real-rsloc: skipped, no imagery under {tmp_path / 'nowhere' / 'rsloc'}",
        f"real-naip: skipped, no imagery under {tmp_path / 'nowhere' / 'naip'}",
    ]
    assert capsys.readouterr().out.strip().splitlines() == lines
    assert not list(tmp_path.glob("*.json"))


@needs_naip
def test_a_turned_naip_crop_still_lies_where_its_georeference_says(tmp_path):
    rng = np.random.default_rng(5)
    (path,) = real.naip_crops(NAIP[:1], tmp_path, rng, per_date=1)
    (heading,) = real.turn_queries([path], np.random.default_rng(6))
    turned = gdal.Open(str(path))
    assert turned.RasterCount == 4
    assert turned.GetRasterBand(4).GetColorInterpretation() == gdal.GCI_AlphaBand
    gt = turned.GetGeoTransform()
    # The image's x axis points `heading` degrees counter-clockwise from east.
    assert abs((np.degrees(np.arctan2(gt[4], gt[1])) - heading + 180) % 360 - 180) < 0.1
    moved, ref = _back_onto_source(path, NAIP[0])
    inner = (moved > 0) & (ref > 0)
    assert inner.sum() > 100_000
    np.testing.assert_allclose(np.median(np.abs(moved[inner] - ref[inner])), 0, atol=6.0)
