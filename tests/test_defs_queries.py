"""The whole asset graph on a small demo world, materialized with Dagster for real."""

import json
import statistics

import dagster as dg
import pyarrow.parquet as pq
import pytest
from osgeo import gdal

from rsloc_assets.defs import defs
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource

ASSETS = list(defs.assets)
QUERY_ASSETS = [
    "query_patches",
    "candidates",
    "cliques",
    "localization",
    "verified_localization",
]


@pytest.fixture(scope="module")
def world(small_layout):
    layout = small_layout
    rsloc = RslocResource(data_dir=str(layout.root), top_k=100, index_min_rows=1_000_000)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ASSETS,
        selection=["gallery_tiles", "tile_embeddings"],
        resources={"rsloc": rsloc},
        instance=instance,
    )
    assert result.success
    instance.add_dynamic_partitions(queries_partitions.name, layout.query_names())
    for name in layout.query_names():
        result = dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            partition_key=name,
            resources={"rsloc": rsloc},
            instance=instance,
        )
        assert result.success
    result = dg.materialize(
        ASSETS, selection=["evaluation"], resources={"rsloc": rsloc}, instance=instance
    )
    assert result.success
    return layout, rsloc, instance


def _metadata(result, key):
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key.path == [key]]
    return mats[-1].materialization.metadata


def test_most_queries_land_within_one_tile(world):
    layout, _, _ = world
    scores = pq.read_table(layout.reports / "evaluation.parquet").to_pylist()
    assert len(scores) == len(layout.query_names()) >= 3
    within = sum(s["within_1_tile"] for s in scores)
    assert within > len(scores) / 2, scores
    assert (layout.reports / "map.png").stat().st_size > 10_000
    assert "within 1 tile" in (layout.reports / "evaluation.md").read_text()


def test_verified_footprints_beat_retrieval_alone(world):
    """Verification turns tile-level guesses into metre-level footprints on the demo world."""
    layout, _, _ = world
    scores = pq.read_table(layout.reports / "evaluation.parquet").to_pylist()
    verified = [s for s in scores if s["method"] == "verified"]
    assert len(verified) >= len(scores) - 1
    final = statistics.median(s["error_m"] for s in scores)
    retrieval = statistics.median(s["retrieval_error_m"] for s in scores)
    assert final < 25.0, scores  # metres; retrieval alone lands hundreds of metres off
    assert final < retrieval / 10, (final, retrieval)
    assert statistics.median(s["corner_error_m"] for s in verified) < 30.0
    for s in verified:
        geojson = json.loads(layout.query(s["query"]).footprint_path.read_text())
        ring = geojson["features"][0]["geometry"]["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]


def test_verification_records_the_hypothesis_it_chose(world):
    """Stage 2 hands ranked hypotheses to verification; the winner is recorded with every one
    tried, and its accepted matches are the ones scored."""
    layout, _, _ = world
    for name in layout.query_names():
        work = layout.query(name)
        tiles, ranked = work.hypotheses()
        record = work.verification()
        if not ranked:
            continue
        assert [h.rank for h in ranked] == list(range(len(ranked)))
        assert [h.evidence for h in ranked] == sorted((h.evidence for h in ranked), reverse=True)
        assert set(tiles["hypothesis"].to_pylist()) == set(range(len(ranked)))
        tried = [t["hypothesis"] for t in record.hypotheses_tried]
        assert tried == list(range(len(tried))) and 1 <= len(tried) <= 5
        if record.verified:
            best = max(t["patches_agreeing"] for t in record.hypotheses_tried)
            winner = record.hypotheses_tried[record.hypothesis]
            assert winner["patches_agreeing"] == best == record.estimate.support
            matches = work.matches().to_pylist()
            assert {m["hypothesis"] for m in matches} == set(tried)


def test_embeddings_are_complete_and_refresh_is_incremental(world):
    layout, rsloc, instance = world
    tiles = pq.read_table(layout.manifest).num_rows
    result = dg.materialize(
        ASSETS,
        selection=["gallery_tiles", "tile_embeddings"],
        resources={"rsloc": rsloc},
        instance=instance,
    )
    meta = _metadata(result, "tile_embeddings")
    assert meta["embedded"].value == 0
    assert meta["rows"].value == tiles
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def test_rematerializing_one_partition_touches_only_its_outputs(world):
    layout, rsloc, instance = world
    first, other = layout.query_names()[:2]
    before = layout.query(other).localization_path.stat().st_mtime_ns
    rows_before = layout.query(first).candidates().num_rows
    result = dg.materialize(
        ASSETS,
        selection=QUERY_ASSETS,
        partition_key=first,
        resources={"rsloc": rsloc},
        instance=instance,
    )
    assert result.success
    assert layout.query(other).localization_path.stat().st_mtime_ns == before
    assert layout.query(first).candidates().num_rows == rows_before
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_query_smaller_than_a_patch_is_a_recorded_skip(world):
    layout, rsloc, instance = world
    src = layout.query_file(layout.query_names()[0])
    tiny = layout.queries / "tiny.tif"
    gdal.Translate(str(tiny), str(src), srcWin=[0, 0, 64, 64])
    try:
        instance.add_dynamic_partitions(queries_partitions.name, ["tiny"])
        result = dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            partition_key="tiny",
            resources={"rsloc": rsloc},
            instance=instance,
        )
    finally:
        tiny.unlink()
    assert result.success
    meta = _metadata(result, "localization")
    assert meta["method"].value == "not-localized"
    assert "smaller than one patch" in meta["reason"].value
