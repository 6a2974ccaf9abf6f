"""Stage 1's steps on files under a `Layout`: refresh the gallery's embeddings, cut and embed a
query's patches, and find each patch's top-K gallery tiles.

Each step replaces its outputs whole, so re-running it is idempotent and touches no other query.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.layout import Layout
from rsloc_assets.records import PATCH_SCHEMA, GalleryInfo, PatchMeta
from rsloc_assets.retrieval.encoders import Encoder
from rsloc_assets.retrieval.patches import cut_patches, plan_patches, read_query
from rsloc_assets.retrieval.refresh import Refresh, refresh_embeddings
from rsloc_assets.retrieval.store import TileStore, vector_array

log = logging.getLogger(__name__)

CHECK_SAMPLE = 20_000  # vectors whose norm the embeddings check reads
SCORE_SLACK = 1e-4  # cosine scores may exceed ±1 by float32 rounding


@dataclass(frozen=True)
class EmbeddingsCheck:
    """Rows = tiles that decode; sampled vectors unit-norm, of the encoder's dimension."""

    rows: int
    expected: int
    unit_norm: bool
    dimension: int
    passed: bool


@dataclass(frozen=True)
class EmbeddingRefresh:
    """One refresh of the store: the refresh itself, whether an ANN index exists, the check."""

    refresh: Refresh
    indexed: bool
    check: EmbeddingsCheck


def check_embeddings(store: TileStore, expected: int, dim: int) -> EmbeddingsCheck:
    """Row count against the tiles that decode; norms of (a sample of the first) stored vectors."""
    rows = store.count()
    vectors = store.to_arrow(["vector"], limit=CHECK_SAMPLE)["vector"]
    stored_dim = vectors.type.list_size
    flat = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    norms = np.linalg.norm(flat.reshape(-1, stored_dim), axis=1)
    unit = bool(np.all(np.abs(norms - 1) < 1e-3))
    return EmbeddingsCheck(
        rows, expected, unit, stored_dim, rows == expected and unit and stored_dim == dim
    )


def refresh_tile_embeddings(
    layout: Layout,
    encoder: Encoder,
    store: TileStore,
    batch_size: int,
    index_min_rows: int,
    index_kind: str,
) -> EmbeddingRefresh:
    """Embed new or changed tiles (and their neighbours) into the store, drop stale and corrupt
    rows, keep the ANN index current, and check the result."""
    manifest, _ = layout.read_manifest()
    with Gallery.open(layout.gallery) as gallery:
        refresh = refresh_embeddings(
            gallery, manifest, encoder, store, layout.corrupt_tiles(), batch_size
        )
    indexed = store.ensure_index(index_min_rows, index_kind)
    layout.write_corrupt_tiles(refresh.corrupt)
    check = check_embeddings(store, manifest.num_rows - len(refresh.corrupt), encoder.dim)
    return EmbeddingRefresh(refresh, indexed, check)


@dataclass
class PatchResult:
    """A query's patches with embeddings, or the reason it has none."""

    table: pa.Table
    width: int
    height: int
    gsd_m: tuple[float, float]
    reason: str
    seconds: float


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
    table = table.append_column("vector", vector_array(vectors))
    seconds = time.perf_counter() - start
    meta = PatchMeta(name, query.width, query.height, query.gsd_m, reason, info, seconds)
    layout.query(name).write_patches(table, meta)
    return PatchResult(table, query.width, query.height, query.gsd_m, reason, seconds)


@dataclass(frozen=True)
class CandidatesResult:
    """A query's top-K table, the step's seconds, and whether its scores pass the check
    (non-empty, within [−1, 1])."""

    table: pa.Table
    seconds: float
    best_score: float
    scores_in_range: bool

    @property
    def passed(self) -> bool:
        return self.table.num_rows > 0 and self.scores_in_range


def find_candidates(layout: Layout, name: str, store: TileStore, top_k: int) -> CandidatesResult:
    """Top-K gallery tiles for each patch of a query, with cosine scores."""
    start = time.perf_counter()
    work = layout.query(name)
    patches, _ = work.patches()
    vectors = patches["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    dim = patches.schema.field("vector").type.list_size
    table = store.search(vectors.reshape(-1, dim), top_k)
    seconds = time.perf_counter() - start
    work.write_candidates(table, seconds)
    if table.num_rows == 0:
        return CandidatesResult(table, seconds, 0.0, True)
    low, high = (v.as_py() for v in pc.min_max(table["score"]).values())
    in_range = low >= -1 - SCORE_SLACK and high <= 1 + SCORE_SLACK
    return CandidatesResult(table, seconds, float(high), bool(in_range))
