"""Gallery-scale vector search: rsloc's LanceDB TileStore over the paper's 824,796-tile z15 gallery,
against exact search by batched matrix product in torch, in the same run.

For each vector size (768-d as CLIP ViT-L/14, 1280-d as the default encoder) and each index kind
(rsloc's default IVF-FLAT, and IVF-PQ; cosine, √rows partitions) it times the table build
(`TileStore.upsert` in batches), the index build (`TileStore.ensure_index`) and the latency per
query image (one batched `TileStore.search` of 100 patch vectors, top-2000) over a short
nprobes / refine_factor sweep whose first setting is rsloc's default search.
The exact baseline holds the whole normalised gallery in memory as float32 and keeps a running
`torch.topk` over chunked matrix products. ANN recall@k is the mean over query patches of
|ANN top-k ∩ exact top-k| / k. With IVF-PQ, refinement re-reads up to refine_factor × k full
vectors per query (capped by the rows in the probed partitions), for all 100 queries at once,
which dominates latency and memory: it is why IVF-FLAT is rsloc's default.

Synthetic vectors, because isotropic Gaussians (no neighbourhood structure) are the meaningless
worst case for ANN. Tiles mimic an embedding space of land-cover classes: unit vectors
normalise(√w_mean·m + √w_group·g[group] + √w_cluster·c[cluster] + √w_tile·noise), with one shared
direction m (embeddings are anisotropic), √clusters groups, rows/200 clusters of log-normal sizes,
and random near-orthogonal directions of unit expected norm; cosines are thus ≈ 0.6 within a
cluster, 0.35 within a group, 0.15 otherwise. A query patch is a noisy copy of a random gallery
tile, cosine ≈ 0.84 to it. Tiles lie row-major in a 1091-wide block of ge z15 tiles over France.
Run as `python -m bench.scale`; it ends with one line, `scale: rows=<n> dims=<d,…> k=<k>
index=<kind> nprobes=<p> refine=<r> build_s=<…> index_s=<…> ann_ms=<…> exact_ms=<…>
ann_over_exact=<…>x recall@<k>=<…>`, a value per dim, for rsloc's default index and search.
"""

from __future__ import annotations

import argparse
import inspect
import math
import resource
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import torch

from bench.common import (
    CANDIDATES_PER_PATCH,
    GALLERY_COLS,
    GALLERY_TILES,
    PATCHES_PER_QUERY,
    ZOOM,
    gallery_index,
    gallery_tile,
    show_progress,
    timed,
    write_result,
)
from rsloc_assets.grids import GeoGrid
from rsloc_assets.progress import Progress
from rsloc_assets.records import tile_schema
from rsloc_assets.retrieval.store import TileStore, pq_sub_vectors, vector_array

TILES_PER_CLUSTER = 200
WEIGHTS = {"mean": 0.15, "group": 0.2, "cluster": 0.25, "tile": 0.4}  # variance shares, sum 1
QUERY_NOISE = 0.3  # variance share of noise in a query patch: cosine √0.7 ≈ 0.84 to its tile
GEN_CHUNK = 50_000  # gallery rows generated per random stream
EXACT_CHUNK = 65_536  # gallery rows per matrix product of the exact search
TABLE = "scale"
TIME = "2021-06-01"
_SEARCH = inspect.signature(TileStore.search).parameters
DEFAULT_SETTING = (_SEARCH["nprobes"].default, _SEARCH["refine_factor"].default)
DEFAULT_KIND = inspect.signature(TileStore.ensure_index).parameters["kind"].default
SWEEPS = {  # (nprobes, refine_factor) per index kind; rsloc's default search comes first
    "ivf_flat": [DEFAULT_SETTING, (10, None), (50, None)],
    "ivf_sq": [(20, None), (40, None)],
    "ivf_pq": [(20, 10), (20, None), (50, 2)],
}


def model_shape(rows: int) -> tuple[int, int]:
    """Clusters and groups of the vector model for a gallery of `rows` tiles."""
    clusters = max(1, round(rows / TILES_PER_CLUSTER))
    return clusters, max(1, round(math.sqrt(clusters)))


