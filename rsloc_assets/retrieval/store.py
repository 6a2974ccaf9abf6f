"""LanceDB vector store of gallery tile embeddings, keyed by "z/col/row"."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from enum import StrEnum

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import IvfFlat, IvfPq, IvfSq
from lancedb.table import Table

from rsloc_assets.records import MOSAIC, SEARCH_SCHEMA, key_times, tile_schema

log = logging.getLogger(__name__)

VECTOR = "vector"


class IndexKind(StrEnum):
    """LanceDB ANN index kinds: full vectors per partition, 8-bit scalar-quantised ones, or
    product-quantised ones."""

    IVF_FLAT = "ivf_flat"
    IVF_SQ = "ivf_sq"
    IVF_PQ = "ivf_pq"


MIN_INDEX_ROWS = 256  # PQ trains 2**8 centroids per sub-vector; fewer rows cannot train it
DELETE_CHUNK = 1000
RESULT_COLUMNS = ["key", "level", "col", "row", "lon", "lat"]


def table_name(encoder_name: str, grid_name: str, zoom: int) -> str:
    """Table name for one encoder over one grid level, e.g. "effnetl2_ge_z15"."""
    raw = f"{encoder_name}_{grid_name}_z{zoom}".lower()
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", raw)).strip("_")


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an N×dim float array as an Arrow fixed-size-list column of float32."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected an N×dim array of vectors, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])


def pq_sub_vectors(dim: int) -> int:
    """Largest divisor of dim that is at most dim/16, so each PQ sub-vector spans ≥ 16 dims."""
    target = max(1, dim // 16)
    return max(d for d in range(1, target + 1) if dim % d == 0)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class TileStore:
    """One LanceDB table of tile embeddings: idempotent upserts and batched top-k search."""

    def __init__(self, uri: str, table: str, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"vector dimension must be positive, got {dim}")
        self.uri = uri
        self.table = table
        self.dim = dim
        self.schema = tile_schema(dim)
        self._db = lancedb.connect(uri)
        self._tbl: Table | None = None

    def _open(self) -> Table | None:
        """The table handle, or None while nothing has been written."""
        if self._tbl is None:
            try:
                tbl = self._db.open_table(self.table)
            except ValueError:  # lancedb reports a missing table as ValueError
                return None
            found = tbl.schema.field(VECTOR).type
            if not pa.types.is_fixed_size_list(found) or found.list_size != self.dim:
                raise ValueError(
                    f"table {self.table} at {self.uri} holds vectors of type {found}, "
                    f"not {self.dim}-d"
                )
            self._tbl = tbl
        return self._tbl

    def _require(self) -> Table:
        tbl = self._open()
        if tbl is None:
            raise LookupError(f"no table {self.table!r} in {self.uri}; embed the gallery first")
        return tbl

    def _conform(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """Cast a batch to the tile schema, rejecting wrong dimensions, NaNs and duplicates."""
        data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        missing = [name for name in self.schema.names if name not in data.column_names]
        if missing:
            raise ValueError(f"tile batch lacks columns {missing}")
        vector_type = data.schema.field(VECTOR).type
        if pa.types.is_fixed_size_list(vector_type) and vector_type.list_size != self.dim:
            raise ValueError(
                f"vectors are {vector_type.list_size}-d, store {self.table} is {self.dim}-d"
            )
        try:
            data = data.select(self.schema.names).cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(
                f"tile batch does not fit the {self.dim}-d tile schema: {err}"
            ) from err
        if data[VECTOR].null_count or data["key"].null_count:
            raise ValueError("tile batch has null keys or vectors")
        values = data[VECTOR].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        if not np.isfinite(values).all():
            raise ValueError("tile batch has NaN or infinite vector values")
        if not (np.linalg.norm(values.reshape(-1, self.dim), axis=1) > 0).all():
            raise ValueError("tile batch has all-zero vectors, which have no cosine similarity")
        if pc.count_distinct(data["key"]).as_py() != data.num_rows:
            raise ValueError("tile batch repeats a key; each tile may appear once per upsert")
        return data

    def upsert(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Insert new tiles and overwrite tiles whose key is already stored."""
        data = self._conform(batch)
        if data.num_rows == 0:
            return
        tbl = self._open()
        if tbl is None:
            self._db.create_table(self.table, schema=self.schema, exist_ok=True)
            tbl = self._require()
        if MOSAIC not in tbl.schema.names:
            log.info(
                "%s predates mosaic keys: adding the column (its tiles are embedded again)",
                self.table,
            )
            tbl.add_columns({MOSAIC: "CAST(NULL AS STRING)"})
        (
            tbl.merge_insert("key")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def count(self) -> int:
        """Number of stored tiles (0 before the first write)."""
        tbl = self._open()
        return 0 if tbl is None else tbl.count_rows()

    def to_arrow(
        self, columns: list[str] | None = None, limit: int | None = None, where: str | None = None
    ) -> pa.Table:
        """Stored rows (all, those matching the SQL filter `where`, or the first `limit`),
        optionally only some columns."""
        tbl = self._open()
        names = columns or self.schema.names
        if tbl is None:
            return self.schema.empty_table().select(names)
        found = [name for name in names if name in tbl.schema.names]
        query = tbl.search().select(found)
        if where is not None:
            query = query.where(where)
        rows = (query if limit is None else query.limit(limit)).to_arrow()
        if MOSAIC in names and MOSAIC not in found:  # a table from before mosaic keys
            rows = rows.append_column(MOSAIC, pa.nulls(rows.num_rows, pa.string()))
        return rows.select(names)

    def versions(self) -> dict[str, str]:
        """Key → imagery time of every stored tile, to find rows the manifest no longer holds or
        holds at another time."""
        return key_times(self.to_arrow(["key", "time"]))

    def duplicate_keys(self, where: str | None = None) -> list[str]:
        """Keys stored in more than one row (sorted; of the rows matching `where`, or all): merges
        on the key never make them, but two writers racing outside the refresh lock can."""
        keys = self.to_arrow(["key"], where=where)["key"].combine_chunks()
        if len(keys) == 0:
            return []
        counts = pc.value_counts(keys)
        keys, n = counts.field("values").to_pylist(), counts.field("counts").to_numpy()
        return sorted(k for k, c in zip(keys, n, strict=True) if c > 1)

    def delete(self, keys: Iterable[str]) -> None:
        """Remove the tiles with these keys; unknown keys are ignored."""
        tbl = self._open()
        wanted = list(keys)
        if tbl is None or not wanted:
            return
        for start in range(0, len(wanted), DELETE_CHUNK):
            chunk = wanted[start : start + DELETE_CHUNK]
            tbl.delete(f"key IN ({', '.join(_sql_string(key) for key in chunk)})")

    def has_index(self) -> bool:
        """Whether an ANN index covers the vector column."""
        return self._index_name() is not None

    def _index_name(self) -> str | None:
        tbl = self._open()
        if tbl is None:
            return None
        return next((ix.name for ix in tbl.list_indices() if VECTOR in ix.columns), None)

    def unindexed_rows(self) -> int:
        """Rows written since the ANN index was built (searched exhaustively until folded in)."""
        name = self._index_name()
        stats = self._require().index_stats(name) if name else None
        return 0 if stats is None else stats.num_unindexed_rows

    def ensure_index(
        self, min_rows: int = 100_000, kind: IndexKind | str = IndexKind.IVF_FLAT
    ) -> bool:
        """Build a cosine ANN index once the table has min_rows rows, or fold rows added since
        into the existing one; return whether one exists.

        "ivf_flat" (√rows partitions, full vectors) scores probed rows exactly, so it needs no
        refinement; "ivf_sq" reads a quarter of the bytes for a lower recall (bench-scale,
        824,796 tiles, 100 views × top 2,000, nprobes 20: 768-d 526 ms and recall 0.984 against
        IVF-FLAT's 898 ms and 0.994, 1,280-d 645 ms and 0.972 against 1,534 ms and 0.987);
        "ivf_pq" is compact but needs `refine_factor` for a good top-k (at top-2000 that re-read
        is far slower than exact search: see bench/results/REPORT.md)."""
        if kind not in set(IndexKind):
            choices = ", ".join(IndexKind)
            raise ValueError(f"unknown index kind {kind!r}; choose from {choices}")
        if self.has_index():
            if self.unindexed_rows():
                self._require().optimize()  # folds rows added since into the index
            return True
        rows = self.count()
        if rows < max(min_rows, MIN_INDEX_ROWS):
            return False
        partitions = max(1, round(math.sqrt(rows)))
        if kind == IndexKind.IVF_FLAT:
            config = IvfFlat(distance_type="cosine", num_partitions=partitions)
        elif kind == IndexKind.IVF_SQ:
            config = IvfSq(distance_type="cosine", num_partitions=partitions)
        else:
            config = IvfPq(
                distance_type="cosine",
                num_partitions=partitions,
                num_sub_vectors=pq_sub_vectors(self.dim),
            )
        log.info("indexing %s: %d rows, %s, %d partitions", self.table, rows, kind, partitions)
        self._require().create_index(VECTOR, config=config)
        return True

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        nprobes: int = 20,
        refine_factor: int | None = None,
    ) -> pa.Table:
        """Top-k tiles by cosine similarity for every query row, in one batched query.

        With an index, `nprobes` partitions are searched; refine_factor re-scores
        refine_factor×k candidates exactly (only an "ivf_pq" index needs it)."""
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or (len(queries) and queries.shape[1] != self.dim):
            raise ValueError(f"queries must be N×{self.dim}, got shape {queries.shape}")
        if not np.isfinite(queries).all() or not (np.linalg.norm(queries, axis=1) > 0).all():
            raise ValueError("query vectors must be finite and non-zero")
        tbl = self._require()
        k = min(k, tbl.count_rows())
        if len(queries) == 0 or k == 0:
            return SEARCH_SCHEMA.empty_table()
        query = (
            tbl.search(queries, vector_column_name=VECTOR)
            .distance_type("cosine")
            .limit(k)
            .nprobes(nprobes)
            .select([*RESULT_COLUMNS, "_distance"])
        )
        if refine_factor:
            query = query.refine_factor(refine_factor)
        hits = query.to_arrow()
        if "query_index" not in hits.column_names:  # lancedb omits it for a single query
            hits = hits.append_column("query_index", pa.array(np.zeros(hits.num_rows, np.int32)))
        hits = hits.sort_by([("query_index", "ascending"), ("_distance", "ascending")])
        query_ids = hits["query_index"].to_numpy().astype(np.int32)
        ranks = np.arange(len(query_ids)) - np.searchsorted(query_ids, query_ids, side="left")
        scores = np.clip(1.0 - hits["_distance"].to_numpy(), -1.0, 1.0).astype(np.float32)
        columns = {"patch": query_ids, "rank": ranks.astype(np.int32)}
        columns.update({name: hits[name] for name in RESULT_COLUMNS})
        columns["score"] = scores
        return pa.table(columns, schema=SEARCH_SCHEMA)
