"""The gallery adapter: augmentations, cached views (other dates or augmentations as positives),
training that lowers the contrastive loss, and a versioned file that loads back the same."""

import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.retrieval.adapter import (
    Adapter,
    AdapterParams,
    TokenAdapter,
    _negatives_mask,
    augment,
    cache_views,
    train_adapter,
)

PARAMS = AdapterParams(view_budget=48, views=2, epochs=6, batch_size=16, hidden=32)


@pytest.fixture(scope="module")
def gallery_layout(small_layout):
    write_manifest(small_layout, None, None)
    return small_layout


@pytest.fixture(scope="module")
def views(gallery_layout, effnet):
    manifest = pq.read_table(gallery_layout.manifest)
    with Gallery.open(gallery_layout.gallery) as gallery:
        return cache_views(gallery, manifest, effnet, PARAMS)


def test_an_untrained_adapter_is_the_identity():
    tokens = torch.randn(2, 5, 16)
    torch.testing.assert_close(TokenAdapter(16, 8)(tokens), tokens)


def test_augment_is_another_look_of_the_requested_size():
    mosaic = np.random.default_rng(0).integers(0, 255, size=(768, 768, 3), dtype=np.uint8)
    a = augment(mosaic, 128, np.random.default_rng(1))
    b = augment(mosaic, 128, np.random.default_rng(1))
    c = augment(mosaic, 128, np.random.default_rng(2))
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_neighbours_are_not_negatives():
    cols, rows = torch.tensor([0, 1, 3, 0]), torch.tensor([0, 1, 0, 2])
    mask = _negatives_mask(cols, rows, 1)
    assert mask.tolist() == [
        [False, True, False, False],
        [True, False, False, True],
        [False, False, False, False],
        [False, True, False, False],
    ]


def test_views_of_a_single_date_gallery_are_augmentations(views, effnet):
    tiles = PARAMS.view_budget // PARAMS.views
    assert views.tokens.shape == (tiles, PARAMS.views, 81, effnet.local_dim)
    assert views.tokens.dtype == np.float16 and not views.multi_date
    assert not np.allclose(views.tokens[:, 0], views.tokens[:, 1])


def test_training_lowers_the_loss_and_round_trips(views, tmp_path):
    adapter = train_adapter(views, "effnetl2", PARAMS)
    record = adapter.record
    assert record["positives"] == "augmentations" and record["tiles"] == len(views.tokens)
    assert record["loss_last_epoch"] < record["loss_first_epoch"]
    adapter.save(tmp_path / "a.pt")
    back = Adapter.load(tmp_path / "a.pt")
    assert back.version == adapter.version and back.record == record
    tokens = views.tokens[:2, 0].astype(np.float32)
    np.testing.assert_allclose(back(tokens), adapter(tokens), atol=1e-6)
    assert not np.allclose(adapter(tokens), tokens)
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read adapter"):
        Adapter.load(tmp_path / "bad.pt")


def test_a_gallery_with_two_dates_uses_them_as_positives(gallery_layout, effnet, tmp_path):
    path = tmp_path / "two_dates.sqlite"
    with sqlite3.connect(gallery_layout.gallery) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
        dst.execute(
            "INSERT INTO ge_tiles SELECT zoom_level, tile_column, tile_row, '2019', tile_data"
            " FROM ge_tiles"
        )
    manifest = pq.read_table(gallery_layout.manifest)
    with Gallery.open(path) as gallery:
        assert sorted(next(iter(gallery.tile_times(15).values()))) == ["2019", "2023"]
        two = cache_views(gallery, manifest, effnet, AdapterParams(view_budget=8, views=2))
    assert two.multi_date and two.tokens.shape[:2] == (4, 2)
