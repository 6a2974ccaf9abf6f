"""One 2,560 × 2,560 px query image through every stage at the paper's gallery scale: this
checkout's code against a baseline commit's (default: the code #14 started from), in one run.

- patches, verify: the RSLoc-820K query f20 (2,560² px at z15, France), given photometric
  changes, against a ge z15 gallery the project's builder makes of all 12 RSLoc TIFFs (same
  source: the query's own ground is in it), embedded with the resource's defaults.
- search, cliques: the same patches (positions, valid shares, headings) with synthetic vectors,
  against bench-scale's table of 824,796 tiles × 1,280 dims (its clustered model, IVF-FLAT).
  A patch's north-up view is a noisy copy of the tile under its true centre (cosine ≈ 0.84), its
  other headings noisier copies of random tiles (≈ 0.63), so the 2,000 candidates a patch that
  enter the cliques hold the true place, as a working encoder's would.

Each side runs in its own process with its own `rsloc_assets` (the baseline's exported by
`git archive`, its native library built there) on its own copy of the prepared data, through the
library's step functions: no Dagster, no start-up in the figures (the encoder's load is apart).
patches, search and cliques: median of `--repeats` calls after one warm-up; verify: the first call
(no mosaic feature cached, as for a query over new ground) and a second one (cached) apart.
Run as `python -m bench.query`; it ends with one line, `query: tiles=824796 patches=<n>
seconds(new/baseline) patches=<s>/<s> search=… cliques=… verify=… total=… (<x>× faster)`.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
from osgeo import gdal

from bench.common import (
    GALLERY_TILES,
    SHARED_DATA,
    ZOOM,
    gallery_index,
    show_progress,
    timed,
    timed_rounds,
    write_result,
)
from bench.scale import QUERY_NOISE, build_table, make_gallery, peak_rss_mb
from rsloc_assets.cliques.steps import find_cliques, localize_query
from rsloc_assets.evaluation.truth import Truth, read_truth
from rsloc_assets.geodesy import distance_m
from rsloc_assets.grids import GeoGrid
from rsloc_assets.layout import Layout
from rsloc_assets.raster import write_geotiff

gdal.UseExceptions()

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "query"
BASELINE = "f792c44"  # the last commit before #14's work on speed
QUERY_TIFF = "test100/f20_L15_arcgis.tiff"  # 2,560 × 2,560 px, one of the benchmark's queries
NAME = "f20"
DIM = 1280  # the default encoder's channels; bench-scale's wider table
TABLE = "scale1280"
OTHER_HEADING_NOISE = 0.6  # variance share of noise in a turned view: cosine ≈ 0.63 to its tile
SEED = 0
STAGES = ("patches", "search", "cliques", "verify")


def prepare(args: argparse.Namespace) -> None:
    """The real gallery (built, embedded), the query, its scale-side patch file and the
    824,796-tile table, each made once under the cache folder."""
    root = args.cache
    real = Layout(root / "real", gallery_path=root / "real" / "gallery.sqlite")
    if not (root / "real.done").exists():
        shutil.rmtree(root / "real", ignore_errors=True)
        _prepare_real(real, args)
        (root / "real.done").touch()
    scale = root / f"table{args.rows}"
    if not (scale / "done").exists():
        shutil.rmtree(scale, ignore_errors=True)
        _prepare_scale(real, scale, args)
        (scale / "done").touch()


def _prepare_real(layout: Layout, args: argparse.Namespace) -> None:
    from bench.graph import materialize_gallery
    from bench.real import photometric
    from rsloc_assets.defs.resources import RslocResource
    from rsloc_assets.gallery.builder import build_gallery

    tiffs = sorted((args.shared / "rsloc").glob("test*/*.tiff"))[: args.gallery_tiffs or None]
    source = args.shared / "rsloc" / QUERY_TIFF
    if source not in tiffs:
        tiffs.append(source)
    build_gallery(tiffs, layout.gallery, grid="ge", zoom=ZOOM, time="rsloc")
    ds = gdal.Open(str(source))
    rgb = np.moveaxis(ds.ReadAsArray(band_list=[1, 2, 3]), 0, -1)[: args.crop, : args.crop]
    layout.queries.mkdir(parents=True, exist_ok=True)
    crop = photometric(np.ascontiguousarray(rgb), np.random.default_rng(SEED))
    write_geotiff(layout.queries / f"{NAME}.tif", crop, ds.GetGeoTransform(), ds.GetProjection())
    materialize_gallery(RslocResource(data_dir=str(layout.root), gallery=str(layout.gallery)))


def _prepare_scale(real: Layout, folder: Path, args: argparse.Namespace) -> None:
    """The synthetic table (a block of `args.rows` tiles around the query; all 824,796 by
    default), and the query's patches with vectors planted in it at every heading (the patch
    table of the code before the heading vote moved into the patches step: `heading_valid` and
    `vector` per heading)."""
    from rsloc_assets.defs.resources import RslocResource
    from rsloc_assets.retrieval.patches import PatchPlan, heading_views, headings_deg, read_query
    from rsloc_assets.retrieval.steps import prepare_query
    from rsloc_assets.retrieval.store import TileStore

    rsloc = RslocResource(data_dir=str(real.root), gallery=str(real.gallery))
    work = work_copy(real, Layout(folder / "layout"))
    encoder = rsloc.load_encoder()
    prepare_query(
        work, NAME, real.gallery_levels(), encoder, lambda info: rsloc.store(encoder, info),
        rsloc.cut_th, rsloc.stride_tiles, rsloc.query_headings, rsloc.vote_patches,
    )  # fmt: skip
    patches, meta = work.query(NAME).patches()
    query = read_query(work.query_file(NAME), meta.gallery.ref_lat)
    plan = PatchPlan(patches["width"][0].as_py(), patches["height"][0].as_py(), 1, 1)
    turns = headings_deg(rsloc.query_headings)
    valid = np.stack([heading_views(query, patches, plan, t, 8)[1] for t in turns], axis=1)
    truth = read_truth(real.query_file(NAME))
    tiles = true_tiles(patches, truth)
    first = int(np.clip((tiles.min() + tiles.max() - args.rows) // 2, 0, GALLERY_TILES - args.rows))
    gallery = make_gallery(args.rows, DIM, SEED)
    store = TileStore(str(folder / "lancedb"), TABLE, DIM)
    build_table(store, gallery, 50_000, first)
    store.ensure_index(min_rows=0)
    vectors = planted_vectors(tiles - first, gallery, len(turns))
    table = patches.drop_columns(["view_valid", "vector"])
    table = table.append_column("heading_valid", nested_lists(valid))
    table = table.append_column("vector", nested_lists(vectors))
    info = replace(meta.gallery, tiles=args.rows)
    work.query(NAME).write_patches(table, replace(meta, gallery=info, headings=turns))


def nested_lists(values: np.ndarray) -> pa.FixedSizeListArray:
    """An N×H(×dim) float array as fixed-size lists (of fixed-size lists) of float32."""
    flat = pa.array(np.ascontiguousarray(values, np.float32).ravel())
    for size in reversed(values.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def every_heading(patches: pa.Table, headings: int) -> tuple[np.ndarray, np.ndarray]:
    """An every-heading patch table's views (patches × headings × dim) and valid shares."""
    dim = patches.schema.field("vector").type.value_type.list_size
    views = patches["vector"].combine_chunks().flatten().flatten().to_numpy()
    valid = patches["heading_valid"].combine_chunks().flatten().to_numpy()
    shape = (patches.num_rows, headings)
    return views.reshape(*shape, dim), valid.reshape(shape)


