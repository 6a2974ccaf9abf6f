"""The whole asset graph on a small demo world (its north-up queries and turned ones),
materialized with Dagster for real."""

import base64
import json
import statistics

import cv2
import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from osgeo import gdal, ogr

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import QUERY_ASSETS
from rsloc_assets.defs.batches import partition_range_tags
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.overview import MAP_PX
from rsloc_assets.evaluation.preview import PREVIEW_PX, preview_png
from rsloc_assets.evaluation.render import markdown_image
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.geodesy import distance_m
from rsloc_assets.layout import Layout
from rsloc_assets.raster import crop_geotransform, rotated_crop, write_geotiff
from rsloc_assets.records import Stage
from rsloc_assets.retrieval.patches import headings_deg
from rsloc_assets.synthetic.demo import PRESETS, QUERY_SEASON
from rsloc_assets.synthetic.seasons import render
from tests.gallery_runs import metadata, refresh_gallery

ASSETS = list(defs.assets)
# Queries turned counter-clockwise (their x axis this far from east), beside the demo's north-up
# ones: stage 1 embeds every patch at four headings, so these must localize too.
TURNED = {"turned037": 37.0, "turned090": 90.0, "turned180": 180.0}


def write_turned_queries(layout: Layout) -> None:
    """The `TURNED` queries: 4 × 5 km at the small world's centre on the queries' season,
    blurred and noised, each with its true (turned) georeference."""
    spec = PRESETS["small"].world
    image = render(spec, QUERY_SEASON)
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    size = (round(4000 / spec.gsd_m), round(5000 / spec.gsd_m))
    rng = np.random.default_rng(0)
    for name, turn in TURNED.items():
        crop, pose = rotated_crop(image, centre, size, turn)
        noisy = cv2.GaussianBlur(crop, (0, 0), 0.7) + rng.normal(0.0, 4.0, crop.shape)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
        gt = crop_geotransform(spec.geotransform, pose)
        write_geotiff(layout.queries / f"{name}.tif", pixels, gt, spec.epsg)


@pytest.fixture(scope="module")
def world(small_layout):
    layout = small_layout
    write_turned_queries(layout)
    settings = {"data_dir": str(layout.root), "top_k": 100, "index_min_rows": 1_000_000}
    # The demo's north-up queries at one heading, the turned ones at the default four: each
    # heading embeds every patch once more (four for all would add ~40 s on 2 busy cores).
    rsloc = RslocResource(**settings, query_headings=1)
    turned = RslocResource(**settings)
    instance = dg.DagsterInstance.ephemeral()
    assert refresh_gallery(rsloc, instance).passed
    names = layout.query_names()
    instance.add_dynamic_partitions(queries_partitions.name, names)
    # Each kind of query as one run of several partitions, as a backfill runs them.
    north_up = [n for n in names if n not in TURNED]
    for group, resource in ((north_up, rsloc), (sorted(TURNED), turned)):
        result = dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            tags=partition_range_tags(group[0], group[-1]),
            resources={"rsloc": resource},
            instance=instance,
        )
        assert result.success
    result = dg.materialize(
        ASSETS, selection=["evaluation"], resources={"rsloc": rsloc}, instance=instance
    )
    assert result.success
    return layout, rsloc, instance


def test_most_queries_land_within_one_tile(world):
    layout, _, _ = world
    scores = pq.read_table(layout.reports / "evaluation.parquet").to_pylist()
    assert len(scores) == len(layout.query_names()) >= 3
    within = sum(s["within_1_tile"] for s in scores)
    assert within > len(scores) / 2, scores
    assert (layout.reports / "map.png").stat().st_size > 10_000
    assert "within 1 tile" in (layout.reports / "evaluation.md").read_text()


def test_the_evaluation_shows_its_map_of_footprints_over_the_gallery(world):
    """The UI's `evaluation` page carries the map: gallery imagery, estimates red, truths green."""
    layout, _, instance = world
    event = instance.get_latest_materialization_event(dg.AssetKey("evaluation"))
    markdown = event.asset_materialization.metadata["map"].value
    prefix = "data:image/png;base64,"
    start = markdown.index(prefix) + len(prefix)
    png = base64.b64decode(markdown[start : markdown.index(")", start)])
    assert png == (layout.reports / "map.png").read_bytes()
    image = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert image.shape[0] == MAP_PX
    red = (image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 170) & (image[..., 0] < 80) & (image[..., 2] < 100)
    assert red.sum() > 500 and green.sum() > 500
    # The gallery's own imagery under the footprints, not an empty canvas.
    h, w = image.shape[:2]
    assert image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean() > 40


def test_all_footprints_are_one_layer_that_ogr_opens(world):
    """QGIS reads what OGR reads: one polygon per localized query with its method and errors."""
    layout, _, _ = world
    source = ogr.Open(str(layout.report.footprints))
    assert source is not None and source.GetLayerCount() == 1
    layer = source.GetLayer(0)
    features = list(layer)
    assert len(features) == len(layout.query_names())
    for feature in features:
        assert feature.GetGeometryRef().GetGeometryName() == "POLYGON"
        assert feature.GetField("method") in {"verified", "clique", "retrieval-vote"}
        assert feature.GetField("error_m") is not None
    verified = [f for f in features if f.GetField("method") == "verified"]
    assert verified and all(f.GetField("error_m") < 100 for f in verified)


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
    run = refresh_gallery(rsloc, instance)
    assert run.blocks == {}  # nothing changed since the gallery was embedded: no block runs
    assert run.assets["tile_index"]["rows"] == tiles and run.passed


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


