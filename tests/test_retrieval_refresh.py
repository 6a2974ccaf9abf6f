"""Incremental embedding: what a refresh plans, and what embedding reports of unusable tiles."""

import pyarrow as pa

from rsloc_assets.gallery.manifest import gallery_manifest
from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.layout import Layout
from rsloc_assets.records import MANIFEST_SCHEMA
from rsloc_assets.retrieval.refresh import embed_tiles, plan_refresh
from rsloc_assets.retrieval.store import TileStore


def manifest_of(keys: list[tuple[int, int, str]]) -> pa.Table:
    rows = [
        {"key": f"15/{c}/{r}", "level": 15, "col": c, "row": r, "time": t}
        | dict.fromkeys(("lon", "lat", "west", "south", "east", "north"), 0.0)
        for c, r, t in keys
    ]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def test_plan_embeds_changed_tiles_with_their_neighbours_and_drops_gone_ones():
    manifest = manifest_of([(c, r, "2023") for c in range(5) for r in range(5)])
    stored = {f"15/{c}/{r}": "2023" for c in range(5) for r in range(5)}
    stored["15/2/2"] = "2021"  # re-dated in the gallery since
    stored["15/9/9"] = "2023"  # gone from the gallery
    plan = plan_refresh(manifest, stored)
    assert plan.changed == 1 and plan.delete == ["15/9/9"]
    assert sorted(r.key for r in plan.embed) == sorted(
        f"15/{c}/{r}" for c in (1, 2, 3) for r in (1, 2, 3)
    )


def test_a_deleted_tile_re_embeds_the_neighbours_whose_mosaics_held_it():
    manifest = manifest_of([(c, r, "2023") for c in range(5) for r in range(5) if (c, r) != (4, 4)])
    stored = {f"15/{c}/{r}": "2023" for c in range(5) for r in range(5)}
    plan = plan_refresh(manifest, stored)
    assert plan.changed == 0 and plan.delete == ["15/4/4"]
    assert sorted(r.key for r in plan.embed) == ["15/3/3", "15/3/4", "15/4/3"]


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
