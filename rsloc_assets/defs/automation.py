"""Jobs, the query-folder sensor, the nightly gallery refresh schedule and the sensors that embed
the gallery's changed blocks and index them."""

import hashlib
import json
from collections.abc import Mapping, Sequence

import dagster as dg

from rsloc_assets.defs import gallery
from rsloc_assets.defs.batches import (
    SENSOR_BLOCKS_PER_RUN,
    SENSOR_QUERIES_PER_RUN,
    contiguous_runs,
    partition_range_tags,
)
from rsloc_assets.defs.gallery import (
    CHANGED_BLOCKS,
    descriptor_model,
    gallery_adapter,
    gallery_tiles,
    tile_embeddings,
    tile_index,
)
from rsloc_assets.defs.partitions import (
    BLOCKS,
    PARTITIONS_HINT,
    blocks_partitions,
    queries_partitions,
)
from rsloc_assets.defs.queries import (
    candidates,
    cliques,
    localization,
    query_patches,
    verified_localization,
)
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.layout import Layout

# Gallery refreshes (and descriptor fits) looked back over for blocks still due: a block whose run
# failed is embedded after a later refresh even when that one saw no change.
DUE_HISTORY = 100

# The chains a user materializes, by name: a gallery refresh (its unpartitioned assets, then the
# blocks, then the index), one query (the jobs below; the tests and benchmarks run the same).
REFRESH_ASSETS = tuple(
    a.key.to_user_string() for a in (gallery_tiles, gallery_adapter, descriptor_model)
)
BLOCK_ASSET = tile_embeddings.key.to_user_string()
INDEX_ASSET = tile_index.key.to_user_string()
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
    selection=dg.AssetSelection.assets(*REFRESH_ASSETS),
    description="The gallery's manifest, adapter and descriptor: re-read the gallery, register its"
    " blocks, refit what the settings ask for. When it succeeds the `embed_changed_blocks` sensor"
    " embeds the blocks that changed (all of them, after a refit) in `embed_gallery` runs, and"
    " `tile_index` follows them.",
)

embed_gallery_job = dg.define_asset_job(
    "embed_gallery",
    selection=dg.AssetSelection.assets(BLOCK_ASSET),
    partitions_def=blocks_partitions,
    description="`tile_embeddings` for one or many gallery blocks a run: each block's new or"
    " changed tiles embedded in LanceDB. A backfill runs all its blocks in one run (or runs of"
    " `RSLOC_BLOCKS_PER_RUN`, which workers take in parallel).",
)

nightly_gallery_refresh = dg.ScheduleDefinition(
    name="nightly_gallery_refresh",
    job=refresh_gallery_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-reads the gallery at 03:00; the blocks that changed are embedded after it",
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
        return _ranged_request(names, f"{first}@{stamps[first]}")
    digest = hashlib.sha256(json.dumps([[n, stamps[n]] for n in names]).encode()).hexdigest()
    return _ranged_request(names, f"{first}...{last}@{digest[:16]}")


def _ranged_request(names: list[str], run_key: str) -> dg.RunRequest:
    """One run of the adjacent partitions `names` (one partition, or a range)."""
    if len(names) == 1:
        return dg.RunRequest(partition_key=names[0], run_key=run_key)
    return dg.RunRequest(run_key=run_key, tags=partition_range_tags(names[0], names[-1]))


evaluation_after_queries = dg.AutomationConditionSensorDefinition(
    "evaluation_after_queries",
    target=dg.AssetSelection.assets("evaluation"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Re-materializes `evaluation` after query runs (its automation condition)",
)


def due_blocks(instance: dg.DagsterInstance) -> list[str]:
    """The registered blocks to embed, in their order: blocks never embedded, blocks a
    `gallery_tiles` run since their last embedding saw change, and blocks embedded before
    `descriptor_model` last changed its version (which is a new table)."""
    registered = instance.get_dynamic_partitions(BLOCKS)
    embedded = instance.get_latest_storage_id_by_partition(
        tile_embeddings.key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    refreshes = _records(instance, gallery_tiles.key, min(embedded.values(), default=None))
    changed_at: dict[str, int] = {}  # block → the latest refresh that saw it change
    for record in reversed(refreshes):
        meta = record.asset_materialization.metadata
        keys = meta[CHANGED_BLOCKS].value if CHANGED_BLOCKS in meta else registered
        changed_at |= dict.fromkeys(keys, record.storage_id)
    refit_at = _version_since(_records(instance, descriptor_model.key, None))
    return [
        key
        for key in registered
        if key not in embedded
        or changed_at.get(key, 0) > embedded[key]
        or (refit_at is not None and refit_at > embedded[key])
    ]


def _records(
    instance: dg.DagsterInstance, key: dg.AssetKey, after: int | None
) -> list[dg.EventLogRecord]:
    """The latest materializations of asset `key` (after storage id `after`), newest first."""
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=DUE_HISTORY
    ).records


def _version_since(fits: Sequence[dg.EventLogRecord]) -> int | None:
    """The storage id of the descriptor fit that made the current version current (fits newest
    first), or None when no other version is in sight."""
    versions = [record.asset_materialization.metadata["version"].value for record in fits]
    for i in range(1, len(versions)):
        if versions[i] != versions[0]:
            return fits[i - 1].storage_id
    return None


def _block_runs(instance: dg.DagsterInstance, most: int) -> list[list[str]]:
    """The due blocks in runs of at most `most` blocks adjacent in registration order."""
    return contiguous_runs(instance.get_dynamic_partitions(BLOCKS), due_blocks(instance), most)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[refresh_gallery_job],
    request_job=embed_gallery_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful gallery refresh: `embed_gallery` runs (up to 16 adjacent"
    " blocks each) for the blocks whose tiles changed, every block after a descriptor refit, and"
    " blocks never embedded",
)
def embed_changed_blocks(context: dg.RunStatusSensorContext):
    """Runs embedding the blocks a gallery refresh left due (none: a skip)."""
    runs = _block_runs(context.instance, SENSOR_BLOCKS_PER_RUN)
    if not runs:
        return dg.SkipReason("no gallery block changed")
    run_id = context.dagster_run.run_id
    return [_ranged_request(names, f"{run_id}:{names[0]}...{names[-1]}") for names in runs]


index_after_embeddings = dg.AutomationConditionSensorDefinition(
    "index_after_embeddings",
    target=dg.AssetSelection.assets(INDEX_ASSET),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes `tile_index` once block runs finish (its automation condition)",
)


def refresh_gallery_in_process(
    instance: dg.DagsterInstance,
    resources: Mapping[str, object],
    run_config: Mapping[str, object] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """A whole gallery refresh in this process, as the schedule and the two sensors run it: the
    refresh job's assets, the due blocks in one run, then `tile_index`."""
    assets = dg.load_assets_from_modules([gallery])

    def run(selection: Sequence[str], **kwargs: object) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets,
            selection=selection,
            instance=instance,
            resources=resources,
            run_config=run_config,
            **kwargs,
        )

    results = [run(REFRESH_ASSETS)]
    for names in _block_runs(instance, most=len(instance.get_dynamic_partitions(BLOCKS))):
        results.append(run([BLOCK_ASSET], tags=partition_range_tags(names[0], names[-1])))
    results.append(run([INDEX_ASSET]))
    return results
