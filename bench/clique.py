"""Stage-2 benchmark: the native clique library against the same stage in numpy + python-igraph.

Hit sets are shaped like the paper's: 100 query patches × top-2000 candidates = 200,000 nodes
over an 824,796-tile z15 gallery in RSLoc's geographic grid (1091 × 756 tiles around 46.5°N
2.5°E, ≈ 920 × 923 km of France), with one planted true location seen by 80 % of the patches.
Run as `python -m bench.clique`; it ends with the line
`clique: nodes=<n> edges=<e> native_ms=<a> igraph_ms=<b> speedup=<b/a>x planted_found=<yes|no>`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import igraph
import numpy as np

from bench.common import write_result
from rsloc_assets.cliques import CliqueParams, CliqueResult, find_geo_cliques
from rsloc_assets.geodesy import metres_per_degree, offset_lonlat
from rsloc_assets.grids import TileKey, get_grid, ground_size_m

ZOOM = 15
GALLERY_CENTRE = (2.5, 46.5)
GALLERY_COLS, GALLERY_ROWS = 1091, 756  # 824,796 tiles, the size of the paper's z15 gallery
GSD_M = 4.78  # m/px of the paper's queries
SEEN_FRACTION = 0.8
TOLERANCE_TILES = 1.5
SWEEP_EDGES_PER_NODE = (1, 2, 4, 8, 16, 32, 64)
REFERENCE_TOTAL_EDGES = 100_000  # the reference implementation's total edge budget

# The C library's WGS84 constants, for bit-identical distances (see `_metres_per_degree`).
_DEG2RAD = 0.017453292519943295
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3
_CELL_MARGIN = 1.000001
_PAIR_BLOCK = 8192  # nodes whose candidate pairs are expanded at once

T = TypeVar("T")


@dataclass(frozen=True)
class HitSet:
    """One query's retrieval hits (node arrays) with the planted truth behind them."""

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
    clique_size: np.ndarray
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