def _materialize_crop(world, name: str, size_m: tuple[float, float]):
    """Materialize the query assets of a crop of the first query's centre, `size_m` on the
    ground, as query `name` (removed afterwards); the run result."""
    layout, rsloc, instance = world
    src = layout.query_file(layout.query_names()[0])
    ds = gdal.Open(str(src))
    gsd = ds.GetGeoTransform()[1]
    w, h = (round(v / gsd) for v in size_m)
    x0, y0 = (ds.RasterXSize - w) // 2, (ds.RasterYSize - h) // 2
    crop = layout.queries / f"{name}.tif"
    gdal.Translate(str(crop), ds, srcWin=[x0, y0, w, h])
    try:
        instance.add_dynamic_partitions(queries_partitions.name, [name])
        return dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            partition_key=name,
            resources={"rsloc": rsloc},
            instance=instance,
        )
    finally:
        crop.unlink()


def test_query_smaller_than_a_patch_is_localized_as_one_patch(world):
    """A 1.9 × 1.7 km query, smaller than one 3 × 3 mosaic (≈ 2.4 km), is one whole-image patch:
    its best tiles are the hypotheses verification tries."""
    layout, _, _ = world
    src = layout.query_file(layout.query_names()[0])
    truth = read_truth(src)
    result = _materialize_crop(world, "small", (1900.0, 1700.0))
    assert result.success
    assert metadata(result, "query_patches")[-1]["patches"] == 1
    meta = metadata(result, "verified_localization")[-1]
    assert meta["method"] == "verified"
    lon, lat = json.loads(meta["centre_lonlat"])
    assert distance_m(lon, lat, *truth.centre_lonlat) < 100.0


def test_query_under_one_tile_of_ground_is_a_recorded_skip(world):
    result = _materialize_crop(world, "tiny", (500.0, 500.0))
    assert result.success
    meta = metadata(result, "localization")[-1]
    assert meta["method"] == "not-localized"
    assert "less than one gallery tile" in meta["reason"]


def test_a_verified_footprint_is_in_its_metadata_rounded(world):
    layout, _, instance = world
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("verified_localization"),
            asset_partitions=[layout.query_names()[0]],
        ),
        limit=1,
    ).records
    meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    assert meta["method"] == "verified"
    corners = json.loads(meta["corners_lonlat"])
    assert len(corners) == 4 and all(len(c) == 2 for c in corners)
    values = [*json.loads(meta["centre_lonlat"]), *(v for c in corners for v in c)]
    assert all(round(v, 6) == v for v in values)
    assert round(meta["error_estimate_m"], 1) == meta["error_estimate_m"]
    assert meta["seconds"] > 0


def test_a_bad_query_fails_its_run_with_the_one_line_reason(world):
    layout, rsloc, instance = world
    image = layout.queries / "badside.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 90, np.uint8))
    (layout.queries / "badside.json").write_text("[1, 2]")
    try:
        instance.add_dynamic_partitions(queries_partitions.name, ["badside"])
        result = dg.materialize(
            ASSETS,
            selection=QUERY_ASSETS,
            partition_key="badside",
            resources={"rsloc": rsloc},
            instance=instance,
            raise_on_error=False,
        )
    finally:
        image.unlink()
        (layout.queries / "badside.json").unlink()
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "badside.json" in failure.description and "\n" not in failure.description
    # The steps that do not run say so, and why.
    messages = [e.message for e in instance.all_logs(result.run_id)]
    skipped = [m for m in messages if "will not run for badside" in m]
    assert skipped and "candidates, cliques, localization, verified_localization" in skipped[0]
    assert failure.description in skipped[0]


def _corner_error_m(corners: list[tuple[float, float]], truth: list[tuple[float, float]]) -> float:
    e, t = np.array(corners), np.array(truth)
    return float(np.mean(distance_m(e[:, 0], e[:, 1], t[:, 0], t[:, 1])))


@pytest.mark.parametrize("name", TURNED)
def test_a_turned_query_localizes_with_its_corners_in_place(world, name):
    """Stage 2 puts a turned query within a tile, its footprint turned the right way; the verified
    footprint's corners (TL, TR, BR, BL) match those of the query's own turned georeference."""
    layout, _, _ = world
    scores = {
        s["query"]: s for s in pq.read_table(layout.reports / "evaluation.parquet").to_pylist()
    }
    score, work = scores[name], layout.query(name)
    assert work.patches()[1].headings == headings_deg(RslocResource().query_headings)
    truth = read_truth(layout.query_file(name))
    assert score["cliques_error_m"] <= score["tile_m"], score
    stage2 = work.localization(Stage.CLIQUES)
    assert _corner_error_m(stage2.corners_lonlat, truth.corners_lonlat) < 2 * score["tile_m"]
    assert score["method"] == "verified" and score["corner_error_m"] < 30.0, score
    turn = work.verification().footprint["rotation_deg"]
    assert abs((turn - TURNED[name] + 180) % 360 - 180) < 2.0


def test_the_preview_shows_the_query_beside_the_gallery_under_its_footprint(world):
    layout, _, _ = world
    name = layout.query_names()[0]
    record = layout.query(name).verification()
    truth = read_truth(layout.query_file(name))
    png = preview_png(layout, name, record.estimate.corners_lonlat, truth.corners_lonlat)
    image = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert image.shape[0] == PREVIEW_PX and image.shape[1] > 2 * PREVIEW_PX * 0.6
    red = (image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 170) & (image[..., 0] < 80) & (image[..., 2] < 100)
    assert red.sum() > 100 and green.sum() > 100  # both outlines drawn
    assert markdown_image(png, name).startswith(f"![{name}](data:image/png;base64,")
