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
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from bench.clique_oracle import HitSet, IgraphResult, lexicographic, run_igraph
from bench.common import (
    CANDIDATES_PER_PATCH,
    GALLERY_COLS,
    GALLERY_ROWS,
    GALLERY_TILES,
    PATCHES_PER_QUERY,
    ZOOM,
    gallery_index,
    gallery_origin,
    gallery_tile,
    timed_rounds,
    write_result,
)
from rsloc_assets.cliques.native import CliqueParams, CliqueResult, find_geo_cliques
from rsloc_assets.geodesy import metres_per_degree, offset_lonlat
from rsloc_assets.grids import TileKey, get_grid, ground_size_m

GSD_M = 4.78  # m/px of the paper's queries
SEEN_FRACTION = 0.8
TOLERANCE_TILES = 1.5
SWEEP_EDGES_PER_NODE = (1, 2, 4, 8, 16, 32, 64)
REFERENCE_TOTAL_EDGES = 100_000  # the reference implementation's total edge budget


def make_hits(patches: int, candidates: int, seed: int) -> HitSet:
    """A seeded hit set: a grid of patches one tile apart, each with `candidates` gallery tiles.

    80 % of the patches hold their true tile at a rank skewed towards the top (rank = K·u²);
    every other candidate is a distinct, uniformly random other gallery tile. Scores fall with
    rank, so true hits score slightly higher on average.
    """
    rng = np.random.default_rng(seed)
    grid = get_grid("ge")
    col0, row0 = gallery_origin()
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
    true_keys = [grid.tile_at(lo, la, ZOOM) for lo, la in zip(tlon, tlat, strict=True)]
    true_tile = gallery_index(
        np.array([t.col for t in true_keys]), np.array([t.row for t in true_keys])
    )

    tiles = np.stack([rng.choice(GALLERY_TILES - 1, candidates, replace=False) for _ in index])
    tiles += tiles >= true_tile[:, None]  # never the patch's own true tile
    seen = rng.permutation(patches)[: round(SEEN_FRACTION * patches)]
    true_rank = np.floor(candidates * rng.uniform(size=len(seen)) ** 2).astype(np.int64)
    tiles[seen, true_rank] = true_tile[seen]
    score = -np.sort(-rng.normal(0.6, 0.05, size=(patches, candidates)), axis=1)

    cols, rows = gallery_tile(tiles)
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


def run_native(hits: HitSet, params: CliqueParams) -> CliqueResult:
    """Stage 2 through the C library."""
    return find_geo_cliques(
        hits.patch, hits.px, hits.py, hits.lon, hits.lat, hits.score, hits.gsd_m, params
    )


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


def sweep(hits: HitSet, base: CliqueParams, repeats: int) -> list[dict]:
    """Native stage over per-node edge budgets × {reference, default} total budgets."""
    rows = []
    for total in (REFERENCE_TOTAL_EDGES, base.max_edges_total):
        for per_node in SWEEP_EDGES_PER_NODE:
            params = replace(base, max_edges_per_node=per_node, max_edges_total=total)
            ((result, times),) = timed_rounds([lambda p=params: run_native(hits, p)], repeats)
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
    parser.add_argument("--patches", type=int, default=PATCHES_PER_QUERY)
    parser.add_argument("--candidates", type=int, default=CANDIDATES_PER_PATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    hits = make_hits(args.patches, args.candidates, args.seed)
    tolerance = TOLERANCE_TILES * math.sqrt(hits.tile_m[0] * hits.tile_m[1])
    params = CliqueParams(tolerance_m=tolerance)

    (native, native_times), (ref, igraph_times) = timed_rounds(
        [lambda: run_native(hits, params), lambda: run_igraph(hits, params)], args.repeats
    )
    same = compare(native, ref)
    # The whole maximal-clique set: native with nothing cut by ratio or rank, against igraph's.
    everything = replace(
        params, keep_ratio=0.0, top_n=np.iinfo(np.int32).max, max_cliques=np.iinfo(np.int64).max
    )
    native_all = run_native(hits, everything)
    native_set = lexicographic([tuple(c.tolist()) for c in native_all.cliques])
    same["all_maximal_cliques"] = native_set == lexicographic(ref.all_maximal)
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
            "gallery_tiles": GALLERY_TILES,
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
