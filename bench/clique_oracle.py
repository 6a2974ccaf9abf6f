"""Stage 2 again, in numpy + python-igraph: the baseline and oracle for the native clique library.

An independent implementation of the rules that native/README.md ("Stage 2: spatio-geographic
cliques") gives for `rsloc_geo_cliques`: duplicate suppression, the edge rule with its key and
per-node and total budgets, maximal cliques (here igraph's), the ranking and keep rule, the merge
rule and the per-hit output. It exists so that `bench.clique` can check the C library's result
against it, field by field, and time the two on the same hit set. Distances repeat the C
library's operations and WGS84 constants, so borderline edges are decided identically and the
results can be compared for equality, not closeness.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import igraph
import numpy as np

from rsloc_assets.cliques.native import CliqueParams

# The C library's WGS84 constants, for bit-identical distances (see `_metres_per_degree`).
_DEG2RAD = 0.017453292519943295
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3
_CELL_MARGIN = 1.000001  # the C CELL_MARGIN: widens cells so rounding never hides a neighbour
_PAIR_BLOCK = 8192  # nodes whose candidate pairs are expanded at once


@dataclass(frozen=True)
class HitSet:
    """One query's retrieval hits (node arrays, what stage 2 reads) with the planted truth behind
    them (what `bench.clique` scores the result against)."""

    patch: np.ndarray
    px: np.ndarray
    py: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    score: np.ndarray
    is_true: np.ndarray
    gsd_m: tuple[float, float]
    tile_m: tuple[float, float]
    centre_px: tuple[float, float]
    planted_lonlat: tuple[float, float]

    @property
    def n(self) -> int:
        """Number of hits (graph nodes)."""
        return len(self.patch)


@dataclass
class Ranked:
    """Ranking, kept cliques, groups and scores, in the native result's terms."""

    maximal: list[tuple[int, ...]]
    cliques: list[np.ndarray]
    clique_mean_score: np.ndarray
    clique_group: np.ndarray
    group_scores: np.ndarray
    candidate_score: np.ndarray
    candidate_group: np.ndarray
    ranking: np.ndarray


@dataclass
class Edges:
    """The igraph path's graph: edges (a < b) in key order and what the rules did on the way."""

    pairs: np.ndarray
    admitted: int
    suppressed: int
    key_ties: int


@dataclass
class IgraphResult:
    """The igraph path's output: its graph, igraph's maximal cliques and their ranking."""

    edges: Edges
    all_maximal: list[tuple[int, ...]]
    ranked: Ranked


def _metres_per_degree(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres per degree of lon and lat with the C library's exact operations and libm (via
    `math`), per distinct latitude, so borderline edges are decided identically."""
    uniq, inverse = np.unique(lat, return_inverse=True)
    mlon, mlat = np.empty(len(uniq)), np.empty(len(uniq))
    for k, value in enumerate(uniq.tolist()):
        phi = value * _DEG2RAD
        s = math.sin(phi)
        w = 1.0 - _WGS84_E2 * s * s
        mlon[k] = _DEG2RAD * _WGS84_A / math.sqrt(w) * math.cos(phi)
        mlat[k] = _DEG2RAD * _WGS84_A * (1.0 - _WGS84_E2) / (w * math.sqrt(w))
    return mlon[inverse], mlat[inverse]


def _candidate_pairs(
    lon: np.ndarray, lat: np.ndarray, mlon: np.ndarray, mlat: np.ndarray, reach_m: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every unordered node pair in the same or adjacent cells of a grid whose cells are at
    least `reach_m` on the ground, once each, in blocks of nodes."""
    cell_lon = reach_m / max(float(mlon.min()), 1e-6)
    cell_lat = reach_m / float(mlat.min())
    col = np.floor((lon - lon.min()) / cell_lon).astype(np.int64) + 1
    row = np.floor((lat - lat.min()) / cell_lat).astype(np.int64)
    ncols = int(col.max()) + 2
    key = row * ncols + col
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    n = len(lon)
    # Same row: cells col-1..col+1 with j > i; next row: cells col-1..col+1, all j.
    runs = ((key - 1, key + 1, True), (key + ncols - 1, key + ncols + 1, False))
    for lo_key, hi_key, same_row in runs:
        start = np.searchsorted(sorted_key, lo_key, side="left")
        stop = np.searchsorted(sorted_key, hi_key, side="right")
        for b in range(0, n, _PAIR_BLOCK):
            s, e = start[b : b + _PAIR_BLOCK], stop[b : b + _PAIR_BLOCK]
            count = e - s
            i = np.repeat(np.arange(b, b + len(s)), count)
            within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
            j = order[np.repeat(s, count) + within]
            if same_row:
                keep = j > i
                i, j = i[keep], j[keep]
            yield i, j


