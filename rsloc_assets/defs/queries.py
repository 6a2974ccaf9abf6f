"""The `queries` group: each query's patches → candidates → cliques → localization → verified
footprint, one partition per query image, and the evaluation over all of them."""

import json
import time
from collections.abc import Callable

import dagster as dg

from rsloc_assets.cliques.steps import find_cliques, localize_query
from rsloc_assets.defs.batches import QUERIES_PER_RUN_ENV, backfill_policy, for_each_query
from rsloc_assets.defs.failures import fails_in_one_line
from rsloc_assets.defs.gallery import gallery_tiles, tile_index
from rsloc_assets.defs.partitions import queries_partitions
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.overview import MAP_CAPTION
from rsloc_assets.evaluation.preview import preview_png
from rsloc_assets.evaluation.render import markdown_image
from rsloc_assets.evaluation.report import markdown_table, md_table, summary_line
from rsloc_assets.evaluation.steps import evaluate
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.records import GalleryInfo, Localization
from rsloc_assets.retrieval.encoders import Encoder
from rsloc_assets.retrieval.steps import find_candidates, prepare_query
from rsloc_assets.retrieval.store import TileStore
from rsloc_assets.verification.steps import verify_query

QUERIES = "queries"

# Every query asset: one partition per query image, as many per run as the run was given.
PER_QUERY = {
    "partitions_def": queries_partitions,
    "backfill_policy": backfill_policy(QUERIES_PER_RUN_ENV),
}


def _stores(rsloc: RslocResource, encoder: Encoder) -> Callable[[GalleryInfo], TileStore]:
    """Each gallery level's store, opened once per run."""
    opened: dict[int, TileStore] = {}

    def store_for(info: GalleryInfo) -> TileStore:
        if info.zoom not in opened:
            opened[info.zoom] = rsloc.store(encoder, info)
        return opened[info.zoom]

    return store_for


@dg.asset(
    group_name=QUERIES, **PER_QUERY, deps=[gallery_tiles, tile_index], kinds={"gdal", "pytorch"}
)
@fails_in_one_line
def query_patches(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """A query cut into gallery-mosaic-sized patches on a regular grid for the gallery level
    nearest its ground resolution, its heading voted among `query_headings` by `vote_patches`
    of them against that level's embeddings, and each embedded at that heading.

    One partition per image in queries/: a fresh instance has none until the `new_query_files`
    sensor ticks (on by default) or `rsloc queries register` runs."""
    layout = rsloc.layout()
    levels = layout.gallery_levels()
    encoder = rsloc.load_encoder()
    store_for = _stores(rsloc, encoder)

    def step(name: str) -> dict:
        result = prepare_query(
            layout,
            name,
            levels,
            encoder,
            store_for,
            rsloc.cut_th,
            rsloc.stride_tiles,
            rsloc.query_headings,
            rsloc.vote_patches,
        )
        if result.reason:
            context.log.warning("query %s skipped: %s", name, result.reason)
        return {
            "patches": result.table.num_rows,
            "size_px": f"{result.width}×{result.height}",
            "gsd_m": str([round(g, 3) for g in result.gsd_m]),
            "zoom": result.zoom,
            "headings": rsloc.query_headings,
            "heading_deg": result.heading_deg,
            "skipped": result.reason or "no",
            "seconds": round(result.seconds, 2),
        }

    for_each_query(context, layout, step)
    return dg.MaterializeResult()


@dg.asset(
    group_name=QUERIES,
    **PER_QUERY,
    deps=[query_patches, tile_index],
    kinds={"lancedb"},
    check_specs=[
        dg.AssetCheckSpec(
            "candidates_valid",
            asset="candidates",
            description="At least one candidate, every cosine score within [-1, 1]",
        )
    ],
)
@fails_in_one_line
def candidates(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Top-K gallery tiles (of the query's level) for every patch of a query by cosine score,
    at the query's voted heading."""
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    store_for = _stores(rsloc, encoder)
    failing: list[str] = []

    def step(name: str) -> dict:
        # The query's level, as the gallery has it now: a level no longer worked at is an error.
        info = layout.gallery_info(layout.query(name).patch_meta().gallery.zoom)
        result = find_candidates(layout, name, store_for(info), rsloc.top_k)
        if not result.passed:
            failing.append(name)
        return {
            "rows": result.table.num_rows,
            "top_k": rsloc.top_k,
            "seconds": round(result.seconds, 3),
            "best_score": result.best_score,
            "scores_in_range": result.scores_in_range,
        }

    done = for_each_query(context, layout, step)
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                passed=not failing,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"queries": len(done), "failing": ", ".join(failing) or "none"},
            )
        ]
    )


