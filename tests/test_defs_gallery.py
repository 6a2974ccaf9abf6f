"""The gallery group: a refresh embeds only what changed; corrupt tiles are recorded skips."""

import re
import sqlite3

import dagster as dg
import pyarrow.parquet as pq
import pytest

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import (
    BLOCK_ASSET,
    INDEX_ASSET,
    REFRESH_ASSETS,
    due_blocks,
    embed_changed_blocks,
)
from rsloc_assets.defs.partitions import BLOCKS
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.gallery.blocks import Block
from rsloc_assets.grids import TileKey
from tests.gallery_runs import metadata, refresh_gallery, requested

ASSETS = list(defs.assets)


@pytest.fixture(scope="module")
def small_world(small_layout):
    return small_layout, RslocResource(data_dir=str(small_layout.root))


def refresh(rsloc):
    """One refresh on an instance of its own (every block runs); block figures summed."""
    run = refresh_gallery(rsloc)
    figures = ("embedded", "changed_tiles", "corrupt_skipped", "corrupt_known")
    meta = {name: run.total(name) for name in figures} | {"rows": run.assets["tile_index"]["rows"]}
    return meta, run.checks


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


def test_a_refit_descriptor_embeds_every_block_into_a_new_table(small_layout):
    rsloc = RslocResource(
        data_dir=str(small_layout.root), whitening_dim=8, fit_sample_tiles=16, block_tiles=4
    )
    instance = dg.DagsterInstance.ephemeral()
    run = refresh_gallery(rsloc, instance)
    version = run.assets["descriptor_model"]["version"]
    assert re.search(r"\| \d+\.\d{6} \|", run.assets["gallery_tiles"]["preview"])  # ≈ 0.1 m
    assert run.assets["descriptor_model"]["dimension"] == 8
    assert run.assets["tile_index"]["tables"] == f"effnetl2_grid3_w8_{version}_ge_z15"
    assert run.total("embedded") == run.assets["tile_index"]["rows"] and run.passed
    assert len(run.blocks) == run.assets["gallery_tiles"]["blocks"] > 1

    # New settings without a refit: the index refuses to use the old model.
    changed = RslocResource(
        data_dir=str(small_layout.root), whitening_dim=6, fit_sample_tiles=16, block_tiles=4
    )
    result = dg.materialize(
        ASSETS, selection=["tile_index"], resources={"rsloc": changed}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "materialize descriptor_model" in failure.description
    assert "\n" not in failure.description

    # The refit makes a new version: every block is due again, into a new table.
    run = refresh_gallery(changed, instance)
    assert run.assets["descriptor_model"]["version"] != version
    assert run.assets["tile_index"]["tables"].startswith("effnetl2_grid3_w6_")
    assert len(run.blocks) == run.assets["gallery_tiles"]["blocks"]
    assert run.total("embedded") == run.assets["tile_index"]["rows"] and run.passed


def test_a_refresh_embeds_only_the_blocks_that_changed_then_the_index(small_layout):
    layout = small_layout
    rsloc = RslocResource(data_dir=str(layout.root), block_tiles=4)
    instance = dg.DagsterInstance.ephemeral()
    first = refresh_gallery(rsloc, instance)
    assert first.passed and len(first.blocks) == first.assets["gallery_tiles"]["blocks"] > 4
    assert refresh_gallery(rsloc, instance).blocks == {}  # nothing changed: no block runs

    tile = interior_tile(layout)
    add_tile_version(layout, tile, "2101", tile_blob(layout, tile))
    around = {
        Block.of(TileKey(tile["level"], tile["col"] + dc, tile["row"] + dr), 4).key
        for dc in (-1, 0, 1)
        for dr in (-1, 0, 1)
    }
    # The nightly job alone; after it the block sensor asks for the blocks around the tile.
    run = dict(resources={"rsloc": rsloc}, instance=instance)
    nightly = dg.materialize(ASSETS, selection=REFRESH_ASSETS, **run)
    context = dg.build_run_status_sensor_context(
        sensor_name=embed_changed_blocks.name,
        dagster_event=nightly.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=nightly.dagster_run,
    )
    requests = embed_changed_blocks(context)
    asked = [key for request in requests for key in requested(request, instance, BLOCKS)]
    assert sorted(asked) == sorted(around)
    # A refresh that sees no change leaves them due: they have not been embedded since.
    dg.materialize(ASSETS, selection=REFRESH_ASSETS, **run)
    assert sorted(due_blocks(instance)) == sorted(around)

    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    embedded = 0
    for request in requests:
        kwargs = {"partition_key": request.partition_key, "tags": request.tags}
        result = dg.materialize(ASSETS, selection=[BLOCK_ASSET], **run, **kwargs)
        embedded += sum(meta["embedded"] for meta in metadata(result, BLOCK_ASSET))
    assert embedded == 9 and due_blocks(instance) == []
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert after.get_num_requested(dg.AssetKey(INDEX_ASSET)) == 1  # the index follows
    index = dg.materialize(ASSETS, selection=[INDEX_ASSET], **run)
    assert all(check.passed for check in index.get_asset_check_evaluations())
