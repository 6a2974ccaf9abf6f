"""Several query partitions in one run: a query asset's body runs once per partition key of its
run, so a backfill or a sensor burst opens the encoder, the store and the gallery once per run,
not once per query."""

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from rsloc_assets.defs.failures import USER_ERRORS, one_line
from rsloc_assets.layout import Layout
from rsloc_assets.progress import Progress

# Partitions per run when a backfill is split over several runs (multi-worker deployments set them
# in the environment of the code location: each run goes to a worker of its own). Unset: one run
# for the whole backfill, as `dg launch --partition-range` needs.
QUERIES_PER_RUN_ENV = "RSLOC_QUERIES_PER_RUN"
BLOCKS_PER_RUN_ENV = "RSLOC_BLOCKS_PER_RUN"

# Queries per run the sensor asks for in one request: a burst of 500 new images is 13 runs.
SENSOR_QUERIES_PER_RUN = 40
# Gallery blocks per run the block sensor asks for: 16 blocks of 1,024 tiles ≈ 9 min at the
# default encoder's ≈ 30 mosaics/s on this 2-core machine, so a first embedding of 800 blocks is
# 50 runs that workers take in parallel.
SENSOR_BLOCKS_PER_RUN = 16


# Dagster 1.13 marks `backfill_policy` beta: the asset decorator would warn once per asset.
warnings.filterwarnings("ignore", "Parameter `backfill_policy`", dg.BetaWarning)


def backfill_policy(env: str) -> dg.BackfillPolicy:
    """One run for all of a backfill's partitions, or runs of as many as the variable `env`
    says."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return dg.BackfillPolicy.single_run()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{env}={raw!r}: expected a whole number ≥ 1")
    return dg.BackfillPolicy.multi_run(int(raw))


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """The tags of one run of the partitions `first`…`last`, as a backfill tags its runs (the
    names are Dagster's own, not public in 1.13)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def for_each_query(
    context: dg.AssetExecutionContext, layout: Layout, step: Callable[[str], Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """Run `step(name)` for every query of the run and record the metadata it returns on that
    query's partition; returns it by query, for the queries that succeeded.

    A query whose step fails on bad input loses its outputs from this step on, so no later
    step (nor the evaluation) reads what an earlier run left. A run of one query then fails as
    any step does; in a run of several, the query is logged with its one-line reason and recorded
    `failed` on its partition, and the others go on: the run fails only when every query did."""
    names = context.partition_keys
    asset = context.asset_key.to_user_string()
    several = len(names) > 1
    progress = Progress(asset, len(names), unit="queries", logger=context.log)
    done: dict[str, Mapping[str, Any]] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            meta = step(name)
        except USER_ERRORS as err:
            _discard(layout, name, asset)
            if not several:
                raise
            failed[name] = one_line(err)
            context.log.error("%s failed for %s: %s", asset, name, failed[name])
            meta = {"failed": failed[name]}
        else:
            done[name] = meta
        context.add_asset_metadata(dict(meta), partition_key=name)
        if several:
            progress.advance()
    if not done:
        raise dg.Failure(description=_failed_line(failed), allow_retries=False)
    if failed:
        context.log.warning("%s: %s", asset, _failed_line(failed))
    return done


def _discard(layout: Layout, name: str, asset: str) -> None:
    """Delete the query's outputs of `asset` and later steps; a name that cannot name a work
    folder has none."""
    try:
        work = layout.query(name)
    except ValueError:
        return
    work.discard_from(asset)


def _failed_line(failed: Mapping[str, str]) -> str:
    """E.g. "2 queries failed: q003 (…), q017 (…)"."""
    listed = ", ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
    return f"{len(failed)} {'query' if len(failed) == 1 else 'queries'} failed: {listed}"


def contiguous_runs(order: Sequence[str], due: Sequence[str], most: int) -> list[list[str]]:
    """The `due` partitions in runs of partitions adjacent in `order` (the partitions' own
    order), each at most `most` long: what one ranged run each can take."""
    wanted = set(due)
    runs: list[list[str]] = []
    previous = -2
    for position, name in enumerate(order):
        if name not in wanted:
            continue
        if position == previous + 1 and len(runs[-1]) < most:
            runs[-1].append(name)
        else:
            runs.append([name])
        previous = position
    return runs
