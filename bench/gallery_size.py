"""Accuracy against gallery size (`make bench-gallery-size`).

One synthetic atlas of ≥ 30,000 z15 tiles on RSLoc's geographic grid — many worlds of different
seeds and landscapes, each tile at two dates (spring 2021, summer 2023) — is built once and
cached; the nested galleries of ≈ 300, 3,000 and 30,000 tiles are its first worlds. The same
autumn queries, drawn from the worlds of the smallest gallery, are localized in every gallery
through the whole asset graph. With ../shared, the RSLoc TIFFs join the largest gallery as a
further region and the `bench-real` RSLoc crops are searched there too.

Embeddings are computed once, for the largest gallery, and copied into the smaller ones: the
one-tile gap between worlds gives every tile the same 3×3 mosaic in each nested gallery.

The projection to the paper's 824,796 tiles is `PROJECTION_METHOD`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.common import GALLERY_TILES, SHARED_DATA, show_progress, timed, write_result
from bench.graph import run_graph
from bench.real import rsloc_crops
from rsloc_assets.cliques.steps import default_clique_k
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.metrics import (
    QueryScore,
    patch_true_tiles,
    summarise,
    true_tile_ranks,
)
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.gallery.builder import TileBox, build_gallery, extract_tiles
from rsloc_assets.layout import Layout, write_json
from rsloc_assets.records import Stage
from rsloc_assets.synthetic.atlas import ZOOM, AtlasSpec, AtlasWorld, build_atlas, plan_atlas
from rsloc_assets.synthetic.queries import write_queries

CACHE = Path(__file__).resolve().parent / ".cache" / "gallery_size"
SIZES = (300, 3_000, 30_000)
RECALL_AT = (1, 10, 100)
QUERY_SEASON = "autumn"  # the galleries hold spring and summer
REAL_TIME = "rsloc"  # the time bench.real gives the same tiles
REAL_TIFFS = "test*/*.tiff"  # bench.real's RSLoc query TIFFs
STAMP = "setup.json"
PER_QUERY = ("query_ranks", "stage_hits")  # kept for the projection, left out of the results
NEED_PATCHES = 3  # the smallest clique: a stage is assumed to need this many true patches
SYNTHETIC, REAL = "synthetic", "rsloc"
PROJECTION_METHOD = (
    "From each patch's measured rank r of its true tile (or a neighbour) among N tiles: r tiles"
    " outscore it, and each of the M − N tiles a gallery of M adds does so with probability"
    " q = (r + 0.5) / N, so the patch stays in the top K with probability"
    " P(Poisson(q·(M − N)) < K − r) (exact at M = N). Patch recall@K at M is the mean of that"
    " over patches (patches whose true tile was not in the top K at N count as lost). A stage"
    " reads each patch's top D candidates (D = vote_top for the vote, clique_k at M for the"
    " cliques and for verification, which verifies their hypotheses) and is assumed to keep a"
    " query it localized at N as long as at least min(3, c) of its patches keep their true tile"
    " in the top D, c being how many did at N (3: the smallest clique): within-1-tile at M is the"
    " mean over queries of that probability (Poisson-binomial over the patches' stay"
    " probabilities; 0 for a query the stage lost at N). False places growing with M are not"
    " modelled. Checked by projecting the second-largest gallery to the largest and comparing"
    " with what it measured."
)


@dataclass(frozen=True)
class Setup:
    """One run's settings: gallery sizes, the atlas, and how the synthetic queries are drawn."""

    sizes: tuple[int, ...]
    atlas: AtlasSpec
    queries: int
    query_px: tuple[int, int]
    seed: int


def nested(worlds: Sequence[AtlasWorld], tiles: int) -> list[AtlasWorld]:
    """The first worlds expected to fill at least `tiles`."""
    total, out = 0, []
    for world in worlds:
        if total >= tiles:
            break
        out.append(world)
        total += world.tiles
    return out