def make_hits(patches: int, candidates: int, seed: int) -> HitSet:
    """A seeded hit set: a grid of patches one tile apart, each with `candidates` gallery tiles.

    80 % of the patches hold their true tile at a rank skewed towards the top (rank = K·u²);
    every other candidate is a distinct, uniformly random other gallery tile. Scores fall with
    rank, so true hits score slightly higher on average.
    """
    rng = np.random.default_rng(seed)
    grid = get_grid("ge")
    centre = grid.tile_at(*GALLERY_CENTRE, ZOOM)
    col0, row0 = centre.col - GALLERY_COLS // 2, centre.row - GALLERY_ROWS // 2
    side = math.ceil(math.sqrt(patches))
    n_rows = math.ceil(patches / side)
    margin = side + 2
    planted = TileKey(
        ZOOM,
        int(rng.integers(col0 + margin, col0 + GALLERY_COLS - margin)),
        int(rng.integers(row0 + margin, row0 + GALLERY_ROWS - margin)),
    )
    tile_w, tile_h = ground_size_m(grid, planted)
    plon, plat = grid.centres(ZOOM, np.array([planted.col]), np.array([planted.row]))
    shift = rng.uniform(-0.5, 0.5, 2) * (tile_w, tile_h)
    plon, plat = offset_lonlat(plon[0], plat[0], shift[0], shift[1])
    planted_lonlat = (float(plon), float(plat))

    step_x, step_y = tile_w / GSD_M, tile_h / GSD_M
    index = np.arange(patches)
    ppx = (index % side + 0.5) * step_x
    ppy = (index // side + 0.5) * step_y
    cx, cy = side * step_x / 2, n_rows * step_y / 2
    tlon, tlat = offset_lonlat(plon, plat, (ppx - cx) * GSD_M, -(ppy - cy) * GSD_M)
    true_tile = np.array(
        [
            _tile_index(grid.tile_at(lo, la, ZOOM), col0, row0)
            for lo, la in zip(tlon, tlat, strict=True)
        ]
    )

    n_tiles = GALLERY_COLS * GALLERY_ROWS
    tiles = np.stack([rng.choice(n_tiles - 1, candidates, replace=False) for _ in index])
    tiles += tiles >= true_tile[:, None]  # never the patch's own true tile
    seen = rng.permutation(patches)[: round(SEEN_FRACTION * patches)]
    true_rank = np.floor(candidates * rng.uniform(size=len(seen)) ** 2).astype(np.int64)
    tiles[seen, true_rank] = true_tile[seen]
    score = -np.sort(-rng.normal(0.6, 0.05, size=(patches, candidates)), axis=1)

    cols = col0 + tiles % GALLERY_COLS
    rows = row0 + tiles // GALLERY_COLS
    lon, lat = grid.centres(ZOOM, cols.ravel(), rows.ravel())
    return HitSet(
        patch=np.repeat(index, candidates).astype(np.int32),
        px=np.repeat(ppx, candidates),
        py=np.repeat(ppy, candidates),
        lon=lon,
        lat=lat,
        score=score.ravel().astype(np.float32),
        is_true=(tiles == true_tile[:, None]).ravel(),
        gsd_m=(GSD_M, GSD_M),
        tile_m=(tile_w, tile_h),
        centre_px=(cx, cy),
        planted_lonlat=planted_lonlat,
    )


def _tile_index(tile: TileKey, col0: int, row0: int) -> int:
    """Row-major index of `tile` in the gallery block whose top-left tile is (col0, row0)."""
    return (tile.row - row0) * GALLERY_COLS + (tile.col - col0)


def run_native(hits: HitSet, params: CliqueParams) -> CliqueResult:
    """Stage 2 through the C library."""
    return find_geo_cliques(
        hits.patch, hits.px, hits.py, hits.lon, hits.lat, hits.score, hits.gsd_m, params
    )


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


def _lexicographic(cliques: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
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
    maximal = _lexicographic([c for c in maximal if len(c) >= threshold])
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
        clique_size=size[kept],
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


def compare(native: CliqueResult, igraph_result: IgraphResult) -> dict[str, bool]:
    """Which parts of the native result equal the igraph path's."""
    ref = igraph_result.ranked
    same_members = len(native.cliques) == len(ref.cliques) and all(
        np.array_equal(a, b) for a, b in zip(native.cliques, ref.cliques, strict=False)
    )
    return {
        "suppressed": native.n_suppressed == igraph_result.edges.suppressed,
        "edges": native.n_edges == len(igraph_result.edges.pairs),
        "n_maximal": native.n_maximal == len(ref.maximal),
        "kept_cliques": same_members,
        "clique_mean_score": np.array_equal(native.clique_mean_score, ref.clique_mean_score),
        "groups": np.array_equal(native.clique_group, ref.clique_group)
        and np.array_equal(native.group_scores, ref.group_scores),
        "candidate_scores": np.array_equal(native.candidate_score, ref.candidate_score)
        and np.array_equal(native.candidate_group, ref.candidate_group),
        "ranking": np.array_equal(native.ranking, ref.ranking),
    }


def planted_check(hits: HitSet, result: CliqueResult) -> dict:
    """Whether the best group is mostly planted true hits and its implied query centre lies
    within one tile of the planted centre; recall = share of the true hits that are in it."""
    members = result.group_members(0) if len(result.group_scores) else np.empty(0, np.int64)
    recall = float(hits.is_true[members].sum() / max(int(hits.is_true.sum()), 1))
    if len(members) == 0:
        return {"found": False, "true_fraction": 0.0, "recall": 0.0, "centre_error_m": None}
    east = (hits.px[members] - hits.centre_px[0]) * hits.gsd_m[0]
    north = -(hits.py[members] - hits.centre_px[1]) * hits.gsd_m[1]
    lon, lat = offset_lonlat(hits.lon[members], hits.lat[members], -east, -north)
    plon, plat = hits.planted_lonlat
    m_lon, m_lat = metres_per_degree(plat)
    m_east = (float(lon.mean()) - plon) * float(m_lon)
    m_north = (float(lat.mean()) - plat) * float(m_lat)
    true_fraction = float(hits.is_true[members].mean())
    within = abs(m_east) <= hits.tile_m[0] and abs(m_north) <= hits.tile_m[1]
    return {
        "found": bool(true_fraction >= 0.5 and within),
        "true_fraction": round(true_fraction, 3),
        "recall": round(recall, 3),
        "centre_error_m": round(math.hypot(m_east, m_north), 1),
    }


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn`'s result and its wall time in milliseconds (time.perf_counter)."""
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1e3


def sweep(hits: HitSet, base: CliqueParams, repeats: int) -> list[dict]:
    """Native stage over per-node edge budgets × {reference, default} total budgets."""
    rows = []
    for total in (REFERENCE_TOTAL_EDGES, base.max_edges_total):
        for per_node in SWEEP_EDGES_PER_NODE:
            params = replace(base, max_edges_per_node=per_node, max_edges_total=total)
            runs = [timed(lambda p=params: run_native(hits, p)) for _ in range(repeats)]
            result, times = runs[-1][0], [ms for _, ms in runs]
            check = planted_check(hits, result)
            rows.append(
                {
                    "max_edges_per_node": per_node,
                    "max_edges_total": total,
                    "edges": result.n_edges,
                    "maximal_cliques": result.n_maximal,
                    "native_ms": round(min(times), 1),
                    "planted_found": check["found"],
                    "best_group_score": int(result.group_scores[0])
                    if len(result.group_scores)
                    else 0,
                    "best_group_true_fraction": check["true_fraction"],
                    "recall": check["recall"],
                    "truncated": result.truncated,
                }
            )
    return rows


def _table(rows: list[dict]) -> str:
    """The edge-budget sweep as a fixed-width text table."""
    lines = [
        "per_node    total      edges  maximal  trunc  native_ms  best_score  true_frac"
        "  recall  planted"
    ]
    for r in rows:
        lines.append(
            f"{r['max_edges_per_node']:>8}  {r['max_edges_total']:>7}  {r['edges']:>9}"
            f"  {r['maximal_cliques']:>7}  {_yes(r['truncated']):>5}  {r['native_ms']:>9.1f}"
            f"  {r['best_group_score']:>10}  {r['best_group_true_fraction']:>9.3f}"
            f"  {r['recall']:>6.3f}  {_yes(r['planted_found']):>7}"
        )
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    """The report's spelling of a flag."""
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print its report and final line, write clique.json; returns the line."""
    parser = argparse.ArgumentParser(prog="python -m bench.clique", description=__doc__)
    parser.add_argument("--patches", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    hits = make_hits(args.patches, args.candidates, args.seed)
    tolerance = TOLERANCE_TILES * math.sqrt(hits.tile_m[0] * hits.tile_m[1])
    params = CliqueParams(tolerance_m=tolerance)

    native_times, igraph_times = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both paths alike
        native, ms = timed(lambda: run_native(hits, params))
        native_times.append(ms)
        ref, ms = timed(lambda: run_igraph(hits, params))
        igraph_times.append(ms)
    same = compare(native, ref)
    # The whole maximal-clique set: native with nothing cut by ratio or rank, against igraph's.
    everything = replace(
        params, keep_ratio=0.0, top_n=np.iinfo(np.int32).max, max_cliques=np.iinfo(np.int64).max
    )
    native_all = run_native(hits, everything)
    native_set = _lexicographic([tuple(c.tolist()) for c in native_all.cliques])
    same["all_maximal_cliques"] = native_set == _lexicographic(ref.all_maximal)
    same_cliques = all(same.values()) and not native.truncated and not native_all.truncated
    check = planted_check(hits, native)
    rows = sweep(hits, params, args.repeats)

    native_ms, igraph_ms = min(native_times), min(igraph_times)
    figures = {
        "hits": {
            "patches": args.patches,
            "candidates_per_patch": args.candidates,
            "nodes": hits.n,
            "seed": args.seed,
            "gallery_tiles": GALLERY_COLS * GALLERY_ROWS,
            "gallery_grid": f"ge z{ZOOM}, {GALLERY_COLS} x {GALLERY_ROWS} tiles",
            "seen_fraction": SEEN_FRACTION,
            "true_hits": int(hits.is_true.sum()),
            "mean_score_true": float(hits.score[hits.is_true].mean()),
            "mean_score_other": float(hits.score[~hits.is_true].mean()),
            "tile_m": [round(v, 1) for v in hits.tile_m],
            "gsd_m": list(hits.gsd_m),
            "planted_lonlat": [round(v, 6) for v in hits.planted_lonlat],
        },
        "params": asdict(params),
        "nodes": native.n_nodes,
        "edges": native.n_edges,
        "maximal_cliques_kept_threshold": native.n_maximal,
        "maximal_cliques_all": len(ref.all_maximal),
        "suppressed_hits": native.n_suppressed,
        "edges_admitted_by_rule": ref.edges.admitted,
        "edge_key_ties": ref.edges.key_ties,
        "truncated": native.truncated,
        "native_ms": {"best": native_ms, "median": statistics.median(native_times)},
        "native_inner_ms": native.elapsed_ms,
        "igraph_ms": {"best": igraph_ms, "median": statistics.median(igraph_times)},
        "speedup": igraph_ms / native_ms,
        "timing": f"time.perf_counter around each whole path, best of {args.repeats}",
        "same": same,
        "same_cliques": same_cliques,
        "planted": check,
        "best_group_score": int(native.group_scores[0]) if len(native.group_scores) else 0,
        "edge_budget_sweep": rows,
    }
    write_result("clique", figures, args.results_dir)

    print(
        f"native ms (best/median of {args.repeats}): {native_ms:.1f} / "
        f"{statistics.median(native_times):.1f}; igraph path: {igraph_ms:.1f} / "
        f"{statistics.median(igraph_times):.1f}"
    )
    parts = ", ".join(f"{k}={_yes(v)}" for k, v in same.items())
    print(f"native vs igraph: same_cliques={_yes(same_cliques)} ({parts})")
    print(f"planted: {check}")
    print(
        "edge budgets (native; maximal = maximal cliques of >= keep_ratio x the largest; "
        "recall = share of true hits in the best group):"
    )
    print(_table(rows))
    line = (
        f"clique: nodes={native.n_nodes} edges={native.n_edges} native_ms={native_ms:.1f} "
        f"igraph_ms={igraph_ms:.1f} speedup={igraph_ms / native_ms:.1f}x "
        f"planted_found={_yes(check['found'])}"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
