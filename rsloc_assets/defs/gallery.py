"""The `gallery` group: the gallery's manifest and its tiles' embeddings in LanceDB."""

import dagster as dg
import pyarrow as pa

from rsloc_assets.defs.batches import BLOCKS_PER_RUN_ENV, backfill_policy
from rsloc_assets.defs.failures import fails_in_one_line
from rsloc_assets.defs.partitions import BLOCKS, blocks_partitions, sync_partitions
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.report import md_table
from rsloc_assets.gallery.blocks import Block, block_keys, changed_blocks
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.layout import Layout
from rsloc_assets.retrieval.models import adapt_gallery, current_adapter, fit_descriptor
from rsloc_assets.retrieval.steps import embed_blocks, index_tile_embeddings

GALLERY = "gallery"
CHANGED_BLOCKS = "changed_blocks"  # gallery_tiles' metadata: the blocks the block sensor embeds


@dg.asset(group_name=GALLERY, kinds={"sqlite", "parquet"})
@fails_in_one_line
def gallery_tiles(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """The gallery's tiles at its working levels (`zoom`, default every level it holds): one row
    per tile with its time and bounds."""
    layout = rsloc.layout()
    before = _previous_manifest(layout)
    result = write_manifest(layout, rsloc.zoom, rsloc.gallery_time)
    manifest, extent = result.manifest, result.extent
    zooms = [info.zoom for info in result.levels]
    context.log.info("%d tiles at zoom %s from %s", manifest.num_rows, zooms, layout.gallery)
    blocks = block_keys(manifest, rsloc.block_tiles)
    changed = changed_blocks(before, manifest, rsloc.block_tiles)
    added, deleted = sync_partitions(context.instance, BLOCKS, blocks)
    context.log.info(
        "%d gallery blocks of %d² tiles (%d new, %d gone); %d hold changed tiles",
        len(blocks),
        rsloc.block_tiles,
        len(added),
        len(deleted),
        len(changed),
    )
    if result.duplicates:
        context.log.warning(
            "%d gallery rows repeat a tile and time (in ge_tiles the last written is used)",
            result.duplicates,
        )
    return dg.MaterializeResult(
        metadata={
            "tiles": manifest.num_rows,
            "tiles_per_level": str({info.zoom: info.tiles for info in result.levels}),
            "levels": str(result.stored_levels),
            "duplicate_rows": result.duplicates,
            "blocks": len(blocks),
            CHANGED_BLOCKS: dg.MetadataValue.json(changed),
            "data_dir": dg.MetadataValue.path(str(layout.root)),
            "times": str(result.times[-10:]),
            "extent_lonlat": str([extent.west, extent.south, extent.east, extent.north]),
            "gallery": dg.MetadataValue.path(str(layout.gallery)),
            "preview": dg.MetadataValue.md(md_table(_lonlat_rows(manifest.slice(0, 5)))),
        }
    )


def _previous_manifest(layout: Layout) -> pa.Table | None:
    """The manifest a previous run wrote (its tile keys, times and positions), if any is
    readable, to find the blocks that changed since."""
    try:
        return layout.read_manifest(["key", "time", "level", "col", "row"])
    except (OSError, ValueError):
        return None


def _lonlat_rows(table: pa.Table) -> list[dict]:
    """Manifest rows with their degrees written to 6 decimals (≈ 0.1 m), for a preview table."""
    return [
        {k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


@dg.asset(group_name=GALLERY, deps=[gallery_tiles], kinds={"pytorch"})
@fails_in_one_line
def gallery_adapter(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """A self-supervised adapter of the encoder's local features, trained on the gallery's own
    tiles (other dates, else augmentations, are the positives); with `adapt` off, none."""
    encoder = rsloc.base_encoder()
    result = adapt_gallery(rsloc.layout(), encoder, rsloc.adapter_params(), rsloc.batch_size)
    if result.adapter is None:
        return dg.MaterializeResult(metadata={"adapter": "none (adapt is off)"})
    adapter = result.adapter
    context.log.info("adapter %s trained: %s", adapter.version, adapter.record)
    return dg.MaterializeResult(
        metadata={
            "adapter": adapter.version,
            "encoder": encoder.name,
            "file": dg.MetadataValue.path(str(result.path)),
            **{k: v for k, v in adapter.record.items() if v is not None},
        }
    )


@dg.asset(group_name=GALLERY, deps=[gallery_adapter], kinds={"pytorch"})
@fails_in_one_line
def descriptor_model(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """The global descriptor fitted on a sample of the gallery: GeM or VLAD (vocabulary by
    k-means), then optional PCA-whitening; versioned, so a refit re-embeds the gallery."""
    layout = rsloc.layout()
    encoder = rsloc.base_encoder()
    adapter = current_adapter(layout, encoder.name, encoder.device) if rsloc.adapt else None
    fit = fit_descriptor(layout, encoder, rsloc.descriptor_spec(), adapter, rsloc.batch_size)
    if fit.note:
        context.log.warning(fit.note)
    model = fit.model
    return dg.MaterializeResult(
        metadata={
            "version": model.version,
            "descriptor": model.tag(),
            "aggregation": str(model.spec.aggregation),
            "dimension": model.dim(encoder.dim, getattr(encoder, "local_dim", None)),
            "adapter": model.adapter or "none",
            "sampled_tiles": fit.tiles,
            "seconds": round(fit.seconds, 1),
            "note": fit.note or "none",
            "file": dg.MetadataValue.path(str(fit.path)),
        }
    )


@dg.asset(
    group_name=GALLERY,
    deps=[gallery_tiles, descriptor_model],
    partitions_def=blocks_partitions,
    backfill_policy=backfill_policy(BLOCKS_PER_RUN_ENV),
    kinds={"lancedb", "pytorch"},
)
@fails_in_one_line
def tile_embeddings(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """3×3 mosaic embeddings of one block of gallery tiles (or each block of the run) in LanceDB,
    one table per working level; only new or changed tiles, and those next to them, are
    embedded. `gallery_tiles` registers the blocks; workers embed blocks in parallel."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    blocks = [Block.parse(key) for key in context.partition_keys]
    for done in embed_blocks(layout, encoder, stores, blocks, rsloc.batch_size):
        refresh, report = done.refresh, done.refresh.report
        for key in report.corrupt:
            context.log.warning("corrupt tile %s skipped", key)
        metadata = {
            "table": stores[done.block.zoom].table,
            "embedded": report.embedded,
            "changed_tiles": refresh.plan.changed,
            "deleted": len(refresh.plan.delete),
            "corrupt_skipped": len(report.corrupt),
            "corrupt_known": len(refresh.corrupt),
            "duplicates_repaired": len(refresh.duplicates),
            "missing_neighbours": report.missing_neighbours,
            "missing_tiles": len(report.missing_tiles),
            "jpeg_decodes": report.decoded,
            "seconds": round(report.seconds, 2),
            "tiles_per_s": round(report.tiles_per_s, 1),
            "encoder": encoder.name,
            "device": encoder.device,
        }
        context.add_asset_metadata(metadata, partition_key=done.block.key)
    return dg.MaterializeResult()


@dg.asset(
    group_name=GALLERY,
    deps=[tile_embeddings],
    kinds={"lancedb"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "embeddings_valid",
            asset="tile_index",
            blocking=True,
            description="One row per decodable tile at its manifest time, no tile twice, "
            "unit-norm vectors of the encoder's size; when it fails, the run's downstream steps "
            "are skipped",
        )
    ],
)
@fails_in_one_line
def tile_index(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Each working level's table made searchable once its blocks are embedded: rows of tiles
    gone from the gallery dropped, the ANN index built or brought up to date, the table checked
    against the manifest. Follows `tile_embeddings` by itself (its automation condition)."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    levels = index_tile_embeddings(
        layout, stores, encoder.dim, rsloc.index_min_rows, rsloc.index_kind
    )
    checks = [level.check for level in levels]
    rows = sum(check.rows for check in checks)
    context.log.info("%d rows in %d tables", rows, len(levels))
    return dg.MaterializeResult(
        metadata={
            "tables": ", ".join(stores[level.zoom].table for level in levels),
            "rows": rows,
            "stale_deleted": sum(level.stale for level in levels),
            "ann_index": all(level.indexed for level in levels),
        },
        check_results=[
            dg.AssetCheckResult(
                passed=all(check.passed for check in checks),
                metadata={
                    "rows": rows,
                    "expected": sum(check.expected for check in checks),
                    "duplicates": sum(check.duplicates for check in checks),
                    "outdated": sum(check.outdated for check in checks),
                    "unit_norm": all(check.unit_norm for check in checks),
                    "dimension": checks[0].dimension,
                },
            )
        ],
    )
