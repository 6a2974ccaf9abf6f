"""Stage 2: maximal cliques of retrieval candidates whose ground distances agree with their
patches' pixel distances, computed by the native library (native/, called through cffi).

The rules (edges, budgets, ranking, groups) are spelled out in native/README.md.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np

from rsloc_assets._cliques import ffi, lib

_ERR_LEN = 512


class Status(IntEnum):
    """The C library's status codes."""

    OK = lib.RSLOC_OK
    INVALID = lib.RSLOC_EINVAL
    NO_MEMORY = lib.RSLOC_ENOMEM
    LIMIT = lib.RSLOC_ELIMIT


class CliqueError(RuntimeError):
    """The native library refused or stopped: `code` says why (a `Status`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = Status(code)


class CliqueInputError(CliqueError, ValueError):
    """Invalid input: NaN or out-of-range values, mismatched lengths, bad parameters."""


@dataclass(frozen=True)
class CliqueParams:
    """Stage-2 settings, defaulting to the C library's (`rsloc_geo_params_default`).

    Metric defaults suit RSLoc z15 tiles (~1 km): pass 1.5 tile sizes as `tolerance_m`.
    """

    tolerance_m: float = 1500.0
    min_distance_m: float = 0.0
    suppress_ratio: float = 1.0
    max_edges_per_node: int = 256
    max_edges_total: int = 4_000_000
    min_clique_size: int = 3
    top_n: int = 64
    keep_ratio: float = 0.5
    max_cliques: int = 100_000
    max_search_steps: int = 10_000_000
    max_pair_checks: int = 500_000_000
    max_nodes: int = 4_000_000


@dataclass
class CliqueResult:
    """Stage-2 output for one query: kept cliques best first, their groups, every hit's score."""

    n_nodes: int
    n_suppressed: int
    n_edges: int
    n_maximal: int
    cliques: list[np.ndarray]
    clique_size: np.ndarray
    clique_mean_score: np.ndarray
    clique_group: np.ndarray
    group_scores: np.ndarray
    candidate_score: np.ndarray
    candidate_group: np.ndarray
    ranking: np.ndarray
    truncated: bool
    elapsed_ms: float

    def group_members(self, group: int = 0) -> np.ndarray:
        """Hit indices of `group` (0 = the best), one per patch, ascending."""
        return np.flatnonzero(self.candidate_group == group)


def _raise(code: int, err) -> None:
    message = ffi.string(err).decode("utf-8", "replace")
    message = message or ffi.string(lib.rsloc_strerror(code)).decode()
    if code == Status.INVALID:
        raise CliqueInputError(code, message)
    raise CliqueError(code, message)