def write_synthetic_queries(setup: Setup, worlds: Sequence[AtlasWorld], out: Path) -> list[Path]:
    """The autumn queries, spread evenly over `worlds`; kept while their setup is unchanged."""
    stamp = {
        "queries": setup.queries,
        "px": list(setup.query_px),
        "seed": setup.seed,
        "worlds": [_plain(asdict(w.spec)) for w in worlds],
    }
    if _stamped(out, stamp):
        return sorted(out.glob("*.tif"))
    _clear(out)
    per_world = [len(range(i, setup.queries, len(worlds))) for i in range(len(worlds))]
    g = setup.atlas.gsd_m
    for world, n in zip(worlds, per_world, strict=True):
        write_queries(
            world.spec,
            out / f"w{world.index:03d}",
            n=n,
            seed=setup.seed * 1000 + world.index,
            season=QUERY_SEASON,
            max_rotation_deg=15.0,
            scale_range=(0.95, 1.05),
            cloud_cover=(0.0, 0.15),
            size_range_m=(setup.query_px[0] * g, setup.query_px[1] * g),
            prefix=f"w{world.index:03d}q",
        )
        for tif in (out / f"w{world.index:03d}").glob("*.tif"):
            os.replace(tif, out / tif.name)
    write_json(out / STAMP, stamp)
    return sorted(out.glob("*.tif"))


def write_real_queries(tiffs: Sequence[Path], out: Path, seed: int) -> list[Path]:
    """`bench-real`'s RSLoc crops (2 per TIFF); kept while their setup is unchanged."""
    stamp = {"tiffs": [p.name for p in tiffs], "seed": seed}
    if not tiffs:
        return []
    if not _stamped(out, stamp):
        _clear(out)
        rsloc_crops(list(tiffs), out, np.random.default_rng(seed), per_image=2)
        write_json(out / STAMP, stamp)
    return sorted(out.glob("*.tif"))


def _stamped(folder: Path, stamp: dict) -> bool:
    path = folder / STAMP
    return path.exists() and json.loads(path.read_text()) == stamp


def _clear(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _plain(record: dict) -> dict:
    return json.loads(json.dumps(record))


def sync_queries(paths: Sequence[Path], layout: Layout) -> None:
    """A gallery's `queries/` holds exactly `paths`, as hard links (no copies on disk)."""
    layout.queries.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in paths}
    for present in layout.queries.iterdir():
        if present.name not in wanted:
            present.unlink()
    for name, path in wanted.items():
        target = layout.queries / name
        if target.exists() and os.path.samefile(target, path):
            continue
        target.unlink(missing_ok=True)
        os.link(path, target)


def build_nested_gallery(
    atlas: Path, out: Path, boxes: Sequence[TileBox], real_tiffs: Sequence[Path]
) -> None:
    """The atlas's tiles inside `boxes`, plus the real TIFFs as a further region, written whole."""
    part = out.with_name(out.name + ".part")
    extract_tiles(atlas, part, boxes)
    if real_tiffs:
        build_gallery(list(real_tiffs), part, grid="ge", zoom=ZOOM, time=REAL_TIME)
    os.replace(part, out)


def seed_embeddings(
    source: Layout, target: Layout, boxes: Sequence[TileBox], rsloc: RslocResource
) -> int:
    """Copy the largest gallery's stored embeddings of the tiles in `boxes` into `target`'s store,
    so its `tile_embeddings` finds them up to date (all but the boxes' edge tiles, whose mosaics
    there lack the neighbours outside); returns the rows copied."""
    encoder, info = rsloc.load_encoder(), source.gallery_info()
    rows = RslocResource(data_dir=str(source.root)).store(encoder, info).to_arrow()
    inside = np.zeros(rows.num_rows, dtype=bool)
    col, row = rows["col"].to_numpy(), rows["row"].to_numpy()
    for b in boxes:
        inside |= (col >= b.cols[0]) & (col <= b.cols[1]) & (row >= b.rows[0]) & (row <= b.rows[1])
    subset = rows.filter(inside)
    rsloc.store(encoder, info).upsert(subset)
    return subset.num_rows


def patch_ranks(layout: Layout, names: Sequence[str]) -> list[np.ndarray]:
    """Per query, every patch's best rank of its true tile or a neighbour (-1: not in its top K)."""
    ranks = []
    info = layout.gallery_info()
    for name in names:
        truth = read_truth(layout.query_file(name))
        work = layout.query(name)
        patches, _ = work.patches()
        tiles = patch_true_tiles(truth, patches, info.grid, info.zoom)
        ranks.append(true_tile_ranks(tiles, work.candidates(), neighbours=True))
    return ranks


