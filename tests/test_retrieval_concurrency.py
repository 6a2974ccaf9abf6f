"""Concurrent runs in real processes: gallery refreshes never duplicate a tile, a refresh repairs
duplicates it finds, and queries localized during a refresh and beside each other come out as
they do alone."""

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import lancedb
import numpy as np

from bench.common import snapshot
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.layout import Layout
from rsloc_assets.retrieval.steps import check_embeddings, refresh_tile_embeddings
from tests.fault_steps import STEPS, resource

REFRESH = textwrap.dedent(
    """
    import sys
    from rsloc_assets.defs.resources import RslocResource
    from rsloc_assets.retrieval.steps import refresh_tile_embeddings

    rsloc = RslocResource(data_dir=sys.argv[1], device="cpu", index_min_rows=1_000_000)
    layout, encoder = rsloc.layout(), rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    result = refresh_tile_embeddings(layout, encoder, stores, 32, 1_000_000, "ivf_flat")
    print("embedded", sum(done.refresh.report.embedded for done in result.blocks))
    """
)


BLOCKS = textwrap.dedent(
    """
    import sys
    from rsloc_assets.defs.resources import RslocResource
    from rsloc_assets.retrieval.steps import embed_blocks, gallery_blocks

    rsloc = RslocResource(data_dir=sys.argv[1], device="cpu")
    layout, encoder = rsloc.layout(), rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    blocks = gallery_blocks(layout, list(stores), side=4)
    share = blocks[int(sys.argv[2]) :: int(sys.argv[3])]
    done = embed_blocks(layout, encoder, stores, share, 32)
    print("embedded", sum(d.refresh.report.embedded for d in done))
    """
)


def _embed_blocks(root: Path, workers: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", BLOCKS, str(root), str(i), str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]


def test_two_workers_embedding_half_the_blocks_each_store_what_one_stores(small_layout, tmp_path):
    """Blocks of 4 × 4 tiles: one process embeds them all; in a copy, two processes embed every
    other block at once into one table. The stores hold the same rows."""
    write_manifest(small_layout, None, None)
    stores = {}
    for name, workers in (("alone", 1), ("together", 2)):
        root = tmp_path / name
        shutil.copytree(small_layout.root, root)
        shutil.rmtree(root / "lancedb", ignore_errors=True)
        runs = _embed_blocks(root, workers)
        outputs = [run.communicate(timeout=600) for run in runs]
        assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
        layout = Layout(root)
        rsloc = _resource(layout)
        stores[name] = rsloc.store(rsloc.load_encoder(), layout.gallery_info())
    alone, together = (stores[n].to_arrow().sort_by("key") for n in ("alone", "together"))
    assert together.num_rows == alone.num_rows == small_layout.read_manifest(["key"]).num_rows
    assert stores["together"].duplicate_keys() == []
    for column in ("key", "time", "mosaic"):
        assert together[column].to_pylist() == alone[column].to_pylist()
    vectors = [t["vector"].combine_chunks().flatten().to_numpy() for t in (alone, together)]
    assert np.allclose(*vectors, atol=1e-5)


def _resource(layout) -> RslocResource:
    return RslocResource(data_dir=str(layout.root), device="cpu", index_min_rows=1_000_000)


def test_two_refreshes_at_once_store_each_tile_once(small_layout):
    layout = small_layout
    write_manifest(layout, None, None)
    tiles = layout.read_manifest(["key"]).num_rows
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", REFRESH, str(layout.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    # Each block waited for the other's lock, then had nothing left to do: every tile once.
    assert sum(int(out.split()[-1]) for out, _ in outputs) == tiles
    rsloc = _resource(layout)
    store = rsloc.store(rsloc.load_encoder(), layout.gallery_info())
    assert store.count() == tiles and store.duplicate_keys() == []


def test_a_refresh_repairs_tiles_stored_twice(small_layout):
    layout = small_layout
    write_manifest(layout, None, None)
    rsloc = _resource(layout)
    encoder = rsloc.load_encoder()
    store = rsloc.store(encoder, layout.gallery_info())
    stores = {layout.gallery_info().zoom: store}
    refresh_tile_embeddings(layout, encoder, stores, 32, 1_000_000, "ivf_flat")
    tiles = store.count()
    # A writer outside the lock (an older rsloc, a hand-made table) adds five tiles again.
    lancedb.connect(layout.lancedb).open_table(store.table).add(store.to_arrow().slice(0, 5))
    store = rsloc.store(encoder, layout.gallery_info())  # a handle that sees the new version
    stores = {layout.gallery_info().zoom: store}
    assert store.count() == tiles + 5 and len(store.duplicate_keys()) == 5
    assert not check_embeddings(store, tiles, encoder.dim).passed
    result = refresh_tile_embeddings(layout, encoder, stores, 32, 1_000_000, "ivf_flat")
    refreshes = [done.refresh for done in result.blocks]
    assert sum(len(r.duplicates) for r in refreshes) == 5
    assert sum(r.report.embedded for r in refreshes) >= 5
    assert result.levels[0].check.passed and store.count() == tiles and store.duplicate_keys() == []


def _child(root: Path, step: str, name: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fault_steps", str(root), step, name],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_queries_beside_each_other_and_a_refresh_match_sequential_runs(small_layout, tmp_path):
    """Two queries and a refresh that re-dates a block of tiles (same pixels, so the same
    vectors) run at once; each query's files equal those of the queries run alone."""
    base = tmp_path / "base"
    shutil.copytree(small_layout.root, base)
    layout = Layout(base)
    write_manifest(layout, None, None)
    STEPS["embed"](resource(str(base)), "")
    alone, together = tmp_path / "alone", tmp_path / "together"
    shutil.copytree(base, alone)
    shutil.copytree(base, together)
    names = layout.query_names()[:2]
    for name in names:
        STEPS["query"](resource(str(alone)), name)
    with sqlite3.connect(Layout(together).gallery) as conn:
        conn.execute("UPDATE ge_tiles SET time_ = '2024' WHERE rowid % 4 = 0")
    conn.close()
    write_manifest(Layout(together), None, None)
    runs = [_child(together, "embed"), *(_child(together, "query", name) for name in names)]
    outputs = [run.communicate(timeout=900) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    for name in names:
        want = snapshot(Layout(alone).query(name).folder)
        got = snapshot(Layout(together).query(name).folder)
        assert got.keys() == want.keys()
        for file in want:
            assert got[file] == want[file], (name, file)
