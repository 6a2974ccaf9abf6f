"""Stage 1's candidates over several headings: one batched search of every patch × heading vector,
merged to each tile's best heading per patch and ranked again."""

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.grids import get_grid
from rsloc_assets.layout import Layout
from rsloc_assets.records import CANDIDATE_SCHEMA, MOSAIC, SEARCH_SCHEMA, GalleryInfo, PatchMeta
from rsloc_assets.retrieval import steps
from rsloc_assets.retrieval.steps import (
    best_headings,
    find_candidates,
    prepare_query,
    voted_heading,
)
from rsloc_assets.retrieval.store import TileStore, tile_schema, vector_array

DIM = 32
HEADINGS = (0.0, 90.0, 180.0, 270.0)
INFO = GalleryInfo(get_grid("ge"), 15, 45.0, (822.0, 1222.0), 40)


def _hits(rows: list[tuple[int, str, float]]) -> pa.Table:
    """A search result: (searched vector, tile key, score), ranked within each vector."""
    rank = {}
    table = []
    for vector, key, score in rows:
        rank[vector] = rank.get(vector, -1) + 1
        col = int(key)
        table.append(
            {
                "patch": vector,
                "rank": rank[vector],
                "key": f"15/{col}/7",
                "level": 15,
                "col": col,
                "row": 7,
                "lon": col * 0.01,
                "lat": 45.0,
                "score": score,
            }
        )
    return pa.Table.from_pylist(table, schema=SEARCH_SCHEMA)


def test_each_tile_keeps_its_best_heading_and_ranks_are_recomputed():
    # Searched vectors: patch 0 at 0° and 90°, patch 1 at 90° only (its 0° view was not valid).
    rows = np.array([0, 1, 3])
    hits = _hits(
        [
            (0, "1", 0.9),
            (0, "2", 0.5),
            (0, "3", 0.4),
            (1, "1", 0.9),  # a tie with 0°: the earlier heading wins
            (1, "2", 0.8),
            (1, "4", 0.3),
            (2, "3", 0.6),
            (2, "1", 0.2),
        ]
    )
    table = best_headings(hits, rows, HEADINGS[:2], top_k=3)
    assert table.schema == CANDIDATE_SCHEMA
    got = [(r["patch"], r["rank"], r["col"], r["heading_deg"]) for r in table.to_pylist()]
    assert got == [
        (0, 0, 1, 0.0),
        (0, 1, 2, 90.0),
        (0, 2, 3, 0.0),  # tile 4 (0.3) falls out of the top 3
        (1, 0, 3, 90.0),
        (1, 1, 1, 90.0),
    ]
    assert table["score"].to_numpy() == pytest.approx([0.9, 0.8, 0.4, 0.6, 0.2])
    assert best_headings(hits.slice(0, 0), rows, HEADINGS, 3).schema == CANDIDATE_SCHEMA


def test_the_heading_the_patches_match_best_on_average_wins():
    # 2 patches × 8 headings; vector v is patch v // 8 at heading v % 8.
    rows = np.arange(16)
    best = _hits(
        [(v, str(v), 0.5) for v in rows]
        + [(3, "90", 0.9), (11, "91", 0.8), (8, "92", 0.95)]  # 135° twice; 0° once, higher
    )
    assert voted_heading(best, rows, 8) == 3
    assert voted_heading(best.filter(pa.compute.less(best["patch"], 4)), rows[:4], 4) == 3
    assert voted_heading(best.slice(0, 0), rows, 8) == 0


