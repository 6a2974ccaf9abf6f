"""Software-defined assets: thin wiring of the library's stages, with metadata and checks."""

import time

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsloc_assets import evaluation, pipeline
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.gallery import Gallery
from rsloc_assets.pipeline import GalleryInfo
from rsloc_assets.retrieval import gallery_manifest, refresh_embeddings, resolve_zoom
from rsloc_assets.store import TileStore

queries_partitions = dg.DynamicPartitionsDefinition(name="queries")

GALLERY = "gallery"
CHECK_SAMPLE = 20_000  # vectors whose norm the embeddings check reads
QUERIES = "queries"


def _gallery_info(rsloc: RslocResource) -> GalleryInfo:
    """Grid, level, latitude and tile size of the gallery, from its manifest."""
    layout = rsloc.layout()
    with Gallery.open(layout.gallery) as gallery:
        return GalleryInfo.from_manifest(gallery, pq.read_table(layout.manifest))


@dg.asset(group_name=GALLERY)
def gallery_tiles(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """The gallery's tiles at the working level: one row per tile with its time and bounds."""
    layout = rsloc.layout()
    with Gallery.open(layout.gallery) as gallery:
        zoom = resolve_zoom(gallery, rsloc.zoom)
        manifest = gallery_manifest(gallery, zoom, rsloc.gallery_time)
        levels, times = gallery.levels(), gallery.times(zoom)
        extent = gallery.extent(zoom)
    pipeline.write_table(layout.manifest, manifest)
    context.log.info("%d tiles at zoom %d from %s", manifest.num_rows, zoom, layout.gallery)
    return dg.MaterializeResult(
        metadata={
            "tiles": manifest.num_rows,
            "zoom": zoom,
            "levels": str(levels),
            "times": str(times[-10:]),
            "extent_lonlat": str([extent.west, extent.south, extent.east, extent.north]),
            "gallery": dg.MetadataValue.path(str(layout.gallery)),
            "preview": dg.MetadataValue.md(evaluation.md_table(manifest.slice(0, 5).to_pylist())),
        }
    )


@dg.asset(
    group_name=GALLERY,
    deps=[gallery_tiles],
    check_specs=[dg.AssetCheckSpec("embeddings_valid", asset="tile_embeddings")],
)
def tile_embeddings(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """3×3 mosaic embeddings of every tile in LanceDB; only new or changed tiles are embedded."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    info = _gallery_info(rsloc)
    manifest = pq.read_table(layout.manifest)
    store = rsloc.store(encoder, info.grid.name, info.zoom)
    state = pipeline.read_json(layout.embedding_state, default={"corrupt": {}})
    with Gallery.open(layout.gallery) as gallery:
        refresh = refresh_embeddings(
            gallery, manifest, encoder, store, state["corrupt"], rsloc.batch_size
        )
    plan, report = refresh.plan, refresh.report
    for key in report.corrupt:
        context.log.warning("corrupt tile %s skipped", key)
    indexed = store.ensure_index(rsloc.index_min_rows, rsloc.index_kind)
    pipeline.write_json(layout.embedding_state, {"corrupt": refresh.corrupt})
    check = _check_embeddings(store, manifest.num_rows - len(refresh.corrupt), encoder.dim)
    return dg.MaterializeResult(
        metadata={
            "table": store.table,
            "rows": store.count(),
            "embedded": report.embedded,
            "changed_tiles": plan.changed,
            "deleted": len(plan.delete),
            "corrupt_skipped": len(report.corrupt),
            "corrupt_known": len(refresh.corrupt),
            "missing_neighbours": report.missing_neighbours,
            "jpeg_decodes": report.decoded,
            "seconds": round(report.seconds, 2),
            "tiles_per_s": round(report.tiles_per_s, 1),
            "encoder": encoder.name,
            "device": encoder.device,
            "ann_index": indexed,
        },
        check_results=[check],
    )


def _check_embeddings(store: TileStore, expected: int, dim: int) -> dg.AssetCheckResult:
    """Rows = tiles that decode; vectors (a sample of the first rows) unit-norm, of the encoder's
    dimension."""
    rows = store.count()
    vectors = store.to_arrow(["vector"], limit=CHECK_SAMPLE)["vector"]
    stored_dim = vectors.type.list_size
    flat = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    norms = np.linalg.norm(flat.reshape(-1, stored_dim), axis=1)
    unit = bool(np.all(np.abs(norms - 1) < 1e-3))
    dims = stored_dim == dim
    return dg.AssetCheckResult(
        passed=rows == expected and unit and dims,
        metadata={"rows": rows, "expected": expected, "unit_norm": unit, "dimension": stored_dim},
    )


@dg.asset(group_name=QUERIES, partitions_def=queries_partitions, deps=[gallery_tiles])
def query_patches(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """A query cut into gallery-mosaic-sized patches on a regular grid, each embedded."""
    name = context.partition_key
    info = _gallery_info(rsloc)
    start = time.perf_counter()
    result = pipeline.prepare_query(
        rsloc.layout(), name, info, rsloc.load_encoder(), rsloc.cut_th, rsloc.stride_tiles
    )
    if result.reason:
        context.log.warning("query %s skipped: %s", name, result.reason)
    return dg.MaterializeResult(
        metadata={
            "patches": result.table.num_rows,
            "size_px": f"{result.width}×{result.height}",
            "gsd_m": str([round(g, 3) for g in result.gsd_m]),
            "skipped": result.reason or "no",
            "seconds": round(time.perf_counter() - start, 2),
        }
    )


@dg.asset(
    group_name=QUERIES,
    partitions_def=queries_partitions,
    deps=[query_patches, tile_embeddings],
    check_specs=[dg.AssetCheckSpec("candidates_valid", asset="candidates")],
)
def candidates(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Top-K gallery tiles for every patch of a query, with cosine scores."""
    name = context.partition_key
    info = _gallery_info(rsloc)
    start = time.perf_counter()
    store = rsloc.store(rsloc.load_encoder(), info.grid.name, info.zoom)
    table = pipeline.find_candidates(rsloc.layout(), name, store, rsloc.top_k)
    low, high = pc.min_max(table["score"]).values()
    best = high.as_py() if table.num_rows else 0.0
    in_range = table.num_rows == 0 or (low.as_py() >= -1.0001 and best <= 1.0001)
    check = dg.AssetCheckResult(
        passed=table.num_rows > 0 and bool(in_range),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows": table.num_rows, "scores_in_range": bool(in_range)},
    )
    return dg.MaterializeResult(
        metadata={
            "rows": table.num_rows,
            "top_k": rsloc.top_k,
            "seconds": round(time.perf_counter() - start, 3),
            "best_score": float(best),
        },
        check_results=[check],
    )


@dg.asset(group_name=QUERIES, partitions_def=queries_partitions, deps=[candidates])
def cliques(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Spatio-geographic maximal cliques of a query's candidates (native library via cffi)."""
    summary = pipeline.find_cliques(
        rsloc.layout(), context.partition_key, rsloc.clique_k, rsloc.clique_tolerance_tiles
    )
    if summary.truncated:
        context.log.warning("clique enumeration hit its cap: results are partial")
    return dg.MaterializeResult(
        metadata={
            "candidates_per_patch": summary.k,
            "nodes": summary.nodes,
            "edges": summary.edges,
            "maximal_cliques": summary.maximal,
            "kept_cliques": summary.kept,
            "groups": summary.groups,
            "best_group_patches": summary.best_group_score,
            "truncated": summary.truncated,
            "ms": round(summary.ms, 2),
        }
    )


@dg.asset(group_name=QUERIES, partitions_def=queries_partitions, deps=[cliques])
def localization(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Where the query is: centre, north-up footprint and confidence, with the method used."""
    loc = pipeline.localize_query(rsloc.layout(), context.partition_key, rsloc.vote_top)
    context.log.info("%s: %s at %s, %s", loc.query, loc.method, loc.centre_lon, loc.centre_lat)
    return dg.MaterializeResult(
        metadata={
            "method": loc.method,
            "centre_lonlat": str([loc.centre_lon, loc.centre_lat]),
            "confidence": round(loc.confidence, 3),
            "support": loc.support,
            "patches": loc.patches,
            "error_estimate_m": loc.error_m or 0.0,
            "reason": loc.reason or "none",
        }
    )


@dg.asset(group_name=QUERIES, partitions_def=queries_partitions, deps=[localization])
def verified_localization(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """The query's footprint on the ground from SIFT + MAC + homography verification of its
    patches (GeoJSON + JSON), or the stage-2 estimate recorded as not verified."""
    encoder = rsloc.load_encoder() if rsloc.verify_recheck else None
    loc, fp = pipeline.verify_query(
        rsloc.layout(),
        context.partition_key,
        encoder,
        per_patch=rsloc.verify_candidates,
        workers=rsloc.verify_workers,
    )
    if fp is None:
        context.log.warning("%s: %s", loc.query, loc.reason)
    metadata = {
        "method": loc.method,
        "centre_lonlat": str([loc.centre_lon, loc.centre_lat]),
        "agreeing_patches": loc.support,
        "error_estimate_m": loc.error_m or 0.0,
    }
    if fp is not None:
        metadata |= {
            "scale_m_per_px": round(fp.scale_m_per_px, 4),
            "rotation_deg": round(fp.rotation_deg, 2),
            "geojson": dg.MetadataValue.path(
                str(rsloc.layout().query_dir(loc.query) / pipeline.FOOTPRINT)
            ),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(name="evaluation", group_name=QUERIES, deps=[verified_localization])
def evaluation_report(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """Errors, success rates and recall over all localized queries: Markdown, Parquet, a map."""
    result = pipeline.evaluate(rsloc.layout())
    for query, why in result.skipped.items():
        context.log.warning("%s not evaluated: %s", query, why)
    s = result.summary
    return dg.MaterializeResult(
        metadata={
            "summary": evaluation.summary_line(s),
            "queries": s.queries,
            "evaluated": s.evaluated,
            "within_1_tile": s.within_1_tile,
            "within_3_tiles": s.within_3_tiles,
            "acc": s.acc,
            "median_error_m": s.median_error_m or 0.0,
            "median_corner_error_m": s.median_corner_error_m or 0.0,
            "median_retrieval_error_m": s.median_retrieval_error_m or 0.0,
            "median_cliques_error_m": s.median_cliques_error_m or 0.0,
            "funnel": str(s.funnel),
            "mean_seconds": str({k: round(v, 2) for k, v in s.mean_seconds.items()}),
            "recall_at_1_within_r": str({k: round(v, 3) for k, v in s.recall.items()}),
            "stages": dg.MetadataValue.md(evaluation.md_table(s.stages)),
            "report": dg.MetadataValue.path(str(result.paths["markdown"])),
            "table": dg.MetadataValue.md(evaluation.markdown_table(result.scores)),
        }
    )
