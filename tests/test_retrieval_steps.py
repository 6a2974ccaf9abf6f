"""Stage 1's query steps: the heading vote on a sample of patches, every patch embedded at the
winner, and one batched candidate search of the searchable views."""

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.grids import get_grid
from rsloc_assets.layout import Layout
from rsloc_assets.records import CANDIDATE_SCHEMA, MOSAIC, GalleryInfo, HeadingVote, PatchMeta
from rsloc_assets.retrieval import steps
from rsloc_assets.retrieval.heading import vote_heading, vote_order
from rsloc_assets.retrieval.patches import PatchPlan, heading_views, read_query
from rsloc_assets.retrieval.steps import find_candidates, prepare_query, refresh_tile_embeddings
from rsloc_assets.retrieval.store import TileStore, tile_schema, vector_array

DIM = 32
HEADINGS = (0.0, 90.0, 180.0, 270.0)
INFO = GalleryInfo(get_grid("ge"), 15, 45.0, (822.0, 1222.0), 40)


def test_the_heading_the_voting_patches_match_best_on_average_wins(tmp_path):
    rng = np.random.default_rng(1)
    gallery = _unit(rng.normal(size=(40, DIM)))
    store = _store(tmp_path, gallery)
    views = _unit(rng.normal(size=(3, len(HEADINGS), DIM)))
    views[0, 1] = gallery[5]  # patch 0 turned 90° is tile 5
    views[1, 1] = gallery[7]  # so is patch 1 with tile 7: the image is turned 90°
    views[2, 2] = gallery[9]  # patch 2 turned 180° is tile 9, but that view is mostly black
    valid = np.ones((3, len(HEADINGS)), np.float32)
    valid[2, 2] = 0.3
    asked = []

    def embed(rows):
        asked.append(rows.tolist())
        return views[rows], valid[rows]

    voted = vote_heading(store, np.array([2, 0, 1]), embed, 0.5, step=3, margin=0.0)
    assert voted.vote.index == 1 and voted.vote.sample == (2, 0, 1) and asked == [[2, 0, 1]]
    assert max(voted.vote.scores) == voted.vote.scores[1] > 0.66
    np.testing.assert_array_equal(voted.vectors, views[[2, 0, 1]])
    # One patch a step: patch 0 alone leads at 90° by more than 0.3 (1 against random tiles' best
    # cosine), so no other is embedded; nobody leads by 0.99, so every patch votes.
    asked.clear()
    voted = vote_heading(store, np.array([0, 2, 1]), embed, 0.5, step=1, margin=0.3)
    assert asked == [[0]] and voted.vote.sample == (0,) and voted.vote.index == 1
    assert voted.vectors.shape == (1, len(HEADINGS), DIM)
    asked.clear()
    voted = vote_heading(store, np.array([0, 2, 1]), embed, 0.5, step=1, margin=0.99)
    assert asked == [[0], [2], [1]] and voted.vote.index == 1
    nothing = vote_heading(store, np.arange(3), lambda r: (views[r], 0 * valid[r]), 0.5)
    assert nothing.vote.index == 0 and nothing.vote.scores == (0.0,) * len(HEADINGS)
    with pytest.raises(ValueError, match="needs patches"):
        vote_heading(store, np.arange(0), embed, 0.5)


def test_whole_patches_vote_first_and_every_prefix_spreads_over_the_image():
    valid = np.ones(8, np.float32)
    assert vote_order(valid).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    valid[[1, 2]] = [0.6, 0.8]  # a turned query's black corners come last, most valid first
    assert vote_order(valid).tolist() == [0, 6, 4, 3, 7, 5, 2, 1]
    assert vote_order(valid[:1]).tolist() == [0]
    assert sorted(vote_order(np.ones(40)).tolist()) == list(range(40))


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