def make_gallery(rows: int, dim: int, seed: int) -> np.ndarray:
    """rows × dim unit float32 vectors of the clustered model, generated in seeded chunks."""
    rng = np.random.default_rng([seed, dim])
    clusters, groups = model_shape(rows)
    mean = rng.standard_normal(dim, dtype=np.float32)
    mean /= np.linalg.norm(mean)
    group_dir = rng.standard_normal((groups, dim), dtype=np.float32) / math.sqrt(dim)
    cluster_dir = rng.standard_normal((clusters, dim), dtype=np.float32) / math.sqrt(dim)
    centre = (
        math.sqrt(WEIGHTS["mean"]) * mean
        + math.sqrt(WEIGHTS["group"]) * group_dir[rng.integers(0, groups, clusters)]
        + math.sqrt(WEIGHTS["cluster"]) * cluster_dir
    )
    share = rng.lognormal(0.0, 1.0, clusters)
    share /= share.sum()
    gallery = np.empty((rows, dim), dtype=np.float32)
    for chunk, start in enumerate(range(0, rows, GEN_CHUNK)):
        stop = min(start + GEN_CHUNK, rows)
        crng = np.random.default_rng([seed, dim, chunk])
        tiles = crng.standard_normal((stop - start, dim), dtype=np.float32)
        tiles *= math.sqrt(WEIGHTS["tile"] / dim)
        tiles += centre[crng.choice(clusters, stop - start, p=share)]
        gallery[start:stop] = tiles / np.linalg.norm(tiles, axis=1, keepdims=True)
    return gallery


def make_queries(gallery: np.ndarray, images: int, seed: int) -> np.ndarray:
    """images × PATCHES_PER_QUERY × dim unit query vectors, each a noisy copy of a random tile."""
    dim = gallery.shape[1]
    rng = np.random.default_rng([seed, dim, 1])
    source = gallery[rng.integers(0, len(gallery), images * PATCHES_PER_QUERY)]
    noise = rng.standard_normal(source.shape, dtype=np.float32) * math.sqrt(QUERY_NOISE / dim)
    queries = math.sqrt(1 - QUERY_NOISE) * source + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.reshape(images, PATCHES_PER_QUERY, dim)


def tile_batch(start: int, vectors: np.ndarray) -> pa.Table:
    """Tile rows start… (row-major in the gallery block) with their vectors, in the tile schema."""
    index = np.arange(start, start + len(vectors))
    cols, rows = gallery_tile(index)
    lon, lat = GeoGrid().centres(ZOOM, cols, rows)
    half = GeoGrid.size_deg(ZOOM) / 2
    columns = {
        "key": [f"{ZOOM}/{c}/{r}" for c, r in zip(cols.tolist(), rows.tolist(), strict=True)],
        "level": np.full(len(index), ZOOM, np.int32),
        "col": cols,
        "row": rows,
        "time": [TIME] * len(index),
        "lon": lon,
        "lat": lat,
        "west": lon - half,
        "south": lat - half,
        "east": lon + half,
        "north": lat + half,
        "vector": vector_array(vectors),
    }
    schema = tile_schema(vectors.shape[1])
    # Columns these rows have no value for (the mosaic key) are null; bench-query's baseline side
    # imports this module beside an older `rsloc_assets` whose schema lacks them.
    columns |= {f.name: pa.nulls(len(index), f.type) for f in schema if f.name not in columns}
    return pa.table(columns, schema=schema)


def exact_topk(gallery: torch.Tensor, queries: np.ndarray, k: int) -> np.ndarray:
    """Gallery row indices of each query's top-k by cosine: chunked matmul, running topk."""
    q = torch.from_numpy(np.ascontiguousarray(queries))
    best_score = torch.empty((len(q), 0))
    best_index = torch.empty((len(q), 0), dtype=torch.long)
    for start in range(0, len(gallery), EXACT_CHUNK):
        block = gallery[start : start + EXACT_CHUNK]
        score = torch.cat([best_score, q @ block.T], dim=1)
        index = torch.arange(start, start + len(block)).expand(len(q), -1)
        best_score, pos = torch.topk(score, min(k, score.shape[1]), dim=1)
        best_index = torch.gather(torch.cat([best_index, index], dim=1), 1, pos)
    return best_index.numpy()