def _array(values, dtype=None) -> np.ndarray:
    """A C-contiguous 1-D array from numpy, Arrow or sequence input."""
    if type(values).__module__.startswith("pyarrow"):
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise CliqueInputError(Status.INVALID, f"expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _patch_ids(values) -> np.ndarray:
    arr = _array(values)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CliqueInputError(Status.INVALID, f"patch ids must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise CliqueInputError(Status.INVALID, "patch ids must lie in [0, 2**31)")
    return arr.astype(np.int32, copy=False)  # int32 input (the usual) is passed as it is


def _copy(ptr, count: int, dtype) -> np.ndarray:
    """A numpy copy of `count` C values at `ptr`."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(ffi.buffer(ptr, count * np.dtype(dtype).itemsize), dtype=dtype).copy()


def _split(offsets_ptr, members_ptr, count: int) -> list[np.ndarray]:
    """CSR cliques (offsets, members) from C as a list of member arrays."""
    offsets = _copy(offsets_ptr, count + 1, np.int64)
    members = _copy(members_ptr, int(offsets[-1]), np.int32)
    return [members[a:b] for a, b in itertools.pairwise(offsets)]


def find_geo_cliques(
    patch,
    px,
    py,
    lon,
    lat,
    score,
    gsd_m: tuple[float, float],
    params: CliqueParams | None = None,
) -> CliqueResult:
    """Stage 2 for one query's hits: patch id, patch centre in query pixels, candidate tile centre
    lon/lat, similarity (numpy or Arrow arrays), and the query's (x, y) ground resolution in m/px.

    Raises CliqueInputError (a ValueError) on invalid input, CliqueError on a limit or no memory.
    """
    arrays = {
        "patch": _patch_ids(patch),
        "px": _array(px, np.float64),
        "py": _array(py, np.float64),
        "lon": _array(lon, np.float64),
        "lat": _array(lat, np.float64),
        "score": _array(score, np.float32),
    }
    lengths = {name: arr.size for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise CliqueInputError(Status.INVALID, f"hit arrays differ in length: {lengths}")
    n = lengths["patch"]

    hits = ffi.new("rsloc_hits *")
    hits.n = n
    ctype = {"patch": "int32_t[]", "score": "float[]"}
    buffers = {k: ffi.from_buffer(ctype.get(k, "double[]"), v) for k, v in arrays.items()}
    for name, buffer in buffers.items():
        setattr(hits, name, buffer)
    hits.gsd_x, hits.gsd_y = (float(g) for g in gsd_m)
    cparams = ffi.new("rsloc_geo_params *", asdict(params or CliqueParams()))
    res = ffi.new("rsloc_geo_result *")
    err = ffi.new("char[]", _ERR_LEN)

    start = time.perf_counter()
    code = lib.rsloc_geo_cliques(hits, cparams, res, err, _ERR_LEN)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    if code != Status.OK:
        _raise(code, err)
    try:
        kept, groups = res.n_kept, res.n_groups
        return CliqueResult(
            n_nodes=res.n_nodes,
            n_suppressed=res.n_suppressed,
            n_edges=res.n_edges,
            n_maximal=res.n_maximal,
            cliques=_split(res.clique_offsets, res.clique_members, kept),
            clique_size=_copy(res.clique_size, kept, np.int32),
            clique_mean_score=_copy(res.clique_mean_score, kept, np.float64),
            clique_group=_copy(res.clique_group, kept, np.int32),
            group_scores=_copy(res.group_score, groups, np.int32),
            candidate_score=_copy(res.candidate_score, n, np.int32),
            candidate_group=_copy(res.candidate_group, n, np.int32),
            ranking=_copy(res.ranking, n, np.int32),
            truncated=bool(res.truncated),
            elapsed_ms=elapsed_ms,
        )
    finally:
        lib.rsloc_geo_result_free(res)


def maximal_cliques(
    n_nodes: int,
    edges,
    min_size: int = 3,
    max_cliques: int = 1_000_000,
    max_steps: int = 10_000_000,
    min_ratio: float = 0.0,
) -> list[np.ndarray]:
    """Maximal cliques of the graph on `n_nodes` nodes with (m, 2) `edges`, of at least `min_size`
    nodes and `min_ratio` × the largest size; members ascending, cliques in lexicographic order.

    Raises CliqueError with code LIMIT when `max_cliques` or `max_steps` stops the search.
    """
    arr = np.asarray(edges)
    if arr.size == 0:
        arr = np.empty((0, 2), dtype=np.int32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise CliqueInputError(Status.INVALID, f"edges must have shape (m, 2), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CliqueInputError(Status.INVALID, f"edge endpoints must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_nodes):
        raise CliqueInputError(Status.INVALID, f"edge endpoints must lie in [0, {n_nodes})")
    flat = np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)
    cparams = ffi.new(
        "rsloc_clique_params *",
        {
            "min_size": min_size,
            "min_ratio": min_ratio,
            "max_cliques": max_cliques,
            "max_steps": max_steps,
        },
    )
    out = ffi.new("rsloc_clique_set *")
    err = ffi.new("char[]", _ERR_LEN)
    edge_buffer = ffi.from_buffer("int32_t[]", flat)
    code = lib.rsloc_maximal_cliques(n_nodes, len(arr), edge_buffer, cparams, out, err, _ERR_LEN)
    if code != Status.OK:
        _raise(code, err)
    try:
        if out.truncated:
            raise CliqueError(
                Status.LIMIT,
                f"clique search stopped at max_cliques = {max_cliques} or max_steps = "
                f"{max_steps}: more maximal cliques may exist",
            )
        return _split(out.offsets, out.members, out.n_cliques)
    finally:
        lib.rsloc_clique_set_free(out)
