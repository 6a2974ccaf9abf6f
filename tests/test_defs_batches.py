"""Several query partitions in one run, with Dagster for real: the same files as one run per
query, each partition's metadata its own, and a bad query recorded without stopping the rest."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pytest

from bench.common import snapshot
from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import QUERY_ASSETS
from rsloc_assets.defs.batches import QUERIES_PER_RUN_ENV, backfill_policy, partition_range_tags
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from tests.gallery_runs import refresh_gallery

ASSETS = list(defs.assets)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedded(small_layout):
    layout = small_layout
    rsloc = RslocResource(
        data_dir=str(layout.root), top_k=100, index_min_rows=1_000_000, query_headings=1
    )
    instance = dg.DagsterInstance.ephemeral()
    assert refresh_gallery(rsloc, instance).passed
    instance.add_dynamic_partitions(queries_partitions.name, layout.query_names())
    return layout, rsloc, instance


def _run(embedded, **how) -> dg.ExecuteInProcessResult:
    _, rsloc, instance = embedded
    return dg.materialize(
        ASSETS,
        selection=QUERY_ASSETS,
        resources={"rsloc": rsloc},
        instance=instance,
        raise_on_error=False,
        **how,
    )


def _latest(instance, asset: str, name: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[name]), limit=1
    ).records
    assert records, (asset, name)
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_a_run_of_several_queries_leaves_what_one_run_each_leaves(embedded):
    layout, _, instance = embedded
    first, second = layout.query_names()[:2]
    alone = {}
    for name in (first, second):
        assert _run(embedded, partition_key=name).success
        alone[name] = snapshot(layout.query(name).folder)
    result = _run(embedded, tags=partition_range_tags(first, second))
    assert result.success
    assert len(result.get_asset_materialization_events()) == 2 * len(QUERY_ASSETS)
    for name in (first, second):
        assert snapshot(layout.query(name).folder) == alone[name]
        # Each partition carries its own query's figures, not the run's.
        meta = _latest(instance, "verified_localization", name)
        assert meta["method"] == "verified"
        assert _latest(instance, "query_patches", name)["patches"] > 1
    centres = {_latest(instance, "verified_localization", n)["centre_lonlat"] for n in alone}
    assert len(centres) == 2


def test_a_bad_query_among_several_is_recorded_and_the_rest_land(embedded):
    layout, _, instance = embedded
    done, good = layout.query_names()[0], layout.query_names()[-1]
    bad = "zz_bad"
    cv2.imwrite(str(layout.queries / f"{bad}.png"), np.full((64, 64, 3), 90, np.uint8))
    (layout.queries / f"{bad}.json").write_text("[1, 2]")
    # What an earlier, good run of this name left: no step after the failure may read it.
    shutil.copytree(layout.query(done).folder, layout.query(bad).folder)
    instance.add_dynamic_partitions(queries_partitions.name, [bad])
    result = _run(embedded, tags=partition_range_tags(good, bad))
    assert result.success
    assert _latest(instance, "verified_localization", good)["method"] == "verified"
    assert f"{bad}.json" in _latest(instance, "query_patches", bad)["failed"]
    later = _latest(instance, "verified_localization", bad)["failed"]
    assert "materialize" in later and "\n" not in later
    assert not any(layout.query(bad).folder.iterdir())

    alone = _run(embedded, tags=partition_range_tags(bad, bad))
    assert not alone.success  # a run whose every query fails, fails
    failure = alone.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"{bad}.json" in failure.description and "\n" not in failure.description


def test_backfills_are_one_run_unless_the_deployment_splits_them(monkeypatch):
    monkeypatch.delenv(QUERIES_PER_RUN_ENV, raising=False)
    assert backfill_policy(QUERIES_PER_RUN_ENV) == dg.BackfillPolicy.single_run()
    monkeypatch.setenv(QUERIES_PER_RUN_ENV, "25")
    assert backfill_policy(QUERIES_PER_RUN_ENV) == dg.BackfillPolicy.multi_run(25)
    for bad in ("0", "-3", "ten"):
        monkeypatch.setenv(QUERIES_PER_RUN_ENV, bad)
        with pytest.raises(ValueError, match=QUERIES_PER_RUN_ENV):
            backfill_policy(QUERIES_PER_RUN_ENV)


def test_the_workers_instance_loads_with_backfills_in_runs_of_40(tmp_path):
    """`dagster_home/workers` (README, Beyond one machine) is an instance Dagster loads, and with
    `RSLOC_QUERIES_PER_RUN=40` the definitions split backfills into runs of 40 queries."""
    shutil.copy(REPO / "dagster_home" / "workers" / "dagster.yaml", tmp_path / "dagster.yaml")
    probe = (
        "import dagster as dg\n"
        "from rsloc_assets.defs import defs\n"
        "queue = dg.DagsterInstance.get().run_coordinator.get_run_queue_config()\n"
        "nodes = [n for n in defs.resolve_asset_graph().asset_nodes if n.partitions_def]\n"
        "print(queue.max_concurrent_runs, {str(n.backfill_policy) for n in nodes})"
    )
    env = os.environ | {"DAGSTER_HOME": str(tmp_path), QUERIES_PER_RUN_ENV: "40"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "4"
    assert "multi_run(max_partitions_per_run=40)" in done.stdout
