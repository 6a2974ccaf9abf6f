"""Automation: a run for each new or changed query image, nothing otherwise; evaluation after
query runs."""

import os

import dagster as dg
import pytest

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import new_query_files
from rsloc_assets.defs.batches import SENSOR_QUERIES_PER_RUN, contiguous_runs
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from tests.gallery_runs import requested

ASSETS = list(defs.assets)


@pytest.fixture(scope="module")
def small_world(small_layout):
    return small_layout, RslocResource(data_dir=str(small_layout.root))


def test_runs_cover_adjacent_partitions_at_most_so_many_each():
    order = [f"q{i}" for i in range(10)]
    due = ["q0", "q1", "q2", "q4", "q5", "q9"]
    assert contiguous_runs(order, due, 2) == [["q0", "q1"], ["q2"], ["q4", "q5"], ["q9"]]
    assert contiguous_runs(order, due, 40) == [["q0", "q1", "q2"], ["q4", "q5"], ["q9"]]
    assert contiguous_runs(order, [], 40) == []


def test_a_burst_of_images_is_runs_of_at_most_40(small_world, tmp_path):
    layout, _ = small_world
    instance = dg.DagsterInstance.ephemeral()
    queries = tmp_path / "data" / "queries"
    queries.mkdir(parents=True)
    source = layout.query_file(layout.query_names()[0])
    names = [f"burst{i:03d}" for i in range(SENSOR_QUERIES_PER_RUN * 2 + 5)]
    for name in names:
        os.link(source, queries / f"{name}{source.suffix}")  # one image, many names
    many = RslocResource(data_dir=str(tmp_path / "data"))
    result = new_query_files(dg.build_sensor_context(instance=instance, resources={"rsloc": many}))
    instance.add_dynamic_partitions(queries_partitions.name, names)
    runs = [requested(r, instance, queries_partitions.name) for r in result.run_requests]
    assert [len(r) for r in runs] == [SENSOR_QUERIES_PER_RUN, SENSOR_QUERIES_PER_RUN, 5]
    assert [n for r in runs for n in r] == names
    assert len({r.run_key for r in result.run_requests}) == 3


def test_sensor_registers_new_and_changed_query_images(small_world, tmp_path):
    layout, rsloc = small_world
    instance = dg.DagsterInstance.ephemeral()
    names = layout.query_names()

    result = new_query_files(dg.build_sensor_context(instance=instance, resources={"rsloc": rsloc}))
    assert result.dynamic_partitions_requests[0].partition_keys == names
    instance.add_dynamic_partitions(queries_partitions.name, names)
    # All new images in one run: its tags name the range of partitions, as a backfill's do.
    (request,) = result.run_requests
    assert request.partition_key is None
    assert requested(request, instance, queries_partitions.name) == names

    context = dg.build_sensor_context(
        instance=instance, cursor=result.cursor, resources={"rsloc": rsloc}
    )
    assert isinstance(new_query_files(context), dg.SkipReason)

    path = layout.query_file(names[0])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = new_query_files(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"rsloc": rsloc})
    )
    assert [r.partition_key for r in again.run_requests] == [names[0]]
    assert not again.dynamic_partitions_requests

    sidecar = path.with_suffix(".json")
    sidecar.write_text('{"gsd_m": 7.6}')  # a new sidecar is a change too
    later_ns = path.stat().st_mtime_ns + 10**9
    os.utime(sidecar, ns=(later_ns, later_ns))
    try:
        later = new_query_files(
            dg.build_sensor_context(
                instance=instance, cursor=again.cursor, resources={"rsloc": rsloc}
            )
        )
    finally:
        sidecar.unlink()
    assert [r.partition_key for r in later.run_requests] == [names[0]]

    empty = RslocResource(data_dir=str(tmp_path))
    skip = new_query_files(dg.build_sensor_context(instance=instance, resources={"rsloc": empty}))
    assert isinstance(skip, dg.SkipReason)


def test_a_fresh_cursor_reruns_nothing_already_localized(small_world):
    """On a fresh instance's first tick (empty cursor) the images are registered, but a partition
    localized after its image last changed is not run again."""
    layout, rsloc = small_world
    instance = dg.DagsterInstance.ephemeral()
    names = layout.query_names()
    instance.add_dynamic_partitions(queries_partitions.name, names)
    for name in names[1:]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="verified_localization", partition=name)
        )
    result = new_query_files(dg.build_sensor_context(instance=instance, resources={"rsloc": rsloc}))
    assert [r.partition_key for r in result.run_requests] == names[:1]
    assert not result.dynamic_partitions_requests


def test_evaluation_follows_a_query_run():
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(queries_partitions.name, ["a", "b"])
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="verified_localization", partition="a")
    )
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(dg.AssetKey("evaluation")) == 1
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert before.total_requested == 0  # nothing localized yet: nothing to evaluate
    assert after.total_requested == 1  # evaluation only, no query is re-run
    assert again.get_num_requested(dg.AssetKey("evaluation")) == 0  # once per update