@dg.asset(group_name=QUERIES, **PER_QUERY, deps=[candidates], kinds={"c"})
@fails_in_one_line
def cliques(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Spatio-geographic maximal cliques of a query's candidates (native library via cffi) and
    the ranked location hypotheses they seed."""
    layout = rsloc.layout()

    def step(name: str) -> dict:
        summary = find_cliques(
            layout, name, rsloc.clique_k, rsloc.clique_tolerance_tiles, rsloc.vote_top
        )
        if summary.truncated:
            context.log.warning("%s: clique enumeration hit its cap: results are partial", name)
        return {
            "candidates_per_patch": summary.k,
            "nodes": summary.nodes,
            "edges": summary.edges,
            "maximal_cliques": summary.maximal,
            "kept_cliques": summary.kept,
            "groups": summary.groups,
            "best_group_patches": summary.best_group_score,
            "hypotheses": summary.hypotheses,
            "best_hypothesis_support": summary.best_support,
            "truncated": summary.truncated,
            "seconds": round(summary.ms / 1000, 3),
        }

    for_each_query(context, layout, step)
    return dg.MaterializeResult()


@dg.asset(group_name=QUERIES, **PER_QUERY, deps=[cliques], kinds={"python"})
@fails_in_one_line
def localization(context: dg.AssetExecutionContext, rsloc: RslocResource) -> dg.MaterializeResult:
    """Where the query is: centre, heading, turned footprint, confidence and the method used."""
    layout = rsloc.layout()

    def step(name: str) -> dict:
        start = time.perf_counter()
        loc = localize_query(layout, name, rsloc.vote_top)
        context.log.info("%s: %s at %s", loc.query, loc.method, _place(loc)["centre_lonlat"])
        return {
            "method": str(loc.method),
            **_place(loc),
            "confidence": round(loc.confidence, 3),
            "support": loc.support,
            "patches": loc.patches,
            "reason": loc.reason or "none",
            "seconds": round(time.perf_counter() - start, 3),
        }

    for_each_query(context, layout, step)
    return dg.MaterializeResult()


def _place(loc: Localization) -> dict[str, str | float]:
    """An estimate's centre and corners (lon/lat to 6 decimals, ≈ 0.1 m) and error estimate (to
    0.1 m), as metadata."""

    def lonlat(lon: float | None, lat: float | None) -> list[float | None]:
        return [None if v is None else round(v, 6) for v in (lon, lat)]

    return {
        "centre_lonlat": json.dumps(lonlat(loc.centre_lon, loc.centre_lat)),
        "corners_lonlat": json.dumps([lonlat(*c) for c in loc.corners_lonlat]),
        "error_estimate_m": round(loc.error_m or 0.0, 1),
    }


@dg.asset(group_name=QUERIES, **PER_QUERY, deps=[localization], kinds={"opencv", "geojson"})
@fails_in_one_line
def verified_localization(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """The query's footprint on the ground from SIFT + MAC + homography verification of stage 2's
    ranked hypotheses (GeoJSON + JSON; the winner is the one most patches agree with), or the
    stage-2 estimate recorded as not verified; its metadata shows the query beside the gallery
    under the footprint (the truth too, when the query's georeference gives it)."""
    # The re-check's threshold (VerifyParams.min_similarity) was measured on the encoder's own
    # global embedding, not on the gallery-fitted descriptor.
    encoder = rsloc.base_encoder() if rsloc.verify_recheck else None
    layout = rsloc.layout()

    def step(name: str) -> dict:
        record, fp = verify_query(
            layout, name, encoder, hypotheses=rsloc.verify_hypotheses, workers=rsloc.verify_workers
        )
        loc = record.estimate
        if fp is None:
            context.log.warning("%s: %s", loc.query, loc.reason)
        metadata = {
            "method": str(loc.method),
            **_place(loc),
            "agreeing_patches": loc.support,
            "hypotheses_tried": len(record.hypotheses_tried),
            "seconds": round(record.seconds, 2),
        }
        if len(loc.corners_lonlat) >= 3:
            truth = read_truth(layout.query_file(loc.query))
            png = preview_png(
                layout, loc.query, loc.corners_lonlat, truth.corners_lonlat if truth else ()
            )
            metadata["preview"] = dg.MetadataValue.md(markdown_image(png, loc.query))
        if fp is not None:
            metadata |= {
                "hypothesis": record.hypothesis,
                "scale_m_per_px": round(fp.scale_m_per_px, 4),
                "rotation_deg": round(fp.rotation_deg, 2),
                "geojson": dg.MetadataValue.path(str(layout.query(loc.query).footprint_path)),
            }
        return metadata

    for_each_query(context, layout, step)
    return dg.MaterializeResult()


# Evaluation follows every query run: as soon as any query's localization is new, once no
# evaluation is in progress; queries skipped or never run do not hold it back.
AFTER_QUERIES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("after any query is localized")
)


@dg.asset(
    name="evaluation",
    group_name=QUERIES,
    deps=[verified_localization],
    automation_condition=AFTER_QUERIES,
    kinds={"parquet"},
)
@fails_in_one_line
def evaluation_report(
    context: dg.AssetExecutionContext, rsloc: RslocResource
) -> dg.MaterializeResult:
    """Errors, success rates and recall over all localized queries (Markdown, Parquet), a map of
    every footprint over the gallery shown here, and every footprint as one GeoJSON layer."""
    result = evaluate(rsloc.layout())
    for query, why in result.skipped.items():
        context.log.warning("%s not evaluated: %s", query, why)
    s = result.summary
    return dg.MaterializeResult(
        metadata={
            "summary": summary_line(s),
            "queries": s.queries,
            "evaluated": s.evaluated,
            "within_1_tile": s.within_1_tile,
            "within_3_tiles": s.within_3_tiles,
            "acc": round(s.acc / s.evaluated, 3) if s.evaluated else 0.0,
            "median_error_m": round(s.median_error_m or 0.0, 1),
            "median_corner_error_m": round(s.median_corner_error_m or 0.0, 1),
            "median_retrieval_error_m": round(s.median_retrieval_error_m or 0.0, 1),
            "median_cliques_error_m": round(s.median_cliques_error_m or 0.0, 1),
            "funnel": str(s.funnel),
            "mean_seconds": str({k: round(v, 2) for k, v in s.mean_seconds.items()}),
            "recall_at_1_within_r": str({k: round(v, 3) for k, v in s.recall.items()}),
            "stages": dg.MetadataValue.md(md_table(s.stages)),
            "map": dg.MetadataValue.md(
                markdown_image(result.map_png, "evaluation map") + "\n\n" + MAP_CAPTION
            ),
            "report": dg.MetadataValue.path(str(result.files.markdown)),
            "table": dg.MetadataValue.md(markdown_table(result.scores)),
        }
    )
