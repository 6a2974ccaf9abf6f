"""Jobs, the query-folder sensor and the nightly gallery refresh schedule."""

import hashlib
import json

import dagster as dg

from rsloc_assets.defs.batches import SENSOR_QUERIES_PER_RUN, contiguous_runs, partition_range_tags
from rsloc_assets.defs.gallery import (
    descriptor_model,
    gallery_adapter,
    gallery_tiles,
    tile_embeddings,
)
from rsloc_assets.defs.partitions import PARTITIONS_HINT, queries_partitions
from rsloc_assets.defs.queries import (
    candidates,
    cliques,
    localization,
    query_patches,
    verified_localization,
)
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.layout import Layout

# The two chains a user materializes, by name: one gallery refresh, one query (the jobs below;
# the tests and benchmarks run the same).
GALLERY_ASSETS = tuple(
    a.key.to_user_string()
    for a in (gallery_tiles, gallery_adapter, descriptor_model, tile_embeddings)
)
QUERY_ASSETS = tuple(
    a.key.to_user_string()
    for a in (query_patches, candidates, cliques, localization, verified_localization)
)

localize_query_job = dg.define_asset_job(
    "localize_query",
    selection=dg.AssetSelection.assets(*QUERY_ASSETS),
    partitions_def=queries_partitions,
    description="The queries group, one or many query partitions a run: patches → candidates →"
    " cliques → localization → verification (`evaluation` follows by itself). A backfill runs"
    " all its queries in one run (or runs of `RSLOC_QUERIES_PER_RUN`). " + PARTITIONS_HINT,
)

refresh_gallery_job = dg.define_asset_job(
    "refresh_gallery",
    selection=dg.AssetSelection.assets(*GALLERY_ASSETS),
    description="The gallery group: re-read the gallery into its manifest, refit its adapter and"
    " descriptor when the settings ask for them, and embed new or changed tiles in LanceDB"
    " (everything, after a refit).",
)

nightly_gallery_refresh = dg.ScheduleDefinition(
    name="nightly_gallery_refresh",
    job=refresh_gallery_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-reads the gallery at 03:00 and embeds only the tiles that changed",
)


def register_queries(instance: dg.DagsterInstance, layout: Layout) -> list[str]:
    """Add a dynamic partition for each query image not yet registered; returns the new names."""
    known = set(instance.get_dynamic_partitions(queries_partitions.name))
    new = [name for name in layout.query_names() if name not in known]
    if new:
        instance.add_dynamic_partitions(queries_partitions.name, new)
    return new


def latest_localizations(instance: dg.DagsterInstance, names: list[str]) -> dict[str, float]:
    """Each named partition's latest `verified_localization` materialization time (Unix s)."""
    if not names:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=verified_localization.key, asset_partitions=names),
        limit=len(names) * 20,
    ).records
    latest: dict[str, float] = {}
    for record in records:
        name = record.partition_key
        if name is not None:
            latest[name] = max(latest.get(name, 0.0), record.timestamp)
    return latest


@dg.sensor(
    job=localize_query_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A partition for each new query image, and runs (up to 40 adjacent queries each)"
    " for the images that are new or whose image or <name>.json sidecar changed since their"
    " partition was last localized",
)
def new_query_files(context: dg.SensorEvaluationContext, rsloc: RslocResource):
    """Register every query image as a partition and localize the ones that are new or changed
    (image or sidecar newer than the partition's latest `verified_localization`); on a fresh
    instance's first tick nothing already localized is run again."""
    seen = json.loads(context.cursor) if context.cursor else {}
    stamps = rsloc.layout().query_stamps()
    changed = [name for name, stamp in stamps.items() if seen.get(name) != stamp]
    known = set(context.instance.get_dynamic_partitions(queries_partitions.name))
    latest = latest_localizations(context.instance, [n for n in changed if n in known])
    due = [n for n in changed if n not in latest or stamps[n] / 1e9 > latest[n]]
    new = [name for name in stamps if name not in known]
    if not due and not new:
        return dg.SkipReason(f"no new or changed query images in {rsloc.layout().queries}")
    # Partitions in their own order (registration, then the ones this tick adds), so that each
    # request is one run over adjacent partitions: the encoder and store open once per run.
    order = [*context.instance.get_dynamic_partitions(queries_partitions.name), *new]
    return dg.SensorResult(
        run_requests=[
            _run_request(names, stamps)
            for names in contiguous_runs(order, due, SENSOR_QUERIES_PER_RUN)
        ],
        dynamic_partitions_requests=[queries_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(stamps),
    )


def _run_request(names: list[str], stamps: dict[str, int]) -> dg.RunRequest:
    """One run for the adjacent partitions `names`, keyed by their names and stamps (a sensor
    asks for the same images at the same stamps once)."""
    first, last = names[0], names[-1]
    if len(names) == 1:
        return dg.RunRequest(partition_key=first, run_key=f"{first}@{stamps[first]}")
    digest = hashlib.sha256(json.dumps([[n, stamps[n]] for n in names]).encode()).hexdigest()
    return dg.RunRequest(
        run_key=f"{first}...{last}@{digest[:16]}", tags=partition_range_tags(first, last)
    )


evaluation_after_queries = dg.AutomationConditionSensorDefinition(
    "evaluation_after_queries",
    target=dg.AssetSelection.assets("evaluation"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Re-materializes `evaluation` after query runs (its automation condition)",
)