def test_candidates_are_one_search_of_the_searchable_views_at_the_voted_heading(tmp_path):
    rng = np.random.default_rng(0)
    gallery = _unit(rng.normal(size=(40, DIM)))
    store = _store(tmp_path, gallery)
    vectors = _unit(rng.normal(size=(3, DIM)))
    vectors[1] = gallery[7]
    patches = pa.table(
        {
            "patch": pa.array([0, 1, 2], pa.int32()),
            "width": pa.array([10] * 3, pa.int32()),
            "height": pa.array([10] * 3, pa.int32()),
            "view_valid": pa.array([1.0, 0.9, 0.3], pa.float32()),  # patch 2's view: mostly black
            "vector": vector_array(vectors),
        }
    )
    layout = Layout(tmp_path)
    work = layout.query("q")
    meta = PatchMeta("q", 10, 10, (1.0, 1.0), "", INFO, 0.0, HEADINGS, HeadingVote(1))
    work.write_patches(patches, meta)
    result = find_candidates(layout, "q", store, top_k=10)
    table = result.table
    assert result.passed and table.num_rows == 20 and table.schema == CANDIDATE_SCHEMA
    expected = store.search(vectors[:2], 10)
    assert table["patch"].to_pylist() == expected["patch"].to_pylist()
    assert table["key"].equals(expected["key"]) and table["rank"].equals(expected["rank"])
    assert table.filter(pa.compute.equal(table["patch"], 1))["col"][0].as_py() == 7
    assert set(table["heading_deg"].to_pylist()) == {90.0}
    assert work.candidates().schema == table.schema

    work.write_patches(patches.drop_columns(["view_valid"]), meta)
    with pytest.raises(ValueError, match="predates the heading vote"):
        find_candidates(layout, "q", store, top_k=10)


@pytest.fixture(scope="module")
def grid(small_layout) -> RslocResource:
    """The resource's defaults on the small demo world, its gallery embedded with the default
    descriptor (exhaustive search)."""
    rsloc = RslocResource(data_dir=str(small_layout.root), device="cpu")
    write_manifest(small_layout, None, None)
    encoder = rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in small_layout.gallery_levels()}
    refresh_tile_embeddings(small_layout, encoder, stores, 32, 1_000_000, "ivf_flat")
    return rsloc


def _prepare(rsloc: RslocResource, layout: Layout, name: str, headings: int, vote: int):
    encoder = rsloc.load_encoder()
    levels = rsloc.layout().gallery_levels()
    return prepare_query(
        layout, name, levels, encoder, lambda info: rsloc.store(encoder, info), 1.0, 1.0,
        headings, vote,
    )  # fmt: skip


def test_a_query_is_cut_and_embedded_in_chunks_timed_as_a_whole(grid, monkeypatch):
    """Chunks of `EMBED_CHUNK` patches give the vectors one batch gives; the recorded seconds are
    the step's own."""
    layout = grid.layout()
    whole = _prepare(grid, layout, "q003", 2, 3)
    monkeypatch.setattr(steps, "EMBED_CHUNK", 5)
    start = time.perf_counter()
    chunked = _prepare(grid, layout, "q003", 2, 3)
    took = time.perf_counter() - start
    assert chunked.table.num_rows == whole.table.num_rows > 5
    assert chunked.heading_deg == whole.heading_deg
    flat = [r.table["vector"].combine_chunks().flatten() for r in (chunked, whole)]
    np.testing.assert_allclose(flat[0].to_numpy(), flat[1].to_numpy(), atol=1e-5)
    assert 0 < chunked.seconds <= took


def test_a_turned_query_votes_its_turn_and_embeds_every_patch_at_it(grid, tmp_path):
    """A demo query north-up and turned a quarter clockwise: 0° and 90° win (a view at heading h
    is the query turned h counter-clockwise), each patch's vector is its view's at the winner,
    and a sample as large as the query gives the whole-query vote."""
    layout = grid.layout()
    ref_lat = layout.gallery_levels()[0].ref_lat
    upright = _prepare(grid, layout, "q003", 4, 4)
    query = read_query(layout.query_file("q003"), ref_lat)
    turned = Layout(tmp_path / "turned", gallery_path=layout.gallery)
    turned.queries.mkdir(parents=True)
    pixels = np.ascontiguousarray(np.rot90(query.rgb, -1)[..., ::-1])
    cv2.imwrite(str(turned.queries / "t.png"), pixels)
    (turned.queries / "t.json").write_text(json.dumps({"gsd_m": query.gsd_m[0]}))
    result = _prepare(grid, turned, "t", 4, 4)
    assert (upright.heading_deg, result.heading_deg) == (0.0, 90.0)
    patches, meta = turned.query("t").patches()
    assert meta.heading_deg == 90.0 and len(meta.vote.sample) == 4
    assert meta.vote.scores[1] == max(meta.vote.scores)
    plan = PatchPlan(patches["width"][0].as_py(), patches["height"][0].as_py(), 1, 1)
    encoder = grid.load_encoder()
    views, valid = heading_views(
        read_query(turned.query_file("t"), ref_lat), patches, plan, 90.0, encoder.input_size
    )
    np.testing.assert_allclose(patches["view_valid"].to_numpy(), valid)
    vectors = patches["vector"].combine_chunks().flatten().to_numpy().reshape(len(views), -1)
    np.testing.assert_allclose(vectors, encoder.embed(views), atol=1e-5)
    assert _prepare(grid, turned, "t", 4, patches.num_rows).heading_deg == 90.0
