"""Stage 1's descriptor options side by side on real imagery: patch recall of the true tile per
aggregation (GeM, VLAD), whitening and gallery adapter, on the same gallery and query patches.

The gallery and queries are `bench.real`'s (NAIP: a 2020 gallery, crops of 2009–2016; RSLoc:
same-source crops). The frozen encoder runs once on every gallery mosaic and query patch; each
option is then fitted on the gallery's mosaics alone (no query is ever seen by a fit) and scored
on the cached local features, so the options differ only in what they are. Each option's
near-rank of every patch is also projected to the paper's 824,796 tiles at the default top K
(`bench.gallery_size.PROJECTION_METHOD`); with `--folders` on the gallery-size benchmark's largest
gallery (`make bench-gallery-size-descriptors`) that is the figure the baseline is compared on.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import GALLERY_TILES, SHARED_DATA, show_progress, write_result
from bench.gallery_size import projected_recall, recall_at
from bench.real import datasets
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.metrics import patch_true_tiles
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.grids import TileKey
from rsloc_assets.layout import Layout
from rsloc_assets.progress import Progress
from rsloc_assets.retrieval.adapter import Adapter, AdapterParams
from rsloc_assets.retrieval.descriptors import (
    Aggregation,
    DescriptorModel,
    DescriptorSpec,
    fit_vocabulary,
    fit_whitening,
)
from rsloc_assets.retrieval.encoders import load_encoder
from rsloc_assets.retrieval.models import adapt_gallery
from rsloc_assets.retrieval.patches import cut_patches, plan_patches, read_query, window_of

log = logging.getLogger(__name__)

RANKS = (1, 10, 100)
CHUNK = 64  # patches aggregated at once (VLAD of 1280-d tokens at 32 words is 164 KB a patch)


@dataclass(frozen=True)
class Option:
    """One descriptor configuration: aggregation, vocabulary size, whitening dim, adapter."""

    aggregation: Aggregation
    clusters: int = 32
    grid: int = 3
    whitening_dim: int = 0
    adapt: bool = False

    @property
    def name(self) -> str:
        parts = [
            {
                Aggregation.GEM: "gem",
                Aggregation.GRID: f"grid{self.grid}",
                Aggregation.VLAD: f"vlad{self.clusters}",
            }[self.aggregation]
        ]
        if self.whitening_dim:
            parts.append(f"w{self.whitening_dim}")
        if self.adapt:
            parts.append("adapted")
        return "+".join(parts)


OPTIONS = (
    Option(Aggregation.GEM),
    Option(Aggregation.GEM, whitening_dim=64),
    Option(Aggregation.GRID),
    Option(Aggregation.GRID, whitening_dim=64),
    Option(Aggregation.VLAD, 16),
    Option(Aggregation.VLAD, 32),
    Option(Aggregation.VLAD, 32, whitening_dim=64),
    Option(Aggregation.GEM, adapt=True),
    Option(Aggregation.GRID, adapt=True),
    Option(Aggregation.VLAD, 32, whitening_dim=64, adapt=True),
)


@dataclass
class Cached:
    """Local features of every gallery mosaic and query patch, and each patch's true tile."""

    gallery_keys: list[str]
    gallery_tokens: np.ndarray  # tiles × T × C, float16
    patch_tokens: np.ndarray  # patches × T × C, float16
    patch_query: list[str]
    true_tiles: list[TileKey]
    seconds: float