def test_two_searches_give_the_candidates_one_search_of_every_heading_gave(tmp_path):
    """Voting on a top-1 search, then searching the winner's views alone, keeps exactly the
    candidates of one top-K search of every view filtered to the voted heading (exact search)."""
    rng = np.random.default_rng(3)
    store = _store(tmp_path, _unit(rng.normal(size=(300, DIM))))
    vectors = _unit(rng.normal(size=(6, len(HEADINGS), DIM)))
    patches = pa.table(
        {
            "patch": pa.array(range(6), pa.int32()),
            "width": pa.array([10] * 6, pa.int32()),
            "height": pa.array([10] * 6, pa.int32()),
            "heading_valid": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ones(6 * len(HEADINGS), np.float32)), len(HEADINGS)
            ),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM), len(HEADINGS)
            ),
        }
    )
    layout = Layout(tmp_path)
    layout.query("q").write_patches(
        patches, PatchMeta("q", 10, 10, (1.0, 1.0), "", INFO, 0.0, HEADINGS)
    )
    rows = np.arange(6 * len(HEADINGS))
    every = store.search(vectors.reshape(-1, DIM), 50)
    top1 = every.filter(pa.compute.equal(every["rank"], 0))
    keep = (rows[every["patch"].to_numpy()] % len(HEADINGS)) == voted_heading(top1, rows, 4)
    expected = best_headings(every.filter(pa.array(keep)), rows, HEADINGS, 50)
    got = find_candidates(layout, "q", store, top_k=50).table
    assert got.num_rows == 6 * 50
    assert got.drop_columns(["score"]).equals(expected.drop_columns(["score"]))
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), atol=1e-6)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _store(tmp_path: Path, vectors: np.ndarray) -> TileStore:
    n = len(vectors)
    cols = np.arange(n, dtype=np.int64)
    lon = cols * 0.01
    store = TileStore(str(tmp_path / "lancedb"), "tiles", DIM)
    store.upsert(
        pa.table(
            {
                "key": [f"15/{c}/7" for c in cols],
                "level": np.full(n, 15, np.int32),
                "col": cols,
                "row": np.full(n, 7, np.int64),
                "time": ["2020"] * n,
                "lon": lon,
                "lat": np.full(n, 45.0),
                "west": lon - 0.005,
                "south": np.full(n, 44.995),
                "east": lon + 0.005,
                "north": np.full(n, 45.005),
                MOSAIC: pa.nulls(n, pa.string()),
                "vector": vector_array(vectors),
            },
            schema=tile_schema(DIM),
        )
    )
    return store


def test_candidates_come_from_the_queries_voted_heading(tmp_path):
    rng = np.random.default_rng(0)
    gallery = _unit(rng.normal(size=(40, DIM)))
    store = _store(tmp_path, gallery)
    vectors = _unit(rng.normal(size=(3, len(HEADINGS), DIM)))
    vectors[0, 1] = gallery[5]  # patch 0 turned 90° is tile 5
    vectors[1, 1] = gallery[7]  # so is patch 1 with tile 7: the image is turned 90°
    vectors[2, 2] = gallery[9]  # patch 2 turned 180° is tile 9, but that view is mostly black
    valid = np.ones((3, len(HEADINGS)), np.float32)
    valid[2, 2] = 0.3
    per_heading = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
    patches = pa.table(
        {
            "patch": pa.array([0, 1, 2], pa.int32()),
            "width": pa.array([10] * 3, pa.int32()),
            "height": pa.array([10] * 3, pa.int32()),
            "heading_valid": pa.FixedSizeListArray.from_arrays(pa.array(valid.ravel()), 4),
            "vector": pa.FixedSizeListArray.from_arrays(per_heading, len(HEADINGS)),
        }
    )
    layout = Layout(tmp_path)
    work = layout.query("q")
    work.write_patches(patches, PatchMeta("q", 10, 10, (1.0, 1.0), "", INFO, 0.0, HEADINGS))
    result = find_candidates(layout, "q", store, top_k=10)
    table = result.table
    assert result.passed and table.num_rows == 30
    assert table["rank"].to_pylist() == list(range(10)) * 3
    best = table.filter(pa.compute.equal(table["rank"], 0)).to_pylist()
    assert [(r["col"], r["heading_deg"]) for r in best[:2]] == [(5, 90.0), (7, 90.0)]
    assert set(table["heading_deg"].to_pylist()) == {90.0}
    assert best[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert work.candidates().schema == table.schema

    work.write_patches(
        patches.drop_columns(["heading_valid"]), PatchMeta("q", 10, 10, (1.0, 1.0), "", INFO, 0.0)
    )
    with pytest.raises(ValueError, match="predates per-heading vectors"):
        find_candidates(layout, "q", store, top_k=10)


def test_a_query_is_cut_and_embedded_in_chunks_timed_as_a_whole(small_layout, effnet, monkeypatch):
    """Chunks of `EMBED_CHUNK` patches give the vectors one batch gives; the recorded seconds are
    the step's own."""
    write_manifest(small_layout, None, None)
    name = small_layout.query_names()[0]
    levels = small_layout.gallery_levels()
    whole = prepare_query(small_layout, name, levels, effnet, headings=2)
    monkeypatch.setattr(steps, "EMBED_CHUNK", 5)
    start = time.perf_counter()
    chunked = prepare_query(small_layout, name, levels, effnet, headings=2)
    took = time.perf_counter() - start
    assert chunked.table.num_rows == whole.table.num_rows > 5
    flat = [r.table["vector"].combine_chunks().flatten().flatten() for r in (chunked, whole)]
    np.testing.assert_allclose(flat[0].to_numpy(), flat[1].to_numpy(), atol=1e-5)
    assert 0 < chunked.seconds <= took
