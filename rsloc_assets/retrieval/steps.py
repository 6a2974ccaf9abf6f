"""Stage 1's steps on files under a `Layout`: refresh the gallery's embeddings, cut and embed a
query's patches, and find each patch's top-K gallery tiles.

Each step replaces its outputs whole, so re-running it is idempotent and touches no other query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsloc_assets.gallery.blocks import BLOCK_TILES, Block, block_keys
from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.layout import Layout
from rsloc_assets.records import (
    CANDIDATE_SCHEMA,
    PATCH_SCHEMA,
    GalleryInfo,
    HeadingVote,
    PatchMeta,
    key_times,
)
from rsloc_assets.retrieval.encoders import Encoder
from rsloc_assets.retrieval.heading import VOTE_PATCHES, vote_heading, vote_order
from rsloc_assets.retrieval.patches import (
    MIN_VALID_FRACTION,
    PatchPlan,
    QueryImage,
    cut_patches,
    heading_views,
    headings_deg,
    min_valid_share,
    nearest_level,
    plan_patches,
    read_query,
)
from rsloc_assets.retrieval.refresh import Refresh, refresh_block
from rsloc_assets.retrieval.store import TileStore, vector_array

log = logging.getLogger(__name__)

CHECK_VALUES = 20_000 * 1280  # floats the embeddings check reads (20,000 GeM vectors, 100 MB)
SCORE_SLACK = 1e-4  # cosine scores may exceed ±1 by float32 rounding
# Patches whose views are cut and embedded together: bounds what a query of any size holds
# (64 views of 768² px ≈ 110 MB, and the encoder's batch), one batch for most queries.
EMBED_CHUNK = 64


@dataclass(frozen=True)
class EmbeddingsCheck:
    """Rows = tiles that decode, one row per tile; sampled vectors unit-norm, of the encoder's
    dimension."""

    rows: int
    expected: int
    duplicates: int
    outdated: int  # rows of an older time than the manifest's
    unit_norm: bool
    dimension: int
    passed: bool


@dataclass(frozen=True)
class BlockRefresh:
    """One block's refresh in its level's store."""

    block: Block
    refresh: Refresh


@dataclass(frozen=True)
class LevelIndex:
    """One level's store made searchable: stale rows dropped, whether an ANN index exists, the
    check."""

    zoom: int
    stale: int
    indexed: bool
    check: EmbeddingsCheck


@dataclass(frozen=True)
class EmbeddingRefresh:
    """A refresh of the whole gallery: every block's refresh, then every level's index."""

    blocks: list[BlockRefresh]
    levels: list[LevelIndex]


def check_embeddings(
    store: TileStore, expected: int, dim: int, times: Mapping[str, str] | None = None
) -> EmbeddingsCheck:
    """Row count against the tiles that decode, keys stored twice, rows of another time than the
    manifest's `times` (when given), norms of (a sample of the first) stored vectors."""
    rows, duplicates = store.count(), len(store.duplicate_keys())
    outdated = 0
    if times is not None:
        outdated = sum(times.get(key, t) != t for key, t in store.versions().items())
    vectors = store.to_arrow(["vector"], limit=max(1, CHECK_VALUES // dim))["vector"]
    stored_dim = vectors.type.list_size
    flat = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    norms = np.linalg.norm(flat.reshape(-1, stored_dim), axis=1)
    unit = bool(np.all(np.abs(norms - 1) < 1e-3))
    passed = rows == expected and not (duplicates or outdated) and unit and stored_dim == dim
    return EmbeddingsCheck(rows, expected, duplicates, outdated, unit, stored_dim, passed)


def embed_blocks(
    layout: Layout,
    encoder: Encoder,
    stores: Mapping[int, TileStore],
    blocks: Sequence[Block],
    batch_size: int,
) -> list[BlockRefresh]:
    """For each block (of a working level, zoom → its store): embed its new or changed tiles and
    those next to a change, drop its stale and corrupt rows, and record its corrupt tiles.

    One process at a time refreshes a block (its lock `tile_embeddings-<block>`); different
    blocks go on at once, in processes or on machines of their own, LanceDB ordering their
    writes to the one table."""
    out = []
    with Gallery.open(layout.gallery) as gallery:
        for zoom in sorted({block.zoom for block in blocks}):
            if zoom not in stores:
                working = ", ".join(str(z) for z in sorted(stores))
                raise ValueError(f"gallery block at zoom {zoom}: the working levels are {working}")
            manifest = layout.read_manifest(zoom=zoom)
            for block in sorted(b for b in blocks if b.zoom == zoom):
                with layout.lock(f"tile_embeddings-{block.key}"):
                    refresh = refresh_block(
                        gallery,
                        block,
                        manifest,
                        encoder,
                        stores[zoom],
                        layout.corrupt_tiles(),
                        batch_size,
                    )
                    with layout.lock("corrupt_tiles"):
                        known = layout.corrupt_tiles()
                        others = {k: t for k, t in known.items() if not block.holds(k)}
                        layout.write_corrupt_tiles(others | refresh.corrupt)
                out.append(BlockRefresh(block, refresh))
    return out


def index_tile_embeddings(
    layout: Layout,
    stores: Mapping[int, TileStore],
    dim: int,
    index_min_rows: int,
    index_kind: str,
) -> list[LevelIndex]:
    """For each working level: drop rows of tiles no longer in the manifest (blocks gone from the
    gallery) or known corrupt, build or update the ANN index, and check the store against the
    manifest."""
    out = []
    with layout.lock("tile_index"):
        corrupt = layout.corrupt_tiles()
        for zoom, store in stores.items():
            times = key_times(layout.read_manifest(["key", "time"], zoom=zoom))
            bad = {key for key, t in corrupt.items() if times.get(key) == t}
            stale = [key for key in store.versions() if key not in times or key in bad]
            store.delete(stale)
            indexed = store.ensure_index(index_min_rows, index_kind)
            check = check_embeddings(store, len(times) - len(bad), dim, times)
            out.append(LevelIndex(zoom, len(stale), indexed, check))
    return out


def gallery_blocks(layout: Layout, zooms: Sequence[int], side: int = BLOCK_TILES) -> list[Block]:
    """Every block holding a tile of the manifest at the levels `zooms`."""
    return [
        Block.parse(key)
        for zoom in zooms
        for key in block_keys(layout.read_manifest(["level", "col", "row"], zoom=zoom), side)
    ]


def refresh_tile_embeddings(
    layout: Layout,
    encoder: Encoder,
    stores: Mapping[int, TileStore],
    batch_size: int,
    index_min_rows: int,
    index_kind: str,
) -> EmbeddingRefresh:
    """The whole gallery in one call: every block of every working level, then the index (what
    the `tile_embeddings` partitions and `tile_index` do between them)."""
    blocks = gallery_blocks(layout, list(stores))
    done = embed_blocks(layout, encoder, stores, blocks, batch_size)
    levels = index_tile_embeddings(layout, stores, encoder.dim, index_min_rows, index_kind)
    return EmbeddingRefresh(done, levels)


@dataclass
class PatchResult:
    """A query's patches with embeddings, or the reason it has none."""

    table: pa.Table
    width: int
    height: int
    gsd_m: tuple[float, float]
    reason: str
    seconds: float
    zoom: int
    heading_deg: float


def prepare_query(
    layout: Layout,
    name: str,
    levels: Sequence[GalleryInfo],
    encoder: Encoder,
    store_for: Callable[[GalleryInfo], TileStore],
    cut_th: float = 1.0,
    stride_tiles: float = 1.0,
    headings: int = 4,
    vote_patches: int = VOTE_PATCHES,
) -> PatchResult:
    """Cut one query into patches for the gallery level nearest its ground resolution (of
    `levels`), vote its heading among `headings` evenly spaced ones against that level's store
    (`store_for`; `vote_heading`, `vote_patches` patches at a time), since the encoder is not
    rotation-invariant and a query may face any way, and embed every other patch at the voted
    heading alone; too small a query is a recorded skip.

    Adds `view_valid` (each patch's view's valid share) and `vector` (its embedding) to the
    patch table; `PatchMeta.vote` records the vote.
    """
    start = time.perf_counter()
    turns = headings_deg(headings)
    query = read_query(layout.query_file(name), levels[0].ref_lat)
    info = nearest_level(levels, query.gsd_m)
    plan = plan_patches(info.tile_ground_m, query.gsd_m, cut_th, stride_tiles)
    try:
        table = cut_patches(query, plan)
        reason = "" if table.num_rows else f"query {name} has no patch with enough valid pixels"
    except ValueError as exc:
        table, reason = PATCH_SCHEMA.empty_table(), str(exc)
    if reason:
        log.warning("skipping: %s", reason)
    vote = HeadingVote()
    vectors = np.zeros((table.num_rows, encoder.dim), np.float32)
    valid = np.zeros(table.num_rows, np.float32)
    done = np.zeros(table.num_rows, bool)
    if len(turns) > 1 and table.num_rows:

        def every_heading(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            part = table.take(rows)
            views = [_embed_views(query, part, plan, turn, encoder) for turn in turns]
            return np.stack([v for v, _ in views], axis=1), np.stack([s for _, s in views], axis=1)

        order = vote_order(table["valid_fraction"].to_numpy())
        needed = min_valid_share(query.width, query.height, plan)
        voted = vote_heading(store_for(info), order, every_heading, needed, vote_patches)
        vote, sample = voted.vote, np.array(voted.vote.sample)
        vectors[sample], valid[sample] = voted.vectors[:, vote.index], voted.valid[:, vote.index]
        done[sample] = True
    rest = np.flatnonzero(~done)
    for first in range(0, len(rest), EMBED_CHUNK):
        rows = rest[first : first + EMBED_CHUNK]
        part = table.take(rows)
        vectors[rows], valid[rows] = _embed_views(query, part, plan, turns[vote.index], encoder)
    table = table.append_column("view_valid", pa.array(valid)).append_column(
        "vector", vector_array(vectors)
    )
    seconds = time.perf_counter() - start
    meta = PatchMeta(
        name, query.width, query.height, query.gsd_m, reason, info, seconds, turns, vote
    )
    layout.query(name).write_patches(table, meta)
    return PatchResult(
        table, query.width, query.height, query.gsd_m, reason, seconds, info.zoom, meta.heading_deg
    )


def _embed_views(
    query: QueryImage, patches: pa.Table, plan: PatchPlan, heading: float, encoder: Encoder
) -> tuple[np.ndarray, np.ndarray]:
    """The patches' views at one heading, embedded, and their valid shares."""
    views, valid = heading_views(query, patches, plan, heading, encoder.input_size)
    if not len(views):
        return np.zeros((0, encoder.dim), np.float32), valid
    return encoder.embed(views), valid


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
    """Top-K gallery tiles for each patch of a query by cosine score, each with the query's
    heading; views less valid than `min_valid_share` are not searched."""
    start = time.perf_counter()
    work = layout.query(name)
    patches, meta = work.patches()
    if "view_valid" not in patches.column_names:
        raise ValueError(f"{work.patches_path} predates the heading vote: rematerialize it")
    dim = patches.schema.field("vector").type.list_size
    vectors = patches["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    valid = patches["view_valid"].to_numpy()
    rows = np.flatnonzero(valid >= _min_valid(patches, meta))
    hits = store.search(vectors.reshape(-1, dim)[rows], top_k)
    table = _candidates(hits, rows, meta.heading_deg)
    seconds = time.perf_counter() - start
    work.write_candidates(table, seconds)
    if table.num_rows == 0:
        return CandidatesResult(table, seconds, 0.0, True)
    low, high = (v.as_py() for v in pc.min_max(table["score"]).values())
    in_range = low >= -1 - SCORE_SLACK and high <= 1 + SCORE_SLACK
    return CandidatesResult(table, seconds, float(high), bool(in_range))


def _min_valid(patches: pa.Table, meta: PatchMeta) -> float:
    """The valid share a view needs to be searched (`min_valid_share` of the query's patches)."""
    if patches.num_rows == 0:
        return MIN_VALID_FRACTION
    plan = PatchPlan(patches["width"][0].as_py(), patches["height"][0].as_py(), 1, 1)
    return min_valid_share(meta.width, meta.height, plan)


def _candidates(hits: pa.Table, rows: np.ndarray, heading_deg: float) -> pa.Table:
    """`TileStore.search`'s table of the searched `rows` as candidates: `patch` the patch's row,
    each at the query's heading."""
    columns = {name: hits[name] for name in hits.column_names}
    columns["patch"] = rows[hits["patch"].to_numpy()].astype(np.int32)
    columns["heading_deg"] = np.full(hits.num_rows, heading_deg, np.float32)
    return pa.table(columns, schema=CANDIDATE_SCHEMA)