def suppressed_hits(
    hits: HitSet, mlon: np.ndarray, mlat: np.ndarray, radius_m: float
) -> np.ndarray:
    """Hits outranked (higher similarity; ties: lower index) by a hit of their own patch within
    `radius_m` on the ground: the native duplicate suppression, as a boolean mask."""
    dropped = np.zeros(hits.n, dtype=bool)
    if radius_m <= 0:
        return dropped
    for i, j in _candidate_pairs(hits.lon, hits.lat, mlon, mlat, radius_m * _CELL_MARGIN):
        same = hits.patch[i] == hits.patch[j]
        i, j = i[same], j[same]
        dx = (hits.lon[j] - hits.lon[i]) * (mlon[i] + mlon[j])
        dy = (hits.lat[j] - hits.lat[i]) * (mlat[i] + mlat[j])
        near = 0.25 * (dx * dx + dy * dy) <= radius_m * radius_m
        i, j = i[near], j[near]
        j_wins = (hits.score[j] > hits.score[i]) | ((hits.score[j] == hits.score[i]) & (j < i))
        dropped[np.where(j_wins, i, j)] = True
    return dropped


def build_edges_numpy(hits: HitSet, params: CliqueParams) -> Edges:
    """The native node and edge rules and budgets, vectorised in numpy.

    Hits outranked within suppress_ratio × tolerance in their own patch are dropped. An edge joins
    hits of different patches whose ground distance (mean metres per degree of both ends)
    exceeds min_distance_m and differs from their patches' pixel distance × gsd by at most
    tolerance_m. Key: residual ascending, summed similarity descending, then ends. Each hit
    picks its best edge into every other patch and keeps its max_edges_per_node best picks; an
    edge exists when either end picked it; the max_edges_total best edges survive.
    """
    mlon, mlat = _metres_per_degree(hits.lat)
    dropped = suppressed_hits(hits, mlon, mlat, params.suppress_ratio * params.tolerance_m)
    x, y = hits.px * hits.gsd_m[0], hits.py * hits.gsd_m[1]
    span = math.hypot(float(x.max() - x.min()), float(y.max() - y.min()))
    reach = (span + params.tolerance_m) * _CELL_MARGIN
    parts_a, parts_b, parts_res, parts_sum = [], [], [], []
    for i, j in _candidate_pairs(hits.lon, hits.lat, mlon, mlat, max(reach, 1.0)):
        keep = (hits.patch[i] != hits.patch[j]) & ~dropped[i] & ~dropped[j]
        i, j = i[keep], j[keep]
        dx = (hits.lon[j] - hits.lon[i]) * (mlon[i] + mlon[j])
        dy = (hits.lat[j] - hits.lat[i]) * (mlat[i] + mlat[j])
        dg = 0.5 * np.sqrt(dx * dx + dy * dy)
        ex, ey = x[j] - x[i], y[j] - y[i]
        res = np.abs(dg - np.sqrt(ex * ex + ey * ey))
        ok = (dg > params.min_distance_m) & (res <= params.tolerance_m)
        parts_a.append(np.minimum(i[ok], j[ok]).astype(np.int32))
        parts_b.append(np.maximum(i[ok], j[ok]).astype(np.int32))
        parts_res.append(res[ok].astype(np.float32))
        parts_sum.append(hits.score[i[ok]] + hits.score[j[ok]])
    a, b = np.concatenate(parts_a), np.concatenate(parts_b)
    key = _key_bits(np.concatenate(parts_res), np.concatenate(parts_sum))

    # Rank every admitted edge once by its key; the budgets then only compare ranks.
    order = np.lexsort((a.astype(np.int64) * hits.n + b, key))
    m = len(order)
    ties = int(np.count_nonzero(key[order[1:]] == key[order[:-1]]))
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    # Picks, from both ends: the best edge into each other patch, then the owner's best few.
    owner = np.concatenate([a, b]).astype(np.int64)
    group = owner * (int(hits.patch.max()) + 1) + hits.patch[np.concatenate([b, a])]
    both = np.concatenate([rank, rank])
    by_group = np.argsort(group * m + both)
    first = np.r_[True, group[by_group[1:]] != group[by_group[:-1]]]
    owner, picked = owner[by_group[first]], both[by_group[first]]
    by_owner = np.argsort(owner * m + picked)
    owner, picked = owner[by_owner], picked[by_owner]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    place = np.arange(len(owner)) - np.repeat(starts, np.diff(np.r_[starts, len(owner)]))
    kept = np.sort(picked[place < params.max_edges_per_node])
    kept = kept[np.r_[True, kept[1:] != kept[:-1]]][: params.max_edges_total]
    pairs = np.column_stack([a[order[kept]], b[order[kept]]])
    return Edges(pairs, m, int(dropped.sum()), ties)


