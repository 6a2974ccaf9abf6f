"""The `gallery` group: the gallery's manifest and its tiles' embeddings in LanceDB."""

import dagster as dg
import pyarrow as pa

from rsloc_assets.defs.failures import fails_in_one_line
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.report import md_table
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.retrieval.models import adapt_gallery, current_adapter, fit_descriptor
from rsloc_assets.retrieval.steps import refresh_tile_embeddings

GALLERY = "gallery"


@dg.asset(group_name=GALLERY, kinds={"sqlite", "parquet"})
@fails_in_one_line
def gallery_tiles(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """The gallery's tiles at its working levels (`zoom`, default every level it holds): one row
    per tile with its time and bounds."""
    layout = rsloc.layout()
    result = write_manifest(layout, rsloc.zoom, rsloc.gallery_time)
    manifest, extent = result.manifest, result.extent
    zooms = [info.zoom for info in result.levels]
    context.log.info("%d tiles at zoom %s from %s", manifest.num_rows, zooms, layout.gallery)
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
            "data_dir": dg.MetadataValue.path(str(layout.root)),
            "times": str(result.times[-10:]),
            "extent_lonlat": str([extent.west, extent.south, extent.east, extent.north]),
            "gallery": dg.MetadataValue.path(str(layout.gallery)),
            "preview": dg.MetadataValue.md(md_table(_lonlat_rows(manifest.slice(0, 5)))),
        }
    )


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
    kinds={"lancedb", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "embeddings_valid",
            asset="tile_embeddings",
            blocking=True,
            description="One row per decodable tile, unit-norm vectors of the encoder's size; "
            "when it fails, the run's downstream steps are skipped",
        )
    ],
)
@fails_in_one_line
def tile_embeddings(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """3×3 mosaic embeddings of every tile in LanceDB, one table per working level; only new or
    changed tiles are embedded."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    results = refresh_tile_embeddings(
        layout, encoder, stores, rsloc.batch_size, rsloc.index_min_rows, rsloc.index_kind
    )
    for r in results:
        for key in r.refresh.report.corrupt:
            context.log.warning("corrupt tile %s skipped", key)
    reports = [r.refresh.report for r in results]
    seconds = sum(report.seconds for report in reports)
    embedded = sum(report.embedded for report in reports)
    return dg.MaterializeResult(
        metadata={
            "tables": ", ".join(stores[r.zoom].table for r in results),
            "rows": sum(r.check.rows for r in results),
            "embedded": embedded,
            "changed_tiles": sum(r.refresh.plan.changed for r in results),
            "deleted": sum(len(r.refresh.plan.delete) for r in results),
            "corrupt_skipped": sum(len(report.corrupt) for report in reports),
            "corrupt_known": sum(len(r.refresh.corrupt) for r in results),
            "duplicates_repaired": sum(len(r.refresh.duplicates) for r in results),
            "missing_neighbours": sum(report.missing_neighbours for report in reports),
            "missing_tiles": sum(len(report.missing_tiles) for report in reports),
            "jpeg_decodes": sum(report.decoded for report in reports),
            "seconds": round(seconds, 2),
            "tiles_per_s": round(embedded / seconds, 1) if seconds > 0 else 0.0,
            "encoder": encoder.name,
            "device": encoder.device,
            "ann_index": all(r.indexed for r in results),
        },
        check_results=[
            dg.AssetCheckResult(
                passed=all(r.check.passed for r in results),
                metadata={
                    "rows": sum(r.check.rows for r in results),
                    "expected": sum(r.check.expected for r in results),
                    "duplicates": sum(r.check.duplicates for r in results),
                    "unit_norm": all(r.check.unit_norm for r in results),
                    "dimension": results[0].check.dimension,
                },
            )
        ],
    )