def voted_patches(scale: Layout, store, vote_patches: int, repeats: int) -> float:
    """Turn the scale side's every-heading patch table into this code's: the heading voted by
    the planted views at scale (`vote_heading`, the views looked up, not embedded), each patch's
    vector at it. Returns the vote's seconds: search at scale (its search on the real gallery is
    in `patches`)."""
    from rsloc_assets.retrieval.heading import vote_heading, vote_order
    from rsloc_assets.retrieval.patches import PatchPlan, min_valid_share
    from rsloc_assets.retrieval.store import vector_array

    patches, meta = scale.query(NAME).patches()
    views, valid = every_heading(patches, len(meta.headings))
    plan = PatchPlan(patches["width"][0].as_py(), patches["height"][0].as_py(), 1, 1)
    needed = min_valid_share(meta.width, meta.height, plan)
    order = vote_order(patches["valid_fraction"].to_numpy())

    def vote():
        return vote_heading(store, order, lambda r: (views[r], valid[r]), needed, vote_patches)

    voted, seconds, _ = median_of(vote, repeats)
    turn = voted.vote.index
    table = patches.drop_columns(["heading_valid", "vector"])
    table = table.append_column("view_valid", pa.array(valid[:, turn]))
    table = table.append_column("vector", vector_array(views[:, turn]))
    scale.query(NAME).write_patches(table, replace(meta, vote=voted.vote))
    return seconds