def cache_tokens(layout: Layout, encoder, queries: str = "*", batch: int = 32) -> Cached:
    """Run the frozen encoder once on every gallery mosaic and on the patches of every query
    whose name matches `queries`."""
    start = time.perf_counter()
    info = layout.gallery_info()  # the finest level: these benchmarks' galleries hold one
    manifest = layout.read_manifest(zoom=info.zoom)
    refs = [
        TileRef(r["level"], r["col"], r["row"], r["time"])
        for r in manifest.select(["level", "col", "row", "time"]).to_pylist()
    ]
    keys, parts, images = [], [], []
    progress = Progress("encoding mosaics", len(refs), "mosaics")
    with Gallery.open(layout.gallery) as gallery:
        for ref, mosaic in gallery.mosaics(refs):
            if mosaic is None:
                continue
            keys.append(ref.key)
            images.append(mosaic)
            if len(images) == batch:
                parts.append(encoder.tokens(np.stack(images)).astype(np.float16))
                progress.advance(len(images))
                images = []
    if images:
        parts.append(encoder.tokens(np.stack(images)).astype(np.float16))
        progress.advance(len(images))
    gallery_tokens = np.concatenate(parts)
    patch_parts, names, truths = [], [], []
    for name in fnmatch.filter(layout.query_names(), queries):
        query = read_query(layout.query_file(name), info.ref_lat)
        plan = plan_patches(info.tile_ground_m, query.gsd_m)
        table = cut_patches(query, plan)
        pixels = [
            window_of(query.rgb, w["x0"], w["y0"], w["width"], w["height"])
            for w in table.select(["x0", "y0", "width", "height"]).to_pylist()
        ]
        truth = read_truth(layout.query_file(name))
        if not pixels or truth is None:
            continue
        for i in range(0, len(pixels), batch):
            tokens = encoder.tokens(np.stack(pixels[i : i + batch]))
            patch_parts.append(tokens.astype(np.float16))
        names += [name] * len(pixels)
        truths += patch_true_tiles(truth, table, info.grid, info.zoom)
    return Cached(
        keys,
        gallery_tokens,
        np.concatenate(patch_parts),
        names,
        truths,
        time.perf_counter() - start,
    )


def describe(model: DescriptorModel, tokens: np.ndarray, adapter: Adapter | None) -> np.ndarray:
    """Whitened descriptors of cached local features, in chunks."""
    out = []
    for i in range(0, len(tokens), CHUNK):
        t = tokens[i : i + CHUNK].astype(np.float32)
        if adapter is not None:
            t = adapter(t)
        out.append(model.aggregate(t))
    return np.concatenate(out)


def fit_option(
    option: Option, cached: Cached, adapter: Adapter | None, base: str
) -> DescriptorModel:
    """Fit the option's vocabulary and whitening on the gallery's mosaics only."""
    spec = DescriptorSpec(
        option.aggregation, option.clusters, grid=option.grid, whitening_dim=option.whitening_dim
    )
    model = DescriptorModel(base, spec, adapter and adapter.version)
    tokens = cached.gallery_tokens
    if adapter is not None:
        tokens = np.concatenate(
            [
                adapter(tokens[i : i + CHUNK].astype(np.float32))
                for i in range(0, len(tokens), CHUNK)
            ]
        )
    if option.aggregation == Aggregation.VLAD:
        model.centroids = fit_vocabulary(tokens, option.clusters)
    if option.whitening_dim:
        vectors = describe(model, tokens, None)
        dim = min(option.whitening_dim, len(vectors) - 1)
        model.mean, model.projection = fit_whitening(vectors, dim)
    return model


def recall(cached: Cached, gallery: np.ndarray, patches: np.ndarray) -> dict[str, float]:
    """Patch recall at RANKS of the true tile, exactly and with its 8 neighbours."""
    scores = patches @ gallery.T
    order = np.argsort(-scores, axis=1)
    cols = np.array([TileKey.parse(k).col for k in cached.gallery_keys])
    rows = np.array([TileKey.parse(k).row for k in cached.gallery_keys])
    true_col = np.array([t.col for t in cached.true_tiles])[:, None]
    true_row = np.array([t.row for t in cached.true_tiles])[:, None]
    dc, dr = np.abs(cols[order] - true_col), np.abs(rows[order] - true_row)
    exact, near = (dc == 0) & (dr == 0), (dc <= 1) & (dr <= 1)
    out = {}
    for r in RANKS:
        out[f"exact_at_{r}"] = float(exact[:, :r].any(axis=1).mean())
        out[f"near_at_{r}"] = float(near[:, :r].any(axis=1).mean())
    top_k = RslocResource().top_k
    near_rank = np.where(near.any(axis=1), near.argmax(axis=1), -1)
    out["near_at_k"] = recall_at(near_rank, top_k)
    out["projected_near_at_k"] = projected_recall(
        near_rank, len(cached.gallery_keys), GALLERY_TILES, top_k
    )
    return out


