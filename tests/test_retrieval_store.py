"""TileStore against a real LanceDB database in a temporary folder."""

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.records import MOSAIC
from rsloc_assets.retrieval.store import TileStore, table_name, tile_schema, vector_array

DIM = 64


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def tiles(vectors: np.ndarray, time: str = "2020", start: int = 0) -> pa.Table:
    """A tile batch at zoom 15 whose col counts up from start."""
    n = len(vectors)
    cols = np.arange(start, start + n, dtype=np.int64)
    lon = -10.0 + cols * 0.01
    return pa.table(
        {
            "key": [f"15/{c}/7" for c in cols],
            "level": np.full(n, 15, np.int32),
            "col": cols,
            "row": np.full(n, 7, np.int64),
            "time": [time] * n,
            "lon": lon,
            "lat": np.full(n, 45.0),
            "west": lon - 0.005,
            "south": np.full(n, 44.995),
            "east": lon + 0.005,
            "north": np.full(n, 45.005),
            MOSAIC: pa.nulls(n, pa.string()),
            "vector": vector_array(vectors),
        },
        schema=tile_schema(vectors.shape[1]),
    )


@pytest.fixture
def gallery() -> np.ndarray:
    return unit(np.random.default_rng(0).normal(size=(300, DIM)))


@pytest.fixture
def store(tmp_path: Path) -> TileStore:
    return TileStore(str(tmp_path / "db"), table_name("effnetl2", "ge", 15), DIM)


def test_table_name_is_sanitised() -> None:
    assert table_name("effnetl2", "ge", 15) == "effnetl2_ge_z15"
    assert table_name("clip-ViT-L/14", "My Grid", 17) == "clip_vit_l_14_my_grid_z17"


def test_upsert_is_idempotent_and_updates(store: TileStore, gallery: np.ndarray) -> None:
    assert store.count() == 0
    assert store.versions() == {}
    store.upsert(tiles(gallery))
    store.upsert(tiles(gallery).to_batches()[0])
    assert store.count() == len(gallery)

    changed = unit(np.random.default_rng(1).normal(size=(10, DIM)))
    store.upsert(tiles(changed, time="2024", start=5))
    assert store.count() == len(gallery)
    versions = store.versions()
    assert len(versions) == len(gallery)
    assert versions["15/4/7"] == "2020"
    assert versions["15/5/7"] == versions["15/14/7"] == "2024"
    assert versions["15/15/7"] == "2020"

    stored = store.to_arrow(["key", "vector"])
    by_key = dict(zip(stored["key"].to_pylist(), stored["vector"].to_pylist(), strict=True))
    np.testing.assert_allclose(by_key["15/5/7"], changed[0], atol=1e-7)

    store.delete(["15/0/7", "15/1/7", "no/such/key"])
    assert store.count() == len(gallery) - 2
    assert "15/0/7" not in store.versions()


def test_a_table_from_before_mosaic_keys_reads_them_as_unknown_and_takes_them(
    store: TileStore, gallery: np.ndarray
) -> None:
    old = tiles(gallery[:5]).drop_columns([MOSAIC])
    lancedb.connect(store.uri).create_table(store.table, old)
    assert store.to_arrow(["key", MOSAIC])[MOSAIC].null_count == 5
    new = tiles(gallery[:2]).set_column(11, MOSAIC, pa.array(["a", "b"]))
    store.upsert(new)
    rows = store.to_arrow(["key", MOSAIC]).sort_by("key").to_pydict()
    assert rows[MOSAIC] == ["a", "b", None, None, None] and store.count() == 5


def test_search_finds_planted_vectors(store: TileStore, gallery: np.ndarray) -> None:
    store.upsert(tiles(gallery))
    planted = np.array([3, 150, 299, 42])
    rng = np.random.default_rng(2)
    queries = unit(gallery[planted] + 0.01 * rng.normal(size=(len(planted), DIM)))
    hits = store.search(queries, k=5)
    assert hits.schema.names == [
        "patch",
        "rank",
        "key",
        "level",
        "col",
        "row",
        "lon",
        "lat",
        "score",
    ]
    assert hits.num_rows == 5 * len(planted)
    top = hits.filter(hits["rank"].to_numpy() == 0)
    assert top["patch"].to_pylist() == list(range(len(planted)))
    assert top["col"].to_pylist() == planted.tolist()
    assert top["key"].to_pylist() == [f"15/{c}/7" for c in planted]
    assert np.all(top["score"].to_numpy() > 0.99)
    scores = hits["score"].to_numpy()
    assert np.all((scores >= -1) & (scores <= 1))
    for q in range(len(planted)):
        mine = hits.filter(hits["patch"].to_numpy() == q)
        assert mine["rank"].to_pylist() == list(range(5))
        assert np.all(np.diff(mine["score"].to_numpy()) <= 0)
        exact = np.sort(gallery @ queries[q])[::-1][:5]
        np.testing.assert_allclose(mine["score"].to_numpy(), exact, atol=1e-5)


def test_search_edge_cases(store: TileStore, gallery: np.ndarray) -> None:
    with pytest.raises(LookupError, match=store.table):
        store.search(gallery[:1], k=3)
    store.upsert(tiles(gallery[:4]))
    hits = store.search(gallery[0], k=10)
    assert hits.num_rows == 4
    assert hits["patch"].to_pylist() == [0] * 4
    assert store.search(np.zeros((0, DIM), np.float32), k=3).num_rows == 0
    assert store.search(gallery[:2], k=0).num_rows == 0
    with pytest.raises(ValueError, match="finite"):
        store.search(np.full((1, DIM), np.nan, np.float32), k=3)


def test_bad_batches_are_rejected(store: TileStore, gallery: np.ndarray) -> None:
    bad = gallery[:3].copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.upsert(tiles(bad))
    with pytest.raises(ValueError, match="32-d"):
        store.upsert(tiles(gallery[:3, :32]))
    with pytest.raises(ValueError, match="repeats a key"):
        store.upsert(tiles(gallery[:2]).set_column(0, "key", pa.array(["a", "a"])))
    assert store.count() == 0


@pytest.mark.parametrize(("kind", "refine"), [("ivf_flat", None), ("ivf_sq", None), ("ivf_pq", 10)])
def test_ann_index_keeps_planted_vectors_in_top10(tmp_path: Path, kind: str, refine) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(2000, DIM)))
    store = TileStore(str(tmp_path / "db"), "ann", DIM)
    store.upsert(tiles(vectors))
    assert store.ensure_index(min_rows=5000, kind=kind) is False
    assert store.ensure_index(min_rows=1000, kind=kind) is True
    assert store.has_index()
    assert store.ensure_index(min_rows=1000, kind=kind) is True
    with pytest.raises(ValueError, match="unknown index kind"):
        store.ensure_index(kind="hnsw")
    assert store.unindexed_rows() == 0
    store.upsert(tiles(vectors[:300], time="2025"))  # a refresh rewrites 300 tiles
    assert store.unindexed_rows() == 300
    assert store.ensure_index(min_rows=1000, kind=kind) is True
    assert store.unindexed_rows() == 0 and store.count() == len(vectors)
    planted = rng.choice(len(vectors), size=20, replace=False)
    queries = unit(vectors[planted] + 0.02 * rng.normal(size=(len(planted), DIM)))
    hits = store.search(queries, k=10, refine_factor=refine)
    for q, tile in enumerate(planted):
        assert f"15/{tile}/7" in hits.filter(hits["patch"].to_numpy() == q)["key"].to_pylist()
