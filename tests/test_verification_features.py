"""The per-tile SIFT feature cache: one file per tile, time, settings and working size, read back
exactly."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from rsloc_assets.gallery.reader import TileRef
from rsloc_assets.synthetic.landscape import WorldSpec, world
from rsloc_assets.synthetic.seasons import render
from rsloc_assets.verification.features import FeatureCache, load_features, save_features
from rsloc_assets.verification.matching import VerifyParams, extract_features, match_patch

REF = TileRef(15, 16_600, 12_100, "2023")


@pytest.fixture(scope="module")
def mosaic() -> np.ndarray:
    return np.ascontiguousarray(render(world(WorldSpec.small()), "summer")[100:868, 50:818])


def test_cached_features_are_the_extracted_ones_and_match_alike(mosaic, tmp_path: Path):
    cache = FeatureCache(tmp_path, VerifyParams())
    first = cache.features(REF, mosaic)
    assert cache.path(REF).is_file()
    blank = np.zeros_like(mosaic)
    cached = cache.features(REF, blank)  # read from disk: a blank image has no keypoints
    fresh = extract_features(mosaic)
    assert len(fresh.xy) > 100
    for got in (first, cached):
        assert np.array_equal(got.xy, fresh.xy)
        assert np.array_equal(got.descriptors, fresh.descriptors)
    patch = cv2.resize(mosaic, (500, 500), interpolation=cv2.INTER_AREA)
    a, b = match_patch(patch, mosaic), match_patch(patch, mosaic, mosaic_features=cached)
    assert a.accepted and a.inliers == b.inliers and np.array_equal(a.homography, b.homography)


def test_cache_files_are_keyed_by_tile_time_and_settings(tmp_path: Path):
    default, coarse = (
        FeatureCache(tmp_path, VerifyParams()),
        FeatureCache(tmp_path, VerifyParams(max_features=1000)),
    )
    other_time = TileRef(REF.z, REF.col, REF.row, "2024")
    paths = {default.path(REF), default.path(other_time), coarse.path(REF)}
    assert len(paths) == 3 and all(p.is_relative_to(tmp_path) for p in paths)


def test_cache_is_keyed_by_working_size_and_clahe_and_stays_inside_root(mosaic, tmp_path: Path):
    cache = FeatureCache(tmp_path, VerifyParams())
    clahe = FeatureCache(tmp_path, VerifyParams(clahe_clip=2.0))
    odd = TileRef(REF.z, REF.col, REF.row, "../../2023/05")
    paths = {
        cache.path(REF),
        cache.path(REF, (250, 250)),
        cache.path(REF, (250, 384)),
        clahe.path(REF),
        clahe.path(REF, (250, 250)),
        cache.path(odd),
    }
    assert len(paths) == 6
    assert all(p.parent in (cache.root, clahe.root) for p in paths)
    assert cache.root.parent == clahe.root.parent == tmp_path

    small = cache.features(REF, mosaic, (250, 250))
    assert small.size == (250, 250) and cache.path(REF, (250, 250)).is_file()
    assert small.xy.max() <= 250 and len(small) < len(cache.features(REF, mosaic))
    assert load_features(cache.path(REF, (250, 250))).size == (250, 250)
    # A file holding features of another size is never served for this one.
    save_features(cache.path(REF, (300, 300)), small)
    assert cache.features(REF, mosaic, (300, 300)).size == (300, 300)


def test_damaged_feature_cache_is_a_one_line_error(tmp_path: Path):
    bad = tmp_path / "tile.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read SIFT features"):
        load_features(bad)