def recall_at(ranks: np.ndarray, k: int) -> float | None:
    """Share of patches whose true tile (or a neighbour) ranks in their top k."""
    return float(np.mean((ranks >= 0) & (ranks < k))) if len(ranks) else None


def stay_probability(ranks: np.ndarray, tiles: int, target: int, k: int) -> np.ndarray:
    """Each patch's chance that its true tile is still in its top k among `target` ≥ `tiles`
    tiles, from its rank among `tiles` (`PROJECTION_METHOD`): P(Poisson(q·(target − tiles)) <
    k − r), 0 for a patch whose true tile was not in its top k already."""
    out = np.zeros(len(ranks), dtype=np.float64)
    for i, r in enumerate(ranks):
        if 0 <= r < k:
            lam = (r + 0.5) / tiles * max(target - tiles, 0)
            out[i] = _poisson_cdf(int(k - 1 - r), lam)
    return out


def projected_recall(ranks: np.ndarray, tiles: int, target: int, k: int) -> float | None:
    """Patch recall@k among `target` ≥ `tiles` tiles, projected from ranks measured among
    `tiles`: the mean stay probability over patches."""
    if not len(ranks):
        return None
    return float(np.mean(stay_probability(ranks, tiles, target, k)))


def at_least(p: np.ndarray, need: int) -> float:
    """P(at least `need` successes) of independent Bernoulli trials with chances `p`
    (Poisson-binomial, by dynamic programming over the count, capped at `need`)."""
    if need <= 0:
        return 1.0
    dist = np.zeros(need + 1)  # P(count = c) for c < need; dist[need] = P(count ≥ need)
    dist[0] = 1.0
    for pi in p:
        moved = dist[:need] * pi
        dist[:need] *= 1 - pi
        dist[1:] += moved
    return float(dist[need])


def _poisson_cdf(k: int, lam: float) -> float:
    """P(X ≤ k) for X ~ Poisson(lam), summed in log space (k up to a few thousand)."""
    if lam == 0:
        return 1.0
    terms = np.arange(k + 1, dtype=np.float64)
    log_pmf = terms * math.log(lam) - lam - np.cumsum(np.log(np.maximum(terms, 1.0)))
    return float(min(1.0, np.exp(log_pmf).sum()))


def stage_depths(tiles: int, rsloc: RslocResource) -> dict[str, int]:
    """Candidates per patch each stage reads at a gallery size."""
    return {
        Stage.RETRIEVAL.value: rsloc.vote_top,
        Stage.CLIQUES.value: rsloc.clique_k or default_clique_k(tiles),
        Stage.VERIFIED.value: rsloc.clique_k or default_clique_k(tiles),
    }


def project(measured: dict, target: int, rsloc: RslocResource) -> dict:
    """Patch recall@K and within-1-tile per stage at `target` tiles, from one measured size."""
    tiles, per_query = measured["tiles"], measured["query_ranks"]
    ranks = np.concatenate(per_query) if per_query else np.zeros(0, np.int64)
    at, now = stage_depths(target, rsloc), stage_depths(tiles, rsloc)
    stages = {}
    for stage, hits in measured["stage_hits"].items():
        kept = []
        for hit, r in zip(hits, per_query, strict=True):
            seen = int(np.sum((r >= 0) & (r < now[stage])))
            p = stay_probability(r, tiles, target, at[stage])
            kept.append(at_least(p, min(NEED_PATCHES, seen)) if hit else 0.0)
        stages[stage] = float(np.mean(kept)) if kept else None
    return {
        "from_tiles": tiles,
        "tiles": target,
        "patch_recall_at_k": projected_recall(ranks, tiles, target, rsloc.top_k),
        "within_1_tile": stages,
    }


def lost_at(score: QueryScore) -> dict:
    """Where a query that did not end within one tile lost its true place: no patch retrieved its
    true tile in the top K, no stage-2 hypothesis near it, or verification did not confirm it."""
    if not score.recall_at_k:
        stage = Stage.RETRIEVAL
    elif score.hypothesis_rank < 0:
        stage = Stage.CLIQUES
    else:
        stage = Stage.VERIFIED
    return {
        "query": score.query,
        "stage": stage.value,
        "error_m": score.error_m,
        "recall_at_k": score.recall_at_k,
        "hypothesis_rank": score.hypothesis_rank,
    }