def _key_bits(res: np.ndarray, ssum: np.ndarray) -> np.ndarray:
    """One uint64 per edge that sorts as (residual ascending, summed similarity descending)."""

    def ascending(v: np.ndarray) -> np.ndarray:
        """float32 bit patterns mapped to unsigned integers of the same order."""
        u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
        return np.where(u & 0x80000000, 0xFFFFFFFF - u, u | 0x80000000)

    return (ascending(res) << np.uint64(32)) | (0xFFFFFFFF - ascending(ssum))


def lexicographic(cliques: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Cliques with members ascending, in lexicographic order (the native output order)."""
    return sorted(tuple(sorted(c)) for c in cliques)


def _sequential_means(cliques: list[tuple[int, ...]], score: np.ndarray) -> np.ndarray:
    """Mean similarity of each clique, summed left to right in float64 as the C library does."""
    sizes = np.array([len(c) for c in cliques], dtype=np.int64)
    total = np.zeros(len(cliques))
    if not cliques:
        return total
    padded = np.full((len(cliques), int(sizes.max())), -1, dtype=np.int64)
    for k, members in enumerate(cliques):
        padded[k, : len(members)] = members
    for col in range(padded.shape[1]):
        live = padded[:, col] >= 0
        total[live] += score[padded[live, col]].astype(np.float64)
    return total / sizes


def rank_and_group(hits: HitSet, maximal: list[tuple[int, ...]], params: CliqueParams) -> Ranked:
    """The native ranking, keep, merge and scoring rules, over igraph's maximal cliques."""
    largest = max((len(c) for c in maximal), default=0)
    threshold = max(params.min_clique_size, math.ceil(params.keep_ratio * largest))
    maximal = lexicographic([c for c in maximal if len(c) >= threshold])
    size = np.array([len(c) for c in maximal], dtype=np.int32)
    mean = _sequential_means(maximal, hits.score)
    order = np.lexsort((np.arange(len(maximal)), -mean, -size.astype(np.int64)))
    kept = [int(q) for q in order[: params.top_n] if size[q] >= params.keep_ratio * largest]

    parent: dict[int, int] = {}

    def find(v: int) -> int:
        """Union-find root of hit v over the kept cliques."""
        while parent.setdefault(v, v) != v:
            v = parent[v]
        return v

    for q in kept:
        roots = sorted({find(v) for v in maximal[q]})
        for r in roots[1:]:
            parent[r] = roots[0]
    provisional: dict[int, int] = {}
    for q in kept:
        provisional.setdefault(find(maximal[q][0]), len(provisional))
    # Each group holds one hit per patch: its member in the group's best-ranked clique there.
    holder: dict[tuple[int, int], int] = {}
    for q in kept:
        for v in maximal[q]:
            holder.setdefault((provisional[find(v)], int(hits.patch[v])), v)
    group_score = np.bincount([g for g, _ in holder], minlength=len(provisional)).astype(np.int32)
    by_score = sorted(range(len(provisional)), key=lambda g: (-group_score[g], g))
    final = np.empty(len(provisional), dtype=np.int32)
    final[by_score] = np.arange(len(provisional))

    candidate_group = np.full(hits.n, -1, dtype=np.int32)
    for (g, _), v in holder.items():
        candidate_group[v] = final[g]
    scores = group_score[by_score]
    candidate_score = np.zeros(hits.n, dtype=np.int32)
    grouped = candidate_group >= 0
    candidate_score[grouped] = scores[candidate_group[grouped]]
    ranking = np.lexsort((np.arange(hits.n), -hits.score, -candidate_score.astype(np.int64)))
    return Ranked(
        maximal=maximal,
        cliques=[np.array(maximal[q], dtype=np.int32) for q in kept],
        clique_mean_score=mean[kept],
        clique_group=np.array([final[provisional[find(maximal[q][0])]] for q in kept], np.int32),
        group_scores=scores,
        candidate_score=candidate_score,
        candidate_group=candidate_group,
        ranking=ranking.astype(np.int32),
    )


def run_igraph(hits: HitSet, params: CliqueParams) -> IgraphResult:
    """Stage 2 in numpy + python-igraph: the same edges, igraph's maximal cliques, same ranking."""
    edges = build_edges_numpy(hits, params)
    graph = igraph.Graph(n=hits.n, edges=edges.pairs.tolist())
    maximal = graph.maximal_cliques(min=params.min_clique_size)
    return IgraphResult(edges, maximal, rank_and_group(hits, maximal, params))
