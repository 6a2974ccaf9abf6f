"""A gallery with two levels end to end, materialized with Dagster for real: one embedding table
per level, and each query working at the level nearest its ground resolution."""

import json

import dagster as dg
import pytest
from osgeo import gdal

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import QUERY_ASSETS
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.geodesy import distance_m
from rsloc_assets.synthetic.demo import DEMO_GRID, DEMO_ZOOM, GALLERY_TIME
from tests.gallery_runs import metadata, refresh_gallery

ASSETS = list(defs.assets)


@pytest.fixture(scope="module")
def two_levels(small_layout):
    """The small demo's z15 gallery with z14 added, and its first query at its own ≈ 7.7 m/px
    (nearest z14's 7.8 m) and resampled to half that (nearest z15's 3.9 m)."""
    layout = small_layout
    world = layout.world / "world_summer.tif"
    build_gallery([world], layout.gallery, grid=DEMO_GRID, zoom=DEMO_ZOOM - 1, time=GALLERY_TIME)
    first = layout.query_names()[0]
    for name in layout.query_names()[1:]:
        layout.query_file(name).unlink()
    src = gdal.Open(str(layout.query_file(first)))
    fine = layout.queries / "fine.tif"
    gdal.Translate(
        str(fine),
        src,
        width=2 * src.RasterXSize,
        height=2 * src.RasterYSize,
        resampleAlg="cubic",
    )
    rsloc = RslocResource(data_dir=str(layout.root), top_k=50, query_headings=1)
    instance = dg.DagsterInstance.ephemeral()
    gallery = refresh_gallery(rsloc, instance)
    instance.add_dynamic_partitions(queries_partitions.name, layout.query_names())
    runs = {
        name: dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            partition_key=name,
            resources={"rsloc": rsloc},
            instance=instance,
        )
        for name in layout.query_names()
    }
    return layout, gallery, runs, first


def test_each_level_has_its_own_table(two_levels):
    layout, gallery, _, _ = two_levels
    levels = layout.gallery_levels()
    assert [info.zoom for info in levels] == [DEMO_ZOOM, DEMO_ZOOM - 1]
    meta = gallery.assets["tile_index"]
    assert sorted(t.rsplit("_", 1)[1] for t in meta["tables"].split(", ")) == ["z14", "z15"]
    assert meta["rows"] == sum(info.tiles for info in levels) == gallery.total("embedded")
    assert {block.split("-")[0] for block in gallery.blocks} == {"z14", "z15"}
    assert gallery.passed


@pytest.mark.parametrize(("name", "zoom"), [("first", DEMO_ZOOM - 1), ("fine", DEMO_ZOOM)])
def test_a_query_works_at_the_level_nearest_its_resolution(two_levels, name, zoom):
    layout, _, runs, first = two_levels
    name = first if name == "first" else name
    result = runs[name]
    assert result.success
    assert metadata(result, "query_patches")[-1]["zoom"] == zoom
    assert layout.query(name).patch_meta().gallery.zoom == zoom
    keys = layout.query(name).candidates()["key"].to_pylist()
    assert keys and all(k.startswith(f"{zoom}/") for k in keys)
    meta = metadata(result, "verified_localization")[-1]
    truth = read_truth(layout.query_file(name))
    lon, lat = json.loads(meta["centre_lonlat"])
    tile_m = min(layout.gallery_info(zoom).tile_ground_m)
    assert distance_m(lon, lat, *truth.centre_lonlat) < tile_m, meta
