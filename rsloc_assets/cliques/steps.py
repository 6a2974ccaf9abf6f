"""Stage 2's steps on files under a `Layout`: maximal cliques over a query's candidates, the
ranked location hypotheses they seed, then the query's estimate (the best hypothesis)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsloc_assets.cliques.hypotheses import HypothesisParams, Seed, rank_hypotheses
from rsloc_assets.cliques.native import CliqueParams, find_geo_cliques
from rsloc_assets.cliques.vote import footprint, vote, vote_members
from rsloc_assets.layout import Layout
from rsloc_assets.records import NODE_SCHEMA, CliqueSummary, Hypothesis, Localization, Method

CLIQUE_FRACTION, MIN_CLIQUE_K = 2000 / 824_796, 20
# Cliques kept as seeds: the true place's clique can be half the size of a large false one (a
# mirrored or chained set of hits), so more and smaller cliques than the library's defaults
# (top 64 of ≥ 0.5 × the largest) are kept; the rigid fit then sorts them.
SEED_KEEP_RATIO, SEED_TOP_N = 0.25, 256


def default_clique_k(gallery_tiles: int) -> int:
    """Candidates per patch entering the clique graph: the paper's share of the gallery (2,000 of
    824,796 tiles), at least 20. Too large a share makes consistent false cliques common."""
    return max(MIN_CLIQUE_K, round(CLIQUE_FRACTION * gallery_tiles))


def find_cliques(
    layout: Layout,
    name: str,
    clique_k: int | None = None,
    tolerance_tiles: float = 1.5,
    vote_top: int = 10,
    params: HypothesisParams | None = None,
) -> CliqueSummary:
    """Spatio-geographic maximal cliques over each patch's top `clique_k` candidates, and the
    ranked hypotheses seeded by the kept cliques and the retrieval vote.

    The tolerance is `tolerance_tiles` × the gallery tile's size √(w·h) on the ground; each
    candidate gets its best group's score (distinct patches covered) and group id (-1: none).
    The summary's `ms` is the whole step's.
    """
    start = time.perf_counter()
    work = layout.query(name)
    patches, meta = work.patches()
    clique_k = clique_k or default_clique_k(meta.gallery.tiles)
    nodes = work.candidates()
    nodes = nodes.filter(pc.less(nodes["rank"], clique_k))
    patch = nodes["patch"].to_numpy()
    tile_m = float(np.sqrt(np.prod(meta.gallery.tile_ground_m)))
    result = find_geo_cliques(
        patch,
        patches["cx"].to_numpy()[patch],
        patches["cy"].to_numpy()[patch],
        nodes["lon"].to_numpy(),
        nodes["lat"].to_numpy(),
        nodes["score"].to_numpy(),
        meta.gsd_m,
        CliqueParams(
            tolerance_m=tolerance_tiles * tile_m, keep_ratio=SEED_KEEP_RATIO, top_n=SEED_TOP_N
        ),
    )
    seeds = [Seed(c, Method.CLIQUE) for c in result.cliques]
    voted = vote_members(nodes, patches, meta.gallery.tile_ground_m, vote_top)
    seeds.append(Seed(voted, Method.RETRIEVAL_VOTE))
    if patches.num_rows == 1:
        # One patch forms no clique: each of its `vote_top` best tiles is a place to verify.
        best = np.flatnonzero(nodes["rank"].to_numpy() < vote_top)
        seeds += [Seed(np.array([i]), Method.RETRIEVAL_VOTE) for i in best]
    grid, zoom = meta.gallery.grid, meta.gallery.zoom
    hypotheses, table = rank_hypotheses(nodes, patches, seeds, tile_m, grid, zoom, params)
    nodes = (
        nodes.append_column("clique_score", pa.array(result.candidate_score))
        .append_column("group", pa.array(result.candidate_group))
        .cast(NODE_SCHEMA)
    )
    summary = CliqueSummary(
        k=clique_k,
        nodes=result.n_nodes,
        edges=result.n_edges,
        maximal=result.n_maximal,
        kept=len(result.cliques),
        groups=len(result.group_scores),
        best_group_score=int(max(result.group_scores, default=0)),
        hypotheses=len(hypotheses),
        best_support=hypotheses[0].support if hypotheses else 0,
        truncated=bool(result.truncated),
        ms=(time.perf_counter() - start) * 1e3,
    )
    work.write_nodes(nodes, summary)
    work.write_hypotheses(table, hypotheses)
    return summary


def from_hypothesis(
    query: str, h: Hypothesis, patches: int, image_ground_m: tuple[float, float]
) -> Localization:
    """A hypothesis as a query's estimate: its centre, turned footprint and patch support."""
    return Localization(
        query=query,
        method=h.source,
        centre_lon=h.centre_lon,
        centre_lat=h.centre_lat,
        corners_lonlat=footprint(h.centre_lon, h.centre_lat, image_ground_m, h.rotation_deg),
        confidence=h.support / max(patches, 1),
        support=h.support,
        patches=patches,
        error_m=h.residual_m,
    )


def localize_query(layout: Layout, name: str, vote_top: int = 10) -> Localization:
    """Where a query is from retrieval and cliques: the best hypothesis (most evidence), else the
    retrieval vote; the retrieval-only estimate is kept beside it."""
    work = layout.query(name)
    patches, meta = work.patches()
    if meta.reason:
        retrieval = Localization(name, Method.NOT_LOCALIZED, patches=0, reason=meta.reason)
        estimate = retrieval
    else:
        tile_m, ground = meta.gallery.tile_ground_m, meta.image_ground_m
        retrieval = vote(name, work.candidates(), patches, tile_m, ground, vote_top)
        _, hypotheses = work.hypotheses()
        estimate = (
            from_hypothesis(name, hypotheses[0], patches.num_rows, ground)
            if hypotheses
            else retrieval
        )
    work.write_localization(estimate, retrieval)
    return estimate