def true_tiles(patches: pa.Table, truth: Truth) -> np.ndarray:
    """Index in the gallery block of the tile under each patch's true centre."""
    lon, lat = truth.pixel_to_lonlat(patches["cx"].to_numpy(), patches["cy"].to_numpy())
    tiles = [GeoGrid().tile_at(float(a), float(b), ZOOM) for a, b in zip(lon, lat, strict=True)]
    index = gallery_index(np.array([t.col for t in tiles]), np.array([t.row for t in tiles]))
    if (index < 0).any() or (index >= GALLERY_TILES).any():
        raise ValueError("the query lies outside the synthetic gallery's block of tiles")
    return index


def work_copy(src: Layout, dst: Layout) -> Layout:
    """`dst` as a fresh copy of `src`: its gallery, LanceDB tables, models, queries and gallery
    manifest, but no query's work and no cached mosaic features."""
    shutil.rmtree(dst.root, ignore_errors=True)
    shutil.copytree(src.root, dst.root, ignore=lambda d, _: ["work"] if d == str(src.root) else [])
    dst.work.mkdir()
    for path in src.work.iterdir():
        if path.is_file():
            shutil.copy2(path, dst.work / path.name)
    return Layout(dst.root, gallery_path=dst.root / src.gallery.name)


def planted_vectors(rows: np.ndarray, gallery: np.ndarray, headings: int) -> np.ndarray:
    """N × headings × dim unit vectors: heading 0 of patch i a noisy copy of gallery row
    `rows[i]` (its true tile), the other headings noisier copies of random rows."""
    rng = np.random.default_rng([SEED, 2])
    source = gallery[rng.integers(0, len(gallery), (len(rows), headings))]
    source[:, 0] = gallery[rows]
    share = np.full(headings, OTHER_HEADING_NOISE)
    share[0] = QUERY_NOISE
    noise = rng.standard_normal(source.shape, dtype=np.float32) / math.sqrt(gallery.shape[1])
    out = np.sqrt(1 - share)[None, :, None] * source + np.sqrt(share)[None, :, None] * noise
    return (out / np.linalg.norm(out, axis=2, keepdims=True)).astype(np.float32)


def median_of(fn: Callable[[], object], repeats: int) -> tuple[object, float, list[float]]:
    """`fn`'s last result, the median of `repeats` timed calls after one warm-up, and the times."""
    fn()
    [(result, ms)] = timed_rounds([fn], repeats)
    seconds = [m / 1e3 for m in ms]
    return result, statistics.median(seconds), seconds