def measure(layout: Layout, rsloc: RslocResource, names: Sequence[str], scores: list) -> dict:
    """Per-stage metrics, patch recall and the rank of every patch's true tile, for `names`."""
    picked = [s for s in scores if s.query in set(names)]
    per_query = patch_ranks(layout, [s.query for s in picked])
    ranks = np.concatenate(per_query) if per_query else np.zeros(0, np.int64)
    summary = summarise(picked, len(picked))
    return {
        "queries": len(picked),
        "stages": summary.stages,
        "patch_recall": {
            **{f"at_{k}": recall_at(ranks, k) for k in RECALL_AT},
            "at_k": recall_at(ranks, rsloc.top_k),
        },
        "hypothesis_recall": summary.hypothesis_recall,
        "verified_hypothesis": [s.verified_hypothesis for s in picked],
        "lost": [lost_at(s) for s in picked if not s.within_1_tile],
        "seconds_per_query": summary.mean_seconds,
        "query_ranks": per_query,
        "stage_hits": {stage.value: [_within_1_tile(s, stage) for s in picked] for stage in Stage},
    }


def _within_1_tile(score: QueryScore, stage: Stage) -> bool:
    error = {
        Stage.RETRIEVAL: score.retrieval_error_m,
        Stage.CLIQUES: score.cliques_error_m,
        Stage.VERIFIED: score.error_m,
    }[stage]
    return error is not None and error <= score.tile_m


@dataclass
class Prepared:
    """The atlas, the queries and every nested gallery's data folder, built or reused."""

    worlds: list[AtlasWorld]
    query_worlds: list[AtlasWorld]
    synthetic: list[str]
    real: list[str]
    folders: dict[int, Layout]
    boxes: dict[int, list[TileBox]]
    atlas_built: int
    atlas_s: float
    render_s: float
    tiles_s: float


def prepare(setup: Setup, cache: Path, shared: Path) -> Prepared:
    """Build or reuse the atlas and its queries, and give every gallery size a data folder with
    its gallery and queries (the RSLoc crops join the largest); nothing is embedded here."""
    atlas_file = cache / "atlas.sqlite"
    report, atlas_ms = timed(lambda: build_atlas(setup.atlas, atlas_file))
    worlds = plan_atlas(setup.atlas)
    query_worlds = nested(worlds, min(setup.sizes))
    queries = write_synthetic_queries(setup, query_worlds, cache / "queries")
    real_tiffs = sorted((shared / "rsloc").glob(REAL_TIFFS))
    real_queries = write_real_queries(real_tiffs, cache / "real_queries", setup.seed)
    largest = max(setup.sizes)
    folders, boxes = {}, {}
    for n in setup.sizes:
        layout = Layout(cache / f"n{n}")
        boxes[n] = [TileBox(ZOOM, w.cols, w.rows) for w in nested(worlds, n)]
        real = real_queries if n == largest else []
        if not layout.gallery.exists():
            build_nested_gallery(atlas_file, layout.gallery, boxes[n], real_tiffs if real else [])
        sync_queries([*queries, *real], layout)
        folders[n] = layout
    return Prepared(
        worlds,
        query_worlds,
        [p.stem for p in queries],
        [p.stem for p in real_queries],
        folders,
        boxes,
        len(report.built),
        atlas_ms / 1e3,
        report.seconds["render"],
        report.seconds["tiles"],
    )


