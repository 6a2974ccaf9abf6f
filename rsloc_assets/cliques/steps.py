"""Stage 2's steps on files under a `Layout`: maximal cliques over a query's candidates, then its
estimate (the best clique group's, else the retrieval vote)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsloc_assets.cliques.native import CliqueParams, find_geo_cliques
from rsloc_assets.cliques.vote import from_cliques, vote
from rsloc_assets.layout import Layout
from rsloc_assets.records import NODE_SCHEMA, CliqueSummary, Localization, Method

CLIQUE_FRACTION, MIN_CLIQUE_K = 2000 / 824_796, 20


def default_clique_k(gallery_tiles: int) -> int:
    """Candidates per patch entering the clique graph: the paper's share of the gallery (2,000 of
    824,796 tiles), at least 20. Too large a share makes consistent false cliques common."""
    return max(MIN_CLIQUE_K, round(CLIQUE_FRACTION * gallery_tiles))


def find_cliques(
    layout: Layout, name: str, clique_k: int | None = None, tolerance_tiles: float = 1.5
) -> CliqueSummary:
    """Spatio-geographic maximal cliques over each patch's top `clique_k` candidates.

    The tolerance is `tolerance_tiles` × the gallery tile's size √(w·h) on the ground; each
    candidate gets its best group's score (distinct patches covered) and group id (-1: none).
    """
    work = layout.query(name)
    patches, meta = work.patches()
    clique_k = clique_k or default_clique_k(meta.gallery.tiles)
    nodes = work.candidates()
    nodes = nodes.filter(pc.less(nodes["rank"], clique_k))
    patch = nodes["patch"].to_numpy()
    tolerance = tolerance_tiles * float(np.sqrt(np.prod(meta.gallery.tile_ground_m)))
    result = find_geo_cliques(
        patch,
        patches["cx"].to_numpy()[patch],
        patches["cy"].to_numpy()[patch],
        nodes["lon"].to_numpy(),
        nodes["lat"].to_numpy(),
        nodes["score"].to_numpy(),
        meta.gsd_m,
        CliqueParams(tolerance_m=tolerance),
    )
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
        truncated=bool(result.truncated),
        ms=float(result.elapsed_ms),
    )
    work.write_nodes(nodes, summary)
    return summary


def localize_query(layout: Layout, name: str, vote_top: int = 10) -> Localization:
    """Where a query is from retrieval and cliques: the best clique group's estimate, else the
    retrieval vote; the retrieval-only estimate is kept beside it."""
    work = layout.query(name)
    patches, meta = work.patches()
    if meta.reason:
        retrieval = Localization(name, Method.NOT_LOCALIZED, patches=0, reason=meta.reason)
        estimate = retrieval
    else:
        tile_m, ground = meta.gallery.tile_ground_m, meta.image_ground_m
        retrieval = vote(name, work.candidates(), patches, tile_m, ground, vote_top)
        estimate = from_cliques(name, work.nodes(), patches, tile_m, ground) or retrieval
    work.write_localization(estimate, retrieval)
    return estimate