def run_side(prepared: Path, work: Path, repeats: int, rows: int) -> dict:
    """Every stage of the query with the `rsloc_assets` this process imports: seconds and what
    each stage found (for comparing the two sides)."""
    from rsloc_assets.defs.resources import RslocResource
    from rsloc_assets.retrieval.steps import find_candidates, prepare_query
    from rsloc_assets.retrieval.store import TileStore
    from rsloc_assets.verification.steps import verify_query

    shutil.rmtree(work, ignore_errors=True)
    source = Layout(prepared / "real", gallery_path=prepared / "real" / "gallery.sqlite")
    real = work_copy(source, Layout(work / "real"))
    rsloc = RslocResource(data_dir=str(real.root), gallery=str(real.gallery))
    encoder, load_ms = timed(rsloc.load_encoder)
    recheck = rsloc.base_encoder() if rsloc.verify_recheck else None
    levels = real.gallery_levels()
    args = (real, NAME, levels, encoder, rsloc.cut_th, rsloc.stride_tiles, rsloc.query_headings)
    voting = "store_for" in inspect.signature(prepare_query).parameters
    if voting:  # the heading vote in the patches step (a baseline votes in find_candidates)
        args = (*args[:4], lambda info: rsloc.store(encoder, info), *args[4:], rsloc.vote_patches)
    patched, patches_s, patches_runs = median_of(lambda: prepare_query(*args), repeats)
    real_hits, real_search_ms = timed(
        lambda: find_candidates(real, NAME, rsloc.store(encoder, levels[0]), rsloc.top_k)
    )
    find_cliques(real, NAME, rsloc.clique_k, rsloc.clique_tolerance_tiles, rsloc.vote_top)
    localize_query(real, NAME, rsloc.vote_top)

    def verify():
        return verify_query(
            real, NAME, recheck, hypotheses=rsloc.verify_hypotheses, workers=rsloc.verify_workers
        )

    voters = len(real.query(NAME).patches()[1].vote.sample) if voting else patched.table.num_rows
    (record, _), verify_ms = timed(verify)
    _, verify_warm_ms = timed(verify)
    truth = read_truth(real.query_file(NAME))
    # Patches of a query known to face north (a GeoTIFF's): one heading, no vote.
    at = 7 if voting else 6
    one_heading = (*args[:at], 1, *args[at + 1 :])
    _, one_heading_s, _ = median_of(lambda: prepare_query(*one_heading), repeats)

    scale = Layout(work / "scale")
    shutil.copytree(prepared / f"table{rows}" / "layout" / "work", scale.root / "work")
    store = TileStore(str(prepared / f"table{rows}" / "lancedb"), TABLE, DIM)
    breakdown = search_breakdown(scale, store, rsloc.top_k)
    vote_s = voted_patches(scale, store, rsloc.vote_patches, repeats) if voting else 0.0
    hits, search_s, search_runs = median_of(
        lambda: find_candidates(scale, NAME, store, rsloc.top_k), repeats
    )
    summary, cliques_s, clique_runs = median_of(
        lambda: find_cliques(
            scale, NAME, rsloc.clique_k, rsloc.clique_tolerance_tiles, rsloc.vote_top
        ),
        repeats,
    )
    _, ranked = scale.query(NAME).hypotheses()
    best = ranked[0] if ranked else None
    seconds = {
        "patches": patches_s,
        "search": vote_s + search_s,
        "cliques": cliques_s,
        "verify": verify_ms / 1e3,
    }
    seconds["total"] = sum(seconds.values())
    est = record.estimate
    return {
        "seconds": seconds,
        "runs_s": {"patches": patches_runs, "search": search_runs, "cliques": clique_runs},
        "encoder_load_s": load_ms / 1e3,
        "verify_cached_s": verify_warm_ms / 1e3,
        "real_gallery_search_s": real_search_ms / 1e3,
        "search_breakdown_s": breakdown,
        "vote_search_s": vote_s,
        "patches": patched.table.num_rows,
        "headings": rsloc.query_headings,
        "patches_one_heading_s": one_heading_s,
        "views_embedded": voters * rsloc.query_headings + patched.table.num_rows - voters,
        "real_candidates": real_hits.table.num_rows,
        "scale_candidates": hits.table.num_rows,
        "scale_candidate_keys": _digest(hits.table),
        "cliques": {
            "nodes": summary.nodes,
            "edges": summary.edges,
            "maximal": summary.maximal,
            "kept": summary.kept,
            "best_support": summary.best_support,
            "best_hypothesis_error_m": (
                float(distance_m(best.centre_lon, best.centre_lat, *truth.centre_lonlat))
                if best
                else None
            ),
        },
        "verified": {
            "method": str(est.method),
            "support": est.support,
            "centre": [est.centre_lon, est.centre_lat],
            "centre_error_m": (
                float(distance_m(est.centre_lon, est.centre_lat, *truth.centre_lonlat))
                if est.centre_lon is not None
                else None
            ),
        },
        "peak_rss_mb": peak_rss_mb(),  # the side's process: every stage, both galleries
    }


def search_breakdown(scale: Layout, store, top_k: int) -> dict[str, float]:
    """Seconds of single `TileStore.search` calls over the query's views at scale, to say where
    search time goes: the process's first search of the table, then every view's top 1 over 1
    and over 20 partitions (the vote), one heading's views' top `top_k` (the candidates) and
    every view's top `top_k` (one search of them all)."""
    patches, meta = scale.query(NAME).patches()
    views = every_heading(patches, len(meta.headings))[0]
    views = views.reshape(-1, views.shape[-1])
    calls = {
        "views_top1_nprobes1": lambda: store.search(views, 1, nprobes=1),
        "views_top1_nprobes20": lambda: store.search(views, 1, nprobes=20),
        "one_heading_top_k": lambda: store.search(views[:: len(meta.headings)], top_k),
        "views_top_k": lambda: store.search(views, top_k),
    }
    # The first search of a process opens the table's index; later ones find it cached.
    first = timed(calls["views_top1_nprobes1"])[1] / 1e3
    return {"first_search": first} | {name: timed(call)[1] / 1e3 for name, call in calls.items()}


