"""The whole asset graph on one data folder, in process on an ephemeral Dagster instance, as a
user's `dagster asset materialize` runs would: gallery, every query partition, evaluation."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import pyarrow.parquet as pq

from bench.common import timed
from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import QUERY_ASSETS, refresh_gallery_in_process
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.metrics import QueryScore, Summary, summarise
from rsloc_assets.layout import Layout
from rsloc_assets.progress import Progress

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class GraphRun:
    """Seconds of the gallery assets (manifest, adapter, descriptor fit, embeddings) and of each
    query's run, and the evaluation's scores."""

    embed_s: float
    wall_s_per_query: float
    scores: list[QueryScore]
    summary: Summary


def _materialize(
    instance: dg.DagsterInstance,
    rsloc: RslocResource,
    selection: Sequence[str],
    partition: str | None = None,
) -> float:
    """Materialize `selection` (of one query partition) on `instance`; its wall seconds."""
    _, ms = timed(
        lambda: dg.materialize(
            list(defs.assets),
            selection=selection,
            partition_key=partition,
            resources={"rsloc": rsloc},
            instance=instance,
            run_config=QUIET,
        )
    )
    return ms / 1e3


def _refresh_gallery(instance: dg.DagsterInstance, rsloc: RslocResource) -> float:
    """The gallery refresh (manifest, adapter, descriptor fit, every block, index); seconds."""
    _, ms = timed(lambda: refresh_gallery_in_process(instance, {"rsloc": rsloc}, QUIET))
    return ms / 1e3


def materialize_gallery(rsloc: RslocResource) -> float:
    """Refresh the gallery on an instance of its own; seconds."""
    with dg.DagsterInstance.ephemeral() as instance:
        return _refresh_gallery(instance, rsloc)


def run_graph(layout: Layout, rsloc: RslocResource) -> GraphRun:
    """Materialize the gallery assets, each query partition, then `evaluation`."""
    # Closed here, in the main thread: left to the garbage collector, its SQLite connections may
    # be finalised in a verification worker thread, which SQLite refuses with a traceback.
    with dg.DagsterInstance.ephemeral() as instance:
        embed_s = _refresh_gallery(instance, rsloc)
        names = layout.query_names()
        instance.add_dynamic_partitions(queries_partitions.name, names)
        progress = Progress("localizing", len(names), "queries")
        walls = []
        for name in names:
            walls.append(_materialize(instance, rsloc, QUERY_ASSETS, name))
            progress.advance()
        _materialize(instance, rsloc, ["evaluation"])
    scores = [QueryScore(**row) for row in pq.read_table(layout.report.table).to_pylist()]
    wall = statistics.fmean(walls) if walls else 0.0
    return GraphRun(embed_s, wall, scores, summarise(scores, len(names)))
