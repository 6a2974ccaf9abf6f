"""Per-query steps of the pipeline, on files under a `Layout`: patches → candidates → localization.

Each step reads its inputs from and writes its outputs to the query's work folder, replacing them
whole, so re-running a step for one query is idempotent and touches no other query.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsloc_assets import evaluation
from rsloc_assets.cliques import CliqueParams, find_geo_cliques
from rsloc_assets.encoders import Encoder
from rsloc_assets.footprint import (
    Footprint,
    PatchGeoPoints,
    fit_footprint,
    footprint_geojson,
    mosaic_to_lonlat,
)
from rsloc_assets.gallery import Gallery, TileRef
from rsloc_assets.grids import TileGrid, TileKey, get_grid, ground_size_m
from rsloc_assets.layout import Layout
from rsloc_assets.localize import NOT_LOCALIZED, VERIFIED, Localization, from_cliques, vote
from rsloc_assets.queries import PATCH_SCHEMA, cut_patches, plan_patches, read_query
from rsloc_assets.store import TileStore
from rsloc_assets.verify import Features, PatchMatch, VerifyParams, extract_features, match_patch

log = logging.getLogger(__name__)

PATCHES = "patches.parquet"
CANDIDATES = "candidates.parquet"
CLIQUES = "cliques.parquet"
LOCALIZATION = "localization.json"
MATCHES = "matches.parquet"
VERIFIED_JSON = "verified.json"
FOOTPRINT = "footprint.geojson"


@dataclass(frozen=True)
class GalleryInfo:
    """What queries need to know of the gallery: grid, level, latitude and a tile's ground size."""

    grid: TileGrid
    zoom: int
    ref_lat: float
    tile_ground_m: tuple[float, float]
    tiles: int

    @classmethod
    def from_manifest(cls, gallery: Gallery, manifest: pa.Table) -> GalleryInfo:
        if manifest.num_rows == 0:
            raise ValueError(f"{gallery.path}: the gallery manifest is empty")
        zoom = int(manifest["level"][0].as_py())
        lat = manifest["lat"].to_numpy()
        mid = int(np.argsort(lat)[len(lat) // 2])
        tile = gallery.grid.tile_at(float(manifest["lon"][mid].as_py()), float(lat[mid]), zoom)
        return cls(
            gallery.grid,
            zoom,
            float(np.median(lat)),
            ground_size_m(gallery.grid, tile),
            manifest.num_rows,
        )

    def to_dict(self) -> dict:
        return {
            "grid": self.grid.name,
            "zoom": self.zoom,
            "ref_lat": self.ref_lat,
            "tile_ground_m": list(self.tile_ground_m),
            "tiles": self.tiles,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GalleryInfo:
        return cls(
            get_grid(d["grid"]), d["zoom"], d["ref_lat"], tuple(d["tile_ground_m"]), d["tiles"]
        )


def write_atomic(path: Path, write) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_table(path: Path, table: pa.Table) -> None:
    """Write a Parquet table atomically."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def read_json(path: Path, default: object = None) -> object:
    """Parsed JSON at `path`, or `default` when the file does not exist."""
    return json.loads(path.read_text()) if path.exists() else default


@dataclass
class PatchResult:
    """A query's patches with embeddings, or the reason it has none."""

    table: pa.Table
    width: int
    height: int
    gsd_m: tuple[float, float]
    reason: str = ""


def prepare_query(
    layout: Layout,
    name: str,
    info: GalleryInfo,
    encoder: Encoder,
    cut_th: float = 1.0,
    stride_tiles: float = 1.0,
) -> PatchResult:
    """Cut one query into patches and embed them; too small a query is a recorded skip."""
    start = time.perf_counter()
    query = read_query(layout.query_file(name), info.ref_lat)
    plan = plan_patches(info.tile_ground_m, query.gsd_m, cut_th, stride_tiles)
    try:
        table, pixels = cut_patches(query, plan)
        reason = "" if pixels else f"query {name} has no patch with enough valid pixels"
    except ValueError as exc:
        table, pixels, reason = PATCH_SCHEMA.empty_table(), [], str(exc)
    if reason:
        log.warning("skipping: %s", reason)
    vectors = encoder.embed(np.stack(pixels)) if pixels else np.zeros((0, encoder.dim), np.float32)
    table = table.append_column(
        "vector",
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), encoder.dim),
    )
    meta = {
        "query": name,
        "width": query.width,
        "height": query.height,
        "gsd_m": list(query.gsd_m),
        "reason": reason,
        "gallery": info.to_dict(),
        "seconds": time.perf_counter() - start,
    }
    table = table.replace_schema_metadata({"rsloc": json.dumps(meta)})
    write_table(layout.query_dir(name) / PATCHES, table)
    return PatchResult(table, query.width, query.height, query.gsd_m, reason)


def read_patches(layout: Layout, name: str) -> tuple[pa.Table, dict]:
    """A query's patch table and its query-level metadata."""
    table = pq.read_table(layout.query_dir(name) / PATCHES)
    return table, json.loads(table.schema.metadata[b"rsloc"])


def find_candidates(layout: Layout, name: str, store: TileStore, top_k: int) -> pa.Table:
    """Top-K gallery tiles for each patch of a query (column `query` = patch id)."""
    start = time.perf_counter()
    patches, _ = read_patches(layout, name)
    vectors = patches["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    dim = patches.schema.field("vector").type.list_size
    table = store.search(vectors.reshape(-1, dim), top_k)
    seconds = time.perf_counter() - start
    table = table.replace_schema_metadata({"rsloc": json.dumps({"seconds": seconds})})
    write_table(layout.query_dir(name) / CANDIDATES, table)
    return table


def read_candidates(layout: Layout, name: str) -> pa.Table:
    return pq.read_table(layout.query_dir(name) / CANDIDATES)


@dataclass
class CliqueSummary:
    """What the clique stage found for one query."""

    k: int
    nodes: int
    edges: int
    maximal: int
    kept: int
    groups: int
    best_group_score: int
    truncated: bool
    ms: float


CLIQUE_FRACTION, MIN_CLIQUE_K = 2000 / 824_796, 20


def default_clique_k(gallery_tiles: int) -> int:
    """Candidates per patch entering the clique graph: the paper's share of the gallery (2,000 of
    824,796 tiles), at least 20. Too large a share makes consistent false cliques common."""
    return max(MIN_CLIQUE_K, round(CLIQUE_FRACTION * gallery_tiles))


def find_cliques(
    layout: Layout, name: str, clique_k: int | None = None, tolerance_tiles: float = 1.5, **params
) -> CliqueSummary:
    """Spatio-geographic maximal cliques over each patch's top `clique_k` candidates.

    The tolerance is `tolerance_tiles` × the gallery tile's size √(w·h) on the ground; each
    candidate gets its best group's score (distinct patches covered) and group id (-1: none).
    """
    patches, meta = read_patches(layout, name)
    info = GalleryInfo.from_dict(meta["gallery"])
    clique_k = clique_k or default_clique_k(info.tiles)
    nodes = read_candidates(layout, name)
    nodes = nodes.filter(pc.less(nodes["rank"], clique_k))
    patch = nodes["query"].to_numpy()
    tolerance = tolerance_tiles * float(np.sqrt(np.prod(info.tile_ground_m)))
    result = find_geo_cliques(
        patch,
        patches["cx"].to_numpy()[patch],
        patches["cy"].to_numpy()[patch],
        nodes["lon"].to_numpy(),
        nodes["lat"].to_numpy(),
        nodes["score"].to_numpy(),
        tuple(meta["gsd_m"]),
        CliqueParams(tolerance_m=tolerance, **params),
    )
    nodes = nodes.append_column("clique_score", pa.array(result.candidate_score)).append_column(
        "group", pa.array(result.candidate_group)
    )
    summary = CliqueSummary(
        k=clique_k,
        nodes=result.n_nodes,
        edges=result.n_edges,
        maximal=result.n_maximal,
        kept=len(result.cliques),
        groups=len(result.group_scores),
        best_group_score=int(max(result.group_scores, default=0)),
        truncated=bool(result.truncated),
        ms=float(result.elapsed_ms),
    )
    nodes = nodes.replace_schema_metadata({"rsloc": json.dumps(asdict(summary))})
    write_table(layout.query_dir(name) / CLIQUES, nodes)
    return summary


def localize_query(layout: Layout, name: str, vote_top: int = 10) -> Localization:
    """Where a query is from retrieval and cliques, written as JSON: the best clique group's
    estimate, else the retrieval vote; the retrieval-only estimate is kept beside it."""
    patches, meta = read_patches(layout, name)
    candidates = read_candidates(layout, name)
    info = GalleryInfo.from_dict(meta["gallery"])
    if meta["reason"]:
        retrieval = Localization(name, NOT_LOCALIZED, patches=0, reason=meta["reason"])
        estimate = retrieval
    else:
        ground = image_ground_m(meta)
        nodes = pq.read_table(layout.query_dir(name) / CLIQUES)
        retrieval = vote(name, candidates, patches, info.tile_ground_m, ground, vote_top)
        estimate = from_cliques(name, nodes, patches, info.tile_ground_m, ground) or retrieval
    write_json(
        layout.query_dir(name) / LOCALIZATION,
        {"estimate": estimate.to_dict(), "retrieval": retrieval.to_dict()},
    )
    return estimate


def image_ground_m(meta: dict) -> tuple[float, float]:
    """A query's width and height on the ground in metres, from its patch-table metadata."""
    return meta["width"] * meta["gsd_m"][0], meta["height"] * meta["gsd_m"][1]


def _localization(d: dict) -> Localization:
    return Localization(**{**d, "corners_lonlat": [tuple(c) for c in d["corners_lonlat"]]})


def read_localization(layout: Layout, name: str, which: str = "estimate") -> Localization:
    """The stage-2 `estimate` of a query, or its `retrieval`-only one."""
    return _localization(json.loads((layout.query_dir(name) / LOCALIZATION).read_text())[which])


@dataclass
class EvaluationResult:
    """Scores of the evaluated queries, the reasons others were not, and the report files."""

    scores: list[evaluation.QueryScore]
    summary: evaluation.Summary
    skipped: dict[str, str]
    paths: dict[str, Path]


def read_evidence(layout: Layout, name: str) -> tuple[evaluation.QueryEvidence, GalleryInfo]:
    """Every stage's output for one query, as evaluation needs it, and the gallery it ran on."""
    folder = layout.query_dir(name)
    patches, meta = read_patches(layout, name)
    estimates = json.loads((folder / LOCALIZATION).read_text())
    candidates = read_candidates(layout, name)
    nodes = pq.read_table(folder / CLIQUES)
    verified = json.loads((folder / VERIFIED_JSON).read_text())
    matches = pq.read_table(folder / MATCHES).filter(pc.field("accepted"))
    evidence = evaluation.QueryEvidence(
        final=_localization(verified["estimate"]),
        stage2=_localization(estimates["estimate"]),
        retrieval=_localization(estimates["retrieval"]),
        patches=patches,
        candidates=candidates,
        nodes=nodes,
        accepted=dict(zip(matches["patch"].to_pylist(), matches["key"].to_pylist(), strict=True)),
        seconds={
            "patches": meta["seconds"],
            "candidates": json.loads(candidates.schema.metadata[b"rsloc"])["seconds"],
            "cliques": json.loads(nodes.schema.metadata[b"rsloc"])["ms"] / 1000,
            "verify": verified["seconds"],
        },
    )
    return evidence, GalleryInfo.from_dict(meta["gallery"])


def evaluate(layout: Layout) -> EvaluationResult:
    """Score every query in `queries/` that has been verified and has a georeference to check."""
    names = layout.query_names()
    scores, skipped, locs, truths = [], {}, {}, {}
    for name in names:
        if not (layout.query_dir(name) / VERIFIED_JSON).exists():
            skipped[name] = "not localized yet"
            continue
        truth = evaluation.read_truth(layout.query_file(name))
        if truth is None:
            skipped[name] = "no georeference to take the truth from"
            continue
        evidence, info = read_evidence(layout, name)
        scores.append(evaluation.score_query(evidence, truth, info.grid, info.zoom))
        locs[name], truths[name] = evidence.final, truth
    summary = evaluation.summarise(scores, len(names))
    paths = evaluation.write_report(layout.reports, scores, summary, skipped, locs, truths)
    return EvaluationResult(scores, summary, skipped, paths)


MATCH_SCHEMA = pa.schema(
    [
        ("patch", pa.int32()),
        ("key", pa.string()),
        ("rank", pa.int32()),
        ("clique_score", pa.int32()),
        ("accepted", pa.bool_()),
        ("reason", pa.string()),
        ("keypoints", pa.int32()),
        ("matches", pa.int32()),
        ("mac_size", pa.int32()),
        ("inliers", pa.int32()),
        ("similarity", pa.float32()),
        ("seconds", pa.float32()),
    ]
)


def verification_order(nodes: pa.Table, per_patch: int) -> dict[int, list[dict]]:
    """Each patch's candidates to verify, best first: clique members by clique score, then
    similarity; when the query has no clique at all, its top retrieval candidates."""
    rows = nodes.to_pylist()
    in_clique = any(r["clique_score"] > 0 for r in rows)
    order: dict[int, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (-r["clique_score"], -r["score"], r["rank"])):
        if in_clique and r["clique_score"] == 0:
            continue
        picked = order.setdefault(r["query"], [])
        if len(picked) < per_patch:
            picked.append(r)
    return order


def _mosaics_and_features(
    gallery: Gallery, manifest: pa.Table, keys: set[str], cache: Path, params: VerifyParams
) -> dict[str, tuple[np.ndarray, Features]]:
    """Mosaic and SIFT features of each tile key; features cached on disk per tile, time and
    SIFT settings."""
    cache = cache / f"sift_{params.max_features}_{params.contrast_threshold:g}"
    times = dict(zip(manifest["key"].to_pylist(), manifest["time"].to_pylist(), strict=True))
    tiles = [TileKey.parse(k) for k in sorted(keys)]
    refs = [TileRef(t.z, t.col, t.row, times[t.key]) for t in tiles]
    out = {}
    for ref, mosaic in gallery.mosaics(refs):
        if mosaic is None:
            continue
        path = cache / f"{ref.z}_{ref.col}_{ref.row}_{ref.time or 'none'}.npz"
        if path.exists():
            feats = Features.load(path)
        else:
            feats = extract_features(mosaic, params)
            feats.save(path)
        out[ref.key] = (mosaic, feats)
    return out


def _match_rows(patch: int, cand: dict, m: PatchMatch, seconds: float) -> dict:
    return {
        "patch": patch,
        "key": cand["key"],
        "rank": cand["rank"],
        "clique_score": cand["clique_score"],
        "accepted": m.accepted,
        "reason": m.reason,
        "keypoints": m.keypoints,
        "matches": m.matches,
        "mac_size": m.mac_size,
        "inliers": m.inliers,
        "similarity": m.similarity,
        "seconds": seconds,
    }


def verify_query(
    layout: Layout,
    name: str,
    encoder: Encoder | None,
    params: VerifyParams | None = None,
    per_patch: int = 3,
    workers: int = 2,
) -> tuple[Localization, Footprint | None]:
    """Stage 3: verify each patch against its best candidates' mosaics (first accepted wins), fit
    the query's footprint from the accepted patches, and write matches, JSON and GeoJSON.

    Without a footprint the query is "not verified" and keeps the stage-2 estimate, recorded.
    """
    start = time.perf_counter()
    params = params or VerifyParams()
    folder = layout.query_dir(name)
    patches, meta = read_patches(layout, name)
    info = GalleryInfo.from_dict(meta["gallery"])
    stage2 = read_localization(layout, name)
    order = verification_order(pq.read_table(folder / CLIQUES), per_patch)
    rows: list[dict] = []
    points: list[PatchGeoPoints] = []
    if order:
        query = read_query(layout.query_file(name), info.ref_lat)
        keys = {c["key"] for cands in order.values() for c in cands}
        with Gallery.open(layout.gallery) as gallery:
            mosaics = _mosaics_and_features(
                gallery, pq.read_table(layout.manifest), keys, layout.features, params
            )
        windows = patches.select(["x0", "y0", "width", "height"]).to_pylist()

        def verify(patch: int) -> tuple[list[dict], PatchGeoPoints | None]:
            w = windows[patch]
            crop = query.rgb[w["y0"] : w["y0"] + w["height"], w["x0"] : w["x0"] + w["width"]]
            tried = []
            for cand in order[patch]:
                if cand["key"] not in mosaics:
                    continue
                mosaic, feats = mosaics[cand["key"]]
                t0 = time.perf_counter()
                m = match_patch(crop, mosaic, params, feats, encoder)
                tried.append(_match_rows(patch, cand, m, time.perf_counter() - t0))
                if m.accepted:
                    lonlat = mosaic_to_lonlat(info.grid, TileKey.parse(cand["key"]), m.dst_xy)
                    offset = np.array([w["x0"], w["y0"]], dtype=np.float64)
                    return tried, PatchGeoPoints(patch, m.src_xy + offset, lonlat)
            return tried, None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for tried, found in pool.map(verify, sorted(order)):
                rows += tried
                if found is not None:
                    points.append(found)
        fp = fit_footprint(points, query.width, query.height)
    else:
        fp = None
    if fp is not None:
        final = Localization(
            query=name,
            method=VERIFIED,
            centre_lon=fp.centre_lon,
            centre_lat=fp.centre_lat,
            corners_lonlat=fp.corners_lonlat,
            confidence=fp.patches_agreeing / max(patches.num_rows, 1),
            support=fp.patches_agreeing,
            patches=patches.num_rows,
            error_m=fp.error_m,
        )
    else:
        why = f"not verified: {len(points)} patch(es) accepted, fewer than a footprint needs"
        final = replace(stage2, reason="; ".join(filter(None, [stage2.reason, why])))
    seconds = time.perf_counter() - start
    write_table(folder / MATCHES, pa.Table.from_pylist(rows, schema=MATCH_SCHEMA))
    record = {
        "estimate": final.to_dict(),
        "verified": fp is not None,
        "footprint": None if fp is None else fp.summary(),
        "patches_tried": len(order),
        "patches_accepted": len(points),
        "seconds": seconds,
    }
    write_json(folder / VERIFIED_JSON, record)
    geojson = folder / FOOTPRINT
    if fp is None:
        geojson.unlink(missing_ok=True)
    else:
        write_json(geojson, footprint_geojson(name, fp, {"seconds": round(seconds, 2)}))
    return final, fp