def _digest(table: pa.Table) -> str:
    """A short hash of a candidate table's (patch, key, score) rows, to compare two sides: the
    same tiles at the same scores for every patch (tiles of one score may rank in either order)."""
    scores = np.round(table["score"].to_numpy(), 6).tolist()
    rows = zip(table["patch"].to_pylist(), table["key"].to_pylist(), scores, strict=True)
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()[:16]


def baseline_checkout(rev: str, cache: Path) -> Path:
    """A folder holding `rev`'s `rsloc_assets`, with that commit's native library built in it
    (exported once with `git archive`: this repository's git state is left as it is)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = cache / f"baseline-{commit[:12]}"
    if not (tree / ".built").exists():
        shutil.rmtree(tree, ignore_errors=True)
        archive = subprocess.run(
            ["git", "archive", commit, "rsloc_assets", "native"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        build = (
            "import sys; sys.path.insert(0, 'native'); from build_cffi import ffibuilder; "
            "ffibuilder.compile(tmpdir='.', verbose=False)"
        )
        subprocess.run([sys.executable, "-c", build], cwd=tree, check=True, capture_output=True)
        (tree / ".built").write_text(commit)
    return tree


def side(label: str, code: Path | None, args: argparse.Namespace) -> dict:
    """Run `run_side` in a child process importing `rsloc_assets` from `code` (None: here)."""
    out = args.cache / f"side-{label}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (code, REPO) if p))
    command = [
        sys.executable, "-m", "bench.query", "--side", str(out), "--cache", str(args.cache),
        "--rows", str(args.rows), "--repeats", str(args.repeats),
    ]  # fmt: skip
    subprocess.run(command, cwd=code or REPO, env=env, check=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> str:
    """Prepare once, run both sides, write query.json, print one line; returns the line."""
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__)
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare against")
    parser.add_argument("--rows", type=int, default=GALLERY_TILES, help="synthetic table rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crop", type=int, default=2560, help="query side in px (≤ 2,560)")
    parser.add_argument("--gallery-tiffs", type=int, default=0, help="RSLoc TIFFs (0: all)")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--side", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        figures = run_side(args.cache, args.cache / args.side.stem, args.repeats, args.rows)
        args.side.write_text(json.dumps(figures, indent=2))
        return ""
    if not (args.shared / "rsloc" / QUERY_TIFF).exists():
        line = f"query: skipped, no {QUERY_TIFF} under {args.shared / 'rsloc'}"
        print(line)
        return line
    args.cache.mkdir(parents=True, exist_ok=True)
    prepare(args)
    code = baseline_checkout(args.baseline, args.cache)
    baseline = side("baseline", code, args)
    new = side("new", None, args)
    ratio = {k: baseline["seconds"][k] / max(new["seconds"][k], 1e-9) for k in new["seconds"]}
    figures = {
        "tiles": args.rows,
        "query": f"{QUERY_TIFF} ({args.crop}² px, photometric changes, seed {SEED})",
        "dim_searched": DIM,
        "seconds": new["seconds"],
        "baseline": {"commit": (code / ".built").read_text()[:12], "seconds": baseline["seconds"]},
        "baseline_over_new": ratio,
        "budgets_s": {"patches": 1.5, "search": 0.2, "cliques": 0.1, "verify": 2.0},
        "same_candidates": new["scale_candidate_keys"] == baseline["scale_candidate_keys"],
        "new": new,
        "baseline_side": baseline,
        "timing": (
            "time.perf_counter around the library's step functions in a child process per side; "
            f"median of {args.repeats} after a warm-up (patches, search, cliques); verify = first "
            "call, mosaic features not cached"
        ),
    }
    write_result("query", figures, args.results_dir)
    shown = " ".join(
        f"{k}={new['seconds'][k]:.2f}/{baseline['seconds'][k]:.2f}" for k in (*STAGES, "total")
    )
    line = (
        f"query: tiles={args.rows} patches={new['patches']} seconds(new/baseline) {shown}"
        f" ({ratio['total']:.2f}x faster)"
    )
    print(line)
    return line


if __name__ == "__main__":
    show_progress()
    main()