def run(setup: Setup, cache: Path, shared: Path) -> dict:
    """Build or reuse the atlas, run every gallery size, and gather the figures."""
    ready = prepare(setup, cache, shared)
    worlds, synthetic = ready.worlds, ready.synthetic
    largest = max(setup.sizes)
    source = ready.folders[largest]
    rsloc_defaults = RslocResource()
    sizes, measured = [], {}
    for n in sorted(setup.sizes, reverse=True):
        layout, boxes = ready.folders[n], ready.boxes[n]
        real = ready.real if n == largest else []
        rsloc = RslocResource(data_dir=str(layout.root))
        if n != largest:
            seed_embeddings(source, layout, boxes, rsloc)
        graph = run_graph(layout, rsloc)
        tiles = layout.read_manifest(["key"]).num_rows
        for dataset, names in ((SYNTHETIC, synthetic), (REAL, real)):
            if not names:
                continue
            figures = measure(layout, rsloc, names, graph.scores)
            measured[(n, dataset)] = {"tiles": tiles, **figures}
            sizes.append(
                {
                    "tiles": tiles,
                    "nominal_tiles": n,
                    "dataset": dataset,
                    "worlds": len(boxes),
                    "embed_s": graph.embed_s,
                    "wall_s_per_query": graph.wall_s_per_query,
                    **{k: v for k, v in figures.items() if k not in PER_QUERY},
                }
            )
    projection = {
        "target_tiles": GALLERY_TILES,
        "method": PROJECTION_METHOD,
        "synthetic": project(measured[(largest, SYNTHETIC)], GALLERY_TILES, rsloc_defaults),
    }
    ordered = sorted(setup.sizes)
    if len(ordered) >= 2:
        check_from, check_to = ordered[-2], ordered[-1]
        predicted = project(
            measured[(check_from, SYNTHETIC)],
            measured[(check_to, SYNTHETIC)]["tiles"],
            rsloc_defaults,
        )
        actual = measured[(check_to, SYNTHETIC)]
        projection["check"] = {
            "predicted": predicted,
            "measured": {
                "tiles": actual["tiles"],
                "patch_recall_at_k": actual["patch_recall"]["at_k"],
                "within_1_tile": {r["stage"]: r["within_1_tile"] for r in actual["stages"]},
            },
        }
    return {
        "atlas": {
            "worlds": len(worlds),
            "tiles_expected": sum(w.tiles for w in worlds),
            "world_km": setup.atlas.world_km,
            "gsd_m": setup.atlas.gsd_m,
            "landscapes": sorted({str(w.spec.landscape) for w in worlds}),
            "dates": [list(d) for d in setup.atlas.dates],
            "built_now": ready.atlas_built,
            "build_s": ready.atlas_s,
            "render_s": ready.render_s,
            "tiles_s": ready.tiles_s,
        },
        "queries": {
            "synthetic": len(synthetic),
            "season": QUERY_SEASON,
            "side_px": list(setup.query_px),
            "worlds": [w.index for w in ready.query_worlds],
        },
        "sizes": sizes,
        "projection": projection,
    }


def summary_line(figures: dict) -> str:
    """`gallery-size: tiles=<max N> retrieval=<w1> cliques=<w1> verified=<w1>
    projected_recall_at_k=<x>` for the synthetic queries in the largest gallery."""
    rows = [s for s in figures["sizes"] if s["dataset"] == SYNTHETIC]
    top = max(rows, key=lambda s: s["tiles"])
    w1 = {r["stage"]: r["within_1_tile"] for r in top["stages"]}
    projected = figures["projection"]["synthetic"]["patch_recall_at_k"]
    shown = "n/a" if projected is None else f"{projected:.3f}"
    return (
        f"gallery-size: tiles={top['tiles']} retrieval={w1['retrieval']:.2f}"
        f" cliques={w1['cliques']:.2f} verified={w1['verified']:.2f}"
        f" projected_recall_at_k={shown}"
    )


def _pair(text: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in text.split(","))
    return lo, hi


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.gallery_size", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="gallery sizes")
    parser.add_argument("--queries", type=int, default=40, help="synthetic queries")
    parser.add_argument("--query-px", type=_pair, default=(1500, 2600), help="side range, px")
    parser.add_argument("--world-km", type=float, default=14.0, help="side of each world")
    parser.add_argument("--gsd-m", type=float, default=4.0, help="metres per pixel of the worlds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=CACHE, help="atlas, galleries, embeddings")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the atlas, galleries and queries, print the largest data folder, and stop",
    )
    args = parser.parse_args(argv)
    sizes = tuple(sorted(int(v) for v in args.sizes.split(",")))
    setup = Setup(
        sizes=sizes,
        atlas=AtlasSpec(
            tiles=max(sizes),
            seed=args.seed + 1,
            world_km=args.world_km,
            gsd_m=args.gsd_m,
            west=-6.0,  # Spain: clear of the RSLoc imagery over France
            south=38.0,
        ),
        queries=args.queries,
        query_px=args.query_px,
        seed=args.seed,
    )
    if args.prepare_only:
        folder = str(prepare(setup, args.cache, args.shared).folders[max(sizes)].root)
        print(folder)
        return folder
    figures = run(setup, args.cache, args.shared)
    write_result("gallery_size", figures, args.results_dir)
    line = summary_line(figures)
    print(line)
    return line


if __name__ == "__main__":
    show_progress()
    main()
