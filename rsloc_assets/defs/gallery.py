"""The `gallery` group: the gallery's manifest and its tiles' embeddings in LanceDB."""

import dagster as dg

from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.report import md_table
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.retrieval.models import adapt_gallery, current_adapter, fit_descriptor
from rsloc_assets.retrieval.steps import refresh_tile_embeddings

GALLERY = "gallery"


@dg.asset(group_name=GALLERY)
def gallery_tiles(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """The gallery's tiles at the working level: one row per tile with its time and bounds."""
    layout = rsloc.layout()
    result = write_manifest(layout, rsloc.zoom, rsloc.gallery_time)
    manifest, extent = result.manifest, result.extent
    context.log.info(
        "%d tiles at zoom %d from %s", manifest.num_rows, result.info.zoom, layout.gallery
    )
    return dg.MaterializeResult(
        metadata={
            "tiles": manifest.num_rows,
            "zoom": result.info.zoom,
            "levels": str(result.levels),
            "times": str(result.times[-10:]),
            "extent_lonlat": str([extent.west, extent.south, extent.east, extent.north]),
            "gallery": dg.MetadataValue.path(str(layout.gallery)),
            "preview": dg.MetadataValue.md(md_table(manifest.slice(0, 5).to_pylist())),
        }
    )


@dg.asset(group_name=GALLERY, deps=[gallery_tiles])
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


@dg.asset(group_name=GALLERY, deps=[gallery_adapter])
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
    check_specs=[dg.AssetCheckSpec("embeddings_valid", asset="tile_embeddings")],
)
def tile_embeddings(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """3×3 mosaic embeddings of every tile in LanceDB; only new or changed tiles are embedded."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    info = layout.gallery_info()
    store = rsloc.store(encoder, info)
    result = refresh_tile_embeddings(
        layout, encoder, store, rsloc.batch_size, rsloc.index_min_rows, rsloc.index_kind
    )
    plan, report, check = result.refresh.plan, result.refresh.report, result.check
    for key in report.corrupt:
        context.log.warning("corrupt tile %s skipped", key)
    return dg.MaterializeResult(
        metadata={
            "table": store.table,
            "rows": store.count(),
            "embedded": report.embedded,
            "changed_tiles": plan.changed,
            "deleted": len(plan.delete),
            "corrupt_skipped": len(report.corrupt),
            "corrupt_known": len(result.refresh.corrupt),
            "missing_neighbours": report.missing_neighbours,
            "missing_tiles": len(report.missing_tiles),
            "jpeg_decodes": report.decoded,
            "seconds": round(report.seconds, 2),
            "tiles_per_s": round(report.tiles_per_s, 1),
            "encoder": encoder.name,
            "device": encoder.device,
            "ann_index": result.indexed,
        },
        check_results=[
            dg.AssetCheckResult(
                passed=check.passed,
                metadata={
                    "rows": check.rows,
                    "expected": check.expected,
                    "unit_norm": check.unit_norm,
                    "dimension": check.dimension,
                },
            )
        ],
    )
