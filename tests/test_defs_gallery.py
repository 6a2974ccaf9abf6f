"""The gallery group: a refresh embeds only what changed; corrupt tiles are recorded skips."""

import re
import sqlite3

import dagster as dg
import pyarrow.parquet as pq
import pytest

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import GALLERY_ASSETS
from rsloc_assets.defs.resources import RslocResource

ASSETS = list(defs.assets)


@pytest.fixture(scope="module")
def small_world(small_layout):
    return small_layout, RslocResource(data_dir=str(small_layout.root))


def refresh(rsloc):
    result = dg.materialize(
        ASSETS, selection=["gallery_tiles", "tile_embeddings"], resources={"rsloc": rsloc}
    )
    assert result.success
    mat = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path == ["tile_embeddings"]
    ][-1]
    meta = {k: v.value for k, v in mat.materialization.metadata.items()}
    return meta, result.get_asset_check_evaluations()


def interior_tile(layout):
    manifest = pq.read_table(layout.manifest).to_pylist()
    keys = {(r["col"], r["row"]) for r in manifest}
    for r in manifest:
        if all((r["col"] + dc, r["row"] + dr) in keys for dc in (-1, 0, 1) for dr in (-1, 0, 1)):
            return r
    raise AssertionError("no interior tile")


def add_tile_version(layout, tile, time_, blob):
    with sqlite3.connect(layout.gallery) as db:
        db.execute(
            "INSERT INTO ge_tiles(zoom_level, tile_column, tile_row, time_, tile_data)"
            " VALUES (?, ?, ?, ?, ?)",
            (tile["level"], tile["col"], tile["row"], time_, blob),
        )


def tile_blob(layout, tile):
    with sqlite3.connect(layout.gallery) as db:
        return db.execute(
            "SELECT tile_data FROM ge_tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (tile["level"], tile["col"] + 1, tile["row"]),
        ).fetchone()[0]


def test_refresh_embeds_changed_tiles_and_their_neighbours_only(small_world):
    layout, rsloc = small_world
    meta, checks = refresh(rsloc)
    tiles = pq.read_table(layout.manifest).num_rows
    assert meta["rows"] == tiles and all(c.passed for c in checks)

    tile = interior_tile(layout)
    add_tile_version(layout, tile, "2099", tile_blob(layout, tile))
    meta, checks = refresh(rsloc)
    assert (meta["changed_tiles"], meta["embedded"], meta["rows"]) == (1, 9, tiles)
    assert all(c.passed for c in checks)

    meta, _ = refresh(rsloc)
    assert meta["embedded"] == 0


def test_corrupt_tile_is_skipped_counted_and_not_retried(small_world):
    layout, rsloc = small_world
    refresh(rsloc)
    tiles = pq.read_table(layout.manifest).num_rows
    tile = interior_tile(layout)
    add_tile_version(layout, tile, "2100", b"\xff\xd8 definitely not a jpeg")
    meta, checks = refresh(rsloc)
    assert meta["corrupt_skipped"] == 1
    assert meta["embedded"] == 8
    assert meta["rows"] == tiles - 1
    assert all(c.passed for c in checks)

    meta, checks = refresh(rsloc)
    assert (meta["embedded"], meta["corrupt_known"], meta["rows"]) == (0, 1, tiles - 1)
    assert all(c.passed for c in checks)


def materialize_fitted(rsloc, selection):
    result = dg.materialize(
        ASSETS, selection=selection, resources={"rsloc": rsloc}, raise_on_error=False
    )
    events = {
        m.asset_key.path[-1]: {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
    }
    return result, events


def test_a_refit_descriptor_embeds_into_a_new_table(small_layout):
    fitted = list(GALLERY_ASSETS)
    rsloc = RslocResource(data_dir=str(small_layout.root), whitening_dim=8, fit_sample_tiles=16)
    result, events = materialize_fitted(rsloc, fitted)
    assert result.success
    version = events["descriptor_model"]["version"]
    assert re.search(r"\| \d+\.\d{6} \|", events["gallery_tiles"]["preview"])  # lon/lat, ≈ 0.1 m
    assert events["descriptor_model"]["dimension"] == 8
    assert events["tile_embeddings"]["tables"] == f"effnetl2_grid3_w8_{version}_ge_z15"
    assert events["tile_embeddings"]["embedded"] == events["tile_embeddings"]["rows"]

    # New settings without a refit: the embeddings refuse to use the old model.
    changed = RslocResource(data_dir=str(small_layout.root), whitening_dim=6, fit_sample_tiles=16)
    result, _ = materialize_fitted(changed, ["tile_embeddings"])
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "materialize descriptor_model" in failure.description
    assert "\n" not in failure.description

    result, events = materialize_fitted(changed, fitted)
    assert result.success and events["descriptor_model"]["version"] != version
    assert events["tile_embeddings"]["tables"].startswith("effnetl2_grid3_w6_")
    assert events["tile_embeddings"]["embedded"] == events["tile_embeddings"]["rows"]
