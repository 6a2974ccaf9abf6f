"""Per-query steps of the pipeline, on files under a `Layout`: patches → candidates → localization.

Each step reads its inputs from and writes its outputs to the query's work folder, replacing them
whole, so re-running a step for one query is idempotent and touches no other query.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsloc_assets import evaluation
from rsloc_assets.cliques import CliqueParams, find_geo_cliques
from rsloc_assets.encoders import Encoder
from rsloc_assets.gallery import Gallery
from rsloc_assets.grids import TileGrid, get_grid, ground_size_m
from rsloc_assets.layout import Layout
from rsloc_assets.localize import NOT_LOCALIZED, Localization, from_cliques, vote
from rsloc_assets.queries import PATCH_SCHEMA, cut_patches, plan_patches, read_query
from rsloc_assets.store import TileStore

log = logging.getLogger(__name__)

PATCHES = "patches.parquet"
CANDIDATES = "candidates.parquet"
CLIQUES = "cliques.parquet"
LOCALIZATION = "localization.json"


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
    patches, _ = read_patches(layout, name)
    vectors = patches["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    dim = patches.schema.field("vector").type.list_size
    table = store.search(vectors.reshape(-1, dim), top_k)
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
    """Where a query is, written as JSON: from the best clique group, else by retrieval vote."""
    patches, meta = read_patches(layout, name)
    candidates = read_candidates(layout, name)
    info = GalleryInfo.from_dict(meta["gallery"])
    if meta["reason"]:
        loc = Localization(name, NOT_LOCALIZED, patches=0, reason=meta["reason"])
    else:
        ground = (meta["width"] * meta["gsd_m"][0], meta["height"] * meta["gsd_m"][1])
        nodes = pq.read_table(layout.query_dir(name) / CLIQUES)
        loc = from_cliques(name, nodes, patches, info.tile_ground_m, ground) or vote(
            name, candidates, patches, info.tile_ground_m, ground, vote_top
        )
    write_json(layout.query_dir(name) / LOCALIZATION, loc.to_dict())
    return loc


def read_localization(layout: Layout, name: str) -> Localization:
    d = json.loads((layout.query_dir(name) / LOCALIZATION).read_text())
    d["corners_lonlat"] = [tuple(c) for c in d["corners_lonlat"]]
    return Localization(**d)


@dataclass
class EvaluationResult:
    """Scores of the evaluated queries, the reasons others were not, and the report files."""

    scores: list[evaluation.QueryScore]
    summary: evaluation.Summary
    skipped: dict[str, str]
    paths: dict[str, Path]


def evaluate(layout: Layout) -> EvaluationResult:
    """Score every query in `queries/` that has a localization and a georeference to check it by."""
    names = layout.query_names()
    scores, skipped, locs, truths = [], {}, {}, {}
    for name in names:
        if not (layout.query_dir(name) / LOCALIZATION).exists():
            skipped[name] = "not localized yet"
            continue
        truth = evaluation.read_truth(layout.query_file(name))
        if truth is None:
            skipped[name] = "no georeference to take the truth from"
            continue
        loc = read_localization(layout, name)
        patches, meta = read_patches(layout, name)
        info = GalleryInfo.from_dict(meta["gallery"])
        candidates = read_candidates(layout, name)
        scores.append(evaluation.score_query(loc, truth, info.grid, info.zoom, patches, candidates))
        locs[name], truths[name] = loc, truth
    summary = evaluation.summarise(scores, len(names))
    paths = evaluation.write_report(layout.reports, scores, summary, skipped, locs, truths)
    return EvaluationResult(scores, summary, skipped, paths)
