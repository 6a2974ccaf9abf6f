"""Incremental embedding: what a refresh plans, and what embedding reports of unusable tiles."""

import pyarrow as pa

from rsloc_assets.gallery.manifest import gallery_manifest
from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.layout import Layout
from rsloc_assets.records import MANIFEST_SCHEMA, MOSAIC
from rsloc_assets.retrieval.refresh import embed_tiles, mosaic_keys, plan_refresh
from rsloc_assets.retrieval.store import TileStore


def manifest_of(keys: list[tuple[int, int, str]]) -> pa.Table:
    rows = [
        {"key": f"15/{c}/{r}", "level": 15, "col": c, "row": r, "time": t}
        | dict.fromkeys(("lon", "lat", "west", "south", "east", "north"), 0.0)
        for c, r, t in keys
    ]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def stored_from(manifest: pa.Table) -> pa.Table:
    """The store's key, time and mosaic columns as a refresh of `manifest` leaves them."""
    keys = manifest["key"].to_pylist()
    mosaics = mosaic_keys(manifest, keys)
    return pa.table({"key": keys, "time": manifest["time"], MOSAIC: [mosaics[k] for k in keys]})


GRID5 = [(c, r, "2023") for c in range(5) for r in range(5)]


def test_plan_embeds_changed_tiles_with_their_neighbours_and_drops_gone_ones():
    manifest = manifest_of(GRID5)
    # Embedded when 2/2 was of 2021 and 9/9, since gone from the gallery, was there.
    before = [(c, r, "2021" if (c, r) == (2, 2) else t) for c, r, t in GRID5] + [(9, 9, "2023")]
    plan = plan_refresh(manifest, stored_from(manifest_of(before)))
    assert plan.changed == 1 and plan.delete == ["15/9/9"]
    assert sorted(r.key for r in plan.embed) == sorted(
        f"15/{c}/{r}" for c in (1, 2, 3) for r in (1, 2, 3)
    )


def test_a_deleted_tile_re_embeds_the_neighbours_whose_mosaics_held_it():
    manifest = manifest_of([row for row in GRID5 if row[:2] != (4, 4)])
    plan = plan_refresh(manifest, stored_from(manifest_of(GRID5)))
    assert plan.changed == 0 and plan.delete == ["15/4/4"]
    assert sorted(r.key for r in plan.embed) == ["15/3/3", "15/3/4", "15/4/3"]


def test_rows_without_a_mosaic_key_are_embedded_again_and_known_corrupt_ones_not():
    manifest = manifest_of(GRID5)
    legacy = stored_from(manifest).set_column(2, MOSAIC, pa.nulls(25, pa.string()))
    plan = plan_refresh(manifest, legacy, skip={"15/0/0"})
    assert len(plan.embed) == 24 and "15/0/0" not in {r.key for r in plan.embed}
    assert plan.changed == 0 and plan.delete == []


def test_tiles_gone_from_the_gallery_are_reported_not_embedded(small_demo, effnet, tmp_path):
    with Gallery.open(Layout(small_demo).gallery) as gallery:
        manifest = gallery_manifest(gallery, 15)
        first = manifest.slice(0, 1).to_pylist()[0]
        present = TileRef(15, first["col"], first["row"], first["time"])
        gone = TileRef(15, 1, 1, first["time"])
        store = TileStore(str(tmp_path / "lancedb"), "t", effnet.dim)
        report = embed_tiles(gallery, [present, gone], manifest, effnet, store)
    assert report.embedded == 1 and store.count() == 1
    assert report.missing_tiles == [gone.key]