def ann_topk(
    store: TileStore, queries: np.ndarray, k: int, nprobes: int, refine: int | None
) -> np.ndarray:
    """Gallery row indices of each query's top-k through TileStore.search; -1 where fewer."""
    hits = store.search(queries, k, nprobes=nprobes, refine_factor=refine)
    index = gallery_index(hits["col"].to_numpy(), hits["row"].to_numpy())
    found = np.full((len(queries), k), -1, dtype=np.int64)
    found[hits["patch"].to_numpy(), hits["rank"].to_numpy()] = index
    return found


def recall(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per query: the share of its exact top-k that `found` holds."""
    k = exact.shape[1]
    return np.array([np.intersect1d(f, e).size / k for f, e in zip(found, exact, strict=True)])


def latency(fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, dict]:
    """Run `fn` on a warm-up image, then time it per query image; results and ms figures."""
    fn(queries[0])
    runs = [timed(lambda q=q: fn(q)) for q in queries[1:]]
    ms = [t for _, t in runs]
    return np.concatenate([r for r, _ in runs]), {
        "mean": statistics.fmean(ms),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "runs": ms,
    }


def disk_mb(path: Path) -> float:
    """Size in MB of every file under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_table(store: TileStore, gallery: np.ndarray, batch: int, first: int = 0) -> list[float]:
    """Upsert the gallery into `store` in batches of `batch` rows, its row i the block's tile
    `first` + i; seconds per upsert call."""
    seconds = []
    progress = Progress(f"writing {store.table}", len(gallery), "vectors")
    for start in range(0, len(gallery), batch):
        rows = tile_batch(first + start, gallery[start : start + batch])
        seconds.append(timed(lambda r=rows: store.upsert(r))[1] / 1e3)
        progress.advance(len(rows))
    return seconds


def run_index(
    kind: str, gallery: np.ndarray, queries: np.ndarray, exact: np.ndarray, exact_ms: dict,
    args: argparse.Namespace, uri: Path,
) -> dict:  # fmt: skip
    """Build a table and a `kind` index over `gallery`, then time and score its search sweep."""
    store = TileStore(str(uri), f"{TABLE}_{kind}", gallery.shape[1])
    upsert_s = build_table(store, gallery, args.batch)
    assert store.count() == args.rows
    table_mb = disk_mb(uri)
    indexed, index_ms = timed(lambda: store.ensure_index(min_rows=0, kind=kind))
    assert indexed
    sweep = []
    for nprobes, refine in SWEEPS[kind]:
        found, ms = latency(
            lambda q, p=nprobes, r=refine: ann_topk(store, q, args.k, p, r), queries
        )
        per_query = recall(found, exact)
        sweep.append(
            {
                "nprobes": nprobes,
                "refine_factor": refine,
                "ms": ms,
                f"recall@{args.k}": float(per_query.mean()),
                f"recall@{args.k}_p10": float(np.percentile(per_query, 10)),
                "ann_over_exact": ms["mean"] / exact_ms["mean"],
                "faster": "ann" if ms["mean"] < exact_ms["mean"] else "exact",
            }
        )
    build_s = sum(upsert_s)
    figures = {
        "kind": kind,
        "table": {
            "build_s": build_s,
            "rows_per_s": args.rows / build_s,
            "batch_rows": args.batch,
            "upsert_s": upsert_s,
            "data_mb": table_mb,
        },
        "index": {
            "build_s": index_ms / 1e3,
            "partitions_requested": max(1, round(math.sqrt(args.rows))),  # as ensure_index does
            "sub_vectors": pq_sub_vectors(gallery.shape[1]) if kind == "ivf_pq" else None,
            "table_with_index_mb": disk_mb(uri),
        },
        "ann": sweep,
    }
    shutil.rmtree(uri)
    return figures


def run_dim(dim: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Exact baseline, then every index kind's build and search sweep, for one vector size."""
    gallery, generate_ms = timed(lambda: make_gallery(args.rows, dim, args.seed))
    queries = make_queries(gallery, args.queries + 1, args.seed)  # image 0: warm-up
    matrix = torch.from_numpy(gallery)
    exact, exact_ms = latency(lambda q, m=matrix: exact_topk(m, q, args.k), queries)
    indexes = [
        run_index(kind, gallery, queries, exact, exact_ms, args, workdir / f"d{dim}_{kind}")
        for kind in args.indexes
    ]
    return {
        "dim": dim,
        "rows": args.rows,
        "generate_s": generate_ms / 1e3,
        "exact_ms": exact_ms,
        "indexes": indexes,
        "peak_rss_mb_so_far": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> str:
    """Run every dim, write scale.json, print one line; returns the line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--rows", type=int, default=GALLERY_TILES)
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 1280])
    parser.add_argument("--queries", type=int, default=3, help="timed query images per path")
    parser.add_argument("--k", type=int, default=CANDIDATES_PER_PATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per upsert")
    parser.add_argument("--indexes", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the LanceDB data")
    args = parser.parse_args(argv)
    if args.rows < 256 or not 0 < args.k <= args.rows or args.queries < 1:
        parser.error("need rows >= 256 (IVF-PQ training), 0 < k <= rows and queries >= 1")

    with tempfile.TemporaryDirectory(prefix="rsloc-scale-", dir=args.workdir) as tmp:
        runs = [run_dim(dim, args, Path(tmp)) for dim in args.dims]
    figures = {
        "rows": args.rows,
        "dims": args.dims,
        "k": args.k,
        "patches_per_query_image": PATCHES_PER_QUERY,
        "query_images": args.queries,
        "seed": args.seed,
        "model": {
            "tile": "normalise(√w_mean·m + √w_group·g[group] + √w_cluster·c[cluster] + √w_tile·n)",
            "weights": WEIGHTS,
            "clusters": model_shape(args.rows)[0],
            "groups": model_shape(args.rows)[1],
            "cluster_sizes": "log-normal(0, 1) shares",
            "query": f"normalise(√{1 - QUERY_NOISE:g}·tile + √{QUERY_NOISE:g}·n), random tile",
        },
        "gallery_grid": f"ge z{ZOOM}, {GALLERY_COLS} tiles wide, row-major",
        "timing": (
            "time.perf_counter; table build = TileStore.upsert calls only; latency per query "
            f"image = one call for {PATCHES_PER_QUERY} vectors after one warm-up image"
        ),
        "torch_threads": torch.get_num_threads(),
        "lancedb": lancedb.__version__,
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
    }
    write_result("scale", figures, args.results_dir)
    kind = DEFAULT_KIND if DEFAULT_KIND in args.indexes else args.indexes[0]
    shown = [next(i for i in r["indexes"] if i["kind"] == kind) for r in runs]
    first = [i["ann"][0] for i in shown]

    def each(values: list[float], fmt: str) -> str:
        return ",".join(format(v, fmt) for v in values)

    nprobes, refine = SWEEPS[kind][0]
    ratios = ",".join(f"{a['ann_over_exact']:.2f}x" for a in first)
    line = (
        f"scale: rows={args.rows} dims={each(args.dims, 'd')} k={args.k} index={kind}"
        f" nprobes={nprobes} refine={refine}"
        f" build_s={each([i['table']['build_s'] for i in shown], '.1f')}"
        f" index_s={each([i['index']['build_s'] for i in shown], '.1f')}"
        f" ann_ms={each([a['ms']['mean'] for a in first], '.1f')}"
        f" exact_ms={each([r['exact_ms']['mean'] for r in runs], '.1f')}"
        f" ann_over_exact={ratios}"
        f" recall@{args.k}={each([a[f'recall@{args.k}'] for a in first], '.3f')}"
    )
    print(line)
    return line


if __name__ == "__main__":
    show_progress()
    main()