def real_source(dataset: str, root: Path, seed: int) -> tuple[Layout, str]:
    """A `bench.real` dataset's gallery and query crops (made with `seed`) under `root`."""
    setup = datasets(SHARED_DATA, per_image=2, per_date=3)[dataset]
    layout = Layout(root, gallery_path=root / setup.gallery_file)
    build_gallery(setup.inputs, layout.gallery, grid=setup.grid, zoom=setup.zoom, time=setup.time)
    setup.make_queries(layout.queries, np.random.default_rng(seed))
    write_manifest(layout, setup.zoom, None)
    return layout, setup.label


def folder_source(folder: Path, root: Path) -> tuple[Layout, str]:
    """An existing data folder's gallery and georeferenced queries, read in place; everything
    this benchmark writes goes under `root`."""
    gallery = next(p for p in (folder / "gallery.sqlite", folder / "gallery.mbtiles") if p.exists())
    root.mkdir(parents=True)
    (root / "queries").symlink_to((folder / "queries").resolve())
    layout = Layout(root, gallery_path=gallery)
    write_manifest(layout, None, None)
    return layout, f"the gallery and queries of {folder}"


def score_options(
    layout: Layout,
    label: str,
    params: AdapterParams,
    options: Sequence[Option] = OPTIONS,
    queries: str = "*",
) -> dict:
    """Cache local features once, train the adapter once, then fit and score every option."""
    encoder = load_encoder("effnetl2", device="auto")
    cached = cache_tokens(layout, encoder, queries)
    adapters: dict[int, Adapter] = {}
    adapt_s: dict[str, float] = {}
    rows = []
    for option in options:
        pooling = option.grid if option.aggregation == Aggregation.GRID else 0
        if option.adapt and pooling not in adapters:
            start = time.perf_counter()
            trained = adapt_gallery(layout, encoder, replace(params, grid=pooling)).adapter
            adapters[pooling] = trained
            adapt_s[f"grid{pooling}"] = round(time.perf_counter() - start, 1)
        t0 = time.perf_counter()
        used = adapters[pooling] if option.adapt else None
        model = fit_option(option, cached, used, encoder.name)
        gallery = model.whiten(describe(model, cached.gallery_tokens, used))
        patches = model.whiten(describe(model, cached.patch_tokens, used))
        row = {"option": option.name, "dim": int(gallery.shape[1])}
        row |= recall(cached, gallery, patches)
        row["fit_and_score_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{label}: {row}")
    return {
        "queries_made": label,
        "gallery_tiles": len(cached.gallery_keys),
        "queries": len(set(cached.patch_query)),
        "patches": len(cached.patch_query),
        "encoder": encoder.name,
        "cache_s": round(cached.seconds, 1),
        "adapters": {f"grid{g}": a.record for g, a in adapters.items()},
        "adapter_s": adapt_s,
        "options": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.descriptors", description=__doc__)
    parser.add_argument("--datasets", nargs="*", default=["naip"], choices=["naip", "rsloc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 0])
    parser.add_argument(
        "--folders", nargs="*", type=Path, default=[], help="data folders with gallery + queries"
    )
    parser.add_argument("--epochs", type=int, default=AdapterParams.epochs)
    parser.add_argument(
        "--options",
        nargs="*",
        default=[o.name for o in OPTIONS],
        choices=[o.name for o in OPTIONS],
        help="the options to score (default: all)",
    )
    parser.add_argument("--queries", default="*", help="only queries whose name matches")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--name", default="descriptors")
    args = parser.parse_args(argv)
    params = AdapterParams(epochs=args.epochs)
    options = [o for o in OPTIONS if o.name in args.options]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            for seed in args.seeds:
                layout, label = real_source(name, Path(tmp) / f"{name}{seed}", seed)
                runs.append(
                    {"source": name, "seed": seed}
                    | score_options(layout, label, params, options, args.queries)
                )
        for i, folder in enumerate(args.folders):
            layout, label = folder_source(folder, Path(tmp) / f"folder{i}")
            runs.append(
                {"source": str(folder), "seed": None}
                | score_options(layout, label, params, options, args.queries)
            )
    write_result(args.name, {"runs": runs}, args.results_dir)


if __name__ == "__main__":
    show_progress()
    main()
