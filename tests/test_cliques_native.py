"""The native clique library: maximal cliques against python-igraph, the geo stage on planted
locations, determinism, limits and invalid input."""

import dataclasses
import itertools
import math
import subprocess
import sys
import textwrap

import igraph
import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets._cliques import ffi, lib
from rsloc_assets.cliques.native import (
    CliqueError,
    CliqueInputError,
    CliqueParams,
    Status,
    find_geo_cliques,
    maximal_cliques,
)
from rsloc_assets.geodesy import distance_m, offset_lonlat
from rsloc_assets.grids import get_grid, ground_size_m

GRID = get_grid("ge")
Z = 15


def native(n: int, edges: np.ndarray, **kw) -> set[frozenset[int]]:
    return {frozenset(c.tolist()) for c in maximal_cliques(n, edges, **kw)}


def oracle(n: int, edges: np.ndarray, min_size: int = 3) -> set[frozenset[int]]:
    graph = igraph.Graph(n=n, edges=[tuple(e) for e in edges.tolist()])
    return {frozenset(c) for c in graph.maximal_cliques(min=min_size)}


def gnp(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    iu, ju = np.triu_indices(n, 1)
    keep = rng.random(iu.size) < p
    return np.stack([iu[keep], ju[keep]], axis=1)


def complete(nodes) -> list[tuple[int, int]]:
    return list(itertools.combinations(nodes, 2))


def dense_cores(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Three overlapping near-complete cores planted in sparse noise."""
    n = 300
    edges = [tuple(e) for e in gnp(rng, n, 0.01)]
    for start in (10, 25, 200):
        core = range(start, start + 20)
        edges += [e for e in complete(core) if rng.random() < 0.9]
    return n, np.array(edges)


def star(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A hub joined to every leaf, leaves paired into triangles through it, plus a few chords."""
    n = 2001
    edges = [(0, v) for v in range(1, n)] + [(v, v + 1) for v in range(1, n - 1, 2)]
    edges += [tuple(sorted(rng.choice(np.arange(1, n), 2, replace=False))) for _ in range(50)]
    return n, np.array(edges)


def equal_cliques(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """200 disjoint K4s, shuffled labels."""
    perm = rng.permutation(800)
    edges = [(perm[a], perm[b]) for k in range(200) for a, b in complete(range(4 * k, 4 * k + 4))]
    return 800, np.array(edges)


def moon_moser(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Complement of 6 disjoint triangles: 3^6 maximal cliques, all of size 6."""
    n = 18
    return n, np.array([e for e in complete(range(n)) if e[0] // 3 != e[1] // 3])


def k12(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    return 12, np.array(complete(range(12)))


def disconnected(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A dense random part, a K12, an isolated stretch and a sparse part, side by side."""
    a = gnp(rng, 40, 0.5)
    b = np.array(complete(range(12))) + 40
    c = gnp(rng, 100, 0.05) + 100
    return 200, np.concatenate([a, b, c])


def triangle_free(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A random bipartite graph: no triangles at all."""
    edges = [(u, v) for u in range(50) for v in range(50, 100) if rng.random() < 0.3]
    return 100, np.array(edges)


ADVERSARIAL = [dense_cores, star, equal_cliques, moon_moser, k12, disconnected, triangle_free]


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_match_igraph(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 120))
    edges = gnp(rng, n, float(rng.uniform(0.02, 0.6)))
    assert native(n, edges) == oracle(n, edges)


@pytest.mark.parametrize("make", ADVERSARIAL, ids=lambda f: f.__name__)
def test_adversarial_graphs_match_igraph(make):
    n, edges = make(np.random.default_rng(0))
    expected = oracle(n, edges)
    assert native(n, edges) == expected
    if make is triangle_free:
        assert expected == set()
    if make is moon_moser:
        assert len(expected) == 3**6


@pytest.mark.parametrize("min_size", [1, 2, 4])
def test_min_size_matches_igraph(min_size):
    n, edges = disconnected(np.random.default_rng(3))
    assert native(n, edges, min_size=min_size) == oracle(n, edges, min_size)


@pytest.mark.parametrize("ratio", [0.5, 0.8, 1.0])
def test_min_ratio_keeps_the_near_largest(ratio):
    rng = np.random.default_rng(5)
    n, edges = 150, gnp(rng, 150, 0.3)
    every = oracle(n, edges)
    omega = max(map(len, every))
    expected = {c for c in every if len(c) >= math.ceil(ratio * omega)}
    assert native(n, edges, min_ratio=ratio) == expected


def test_output_is_canonical_and_ignores_duplicates_and_loops():
    rng = np.random.default_rng(11)
    edges = gnp(rng, 60, 0.3)
    noisy = np.concatenate([edges[:, ::-1], edges[:10], [[4, 4], [9, 9]]])
    cliques = maximal_cliques(60, noisy)
    assert [c.tolist() for c in cliques] == [c.tolist() for c in maximal_cliques(60, edges)]
    assert all(np.all(np.diff(c) > 0) for c in cliques)
    assert [c.tolist() for c in cliques] == sorted(c.tolist() for c in cliques)


def test_clique_limits_raise_instead_of_running_on():
    n = 36  # complement of 12 triangles: 531,441 maximal cliques
    edges = np.array([e for e in complete(range(n)) if e[0] // 3 != e[1] // 3])
    with pytest.raises(CliqueError) as cap:
        maximal_cliques(n, edges, max_cliques=1000)
    assert cap.value.code == Status.LIMIT
    with pytest.raises(CliqueError) as steps:
        maximal_cliques(n, edges, max_steps=5000)
    assert steps.value.code == Status.LIMIT


def test_bad_edges_are_rejected():
    with pytest.raises(ValueError, match="edge endpoints"):
        maximal_cliques(3, np.array([[0, 3]]))
    with pytest.raises(ValueError, match="shape"):
        maximal_cliques(3, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        maximal_cliques(3, np.array([[0.0, 1.7]]))
    assert maximal_cliques(0, np.empty((0, 2), dtype=np.int32)) == []


def planted(seed: int, n_distractors: int = 50, extent_m: float = 100_000.0):
    """30 patches (6 × 5, one tile apart) of a 0.5 m/px query; each patch's hits are its true
    tile and `n_distractors` tiles drawn over an `extent_m` square, all with random scores."""
    rng = np.random.default_rng(seed)
    lon0, lat0 = -2.4 + rng.uniform(-0.2, 0.2), 47.9 + rng.uniform(-0.2, 0.2)
    tile_w, tile_h = ground_size_m(GRID, GRID.tile_at(lon0, lat0, Z))
    gsd = 0.5
    cols, rows = (a.ravel() for a in np.meshgrid(np.arange(6), np.arange(5)))
    px, py = (cols + 0.5) * tile_w / gsd, (rows + 0.5) * tile_h / gsd
    plon, plat = offset_lonlat(lon0, lat0, px * gsd, -py * gsd)

    def snap(lon, lat):
        keys = [GRID.tile_at(float(a), float(b), Z) for a, b in zip(lon, lat, strict=True)]
        return GRID.centres(Z, np.array([k.col for k in keys]), np.array([k.row for k in keys]))

    true_lon, true_lat = snap(plon, plat)
    hits = {"patch": [], "px": [], "py": [], "lon": [], "lat": [], "true": []}
    for p in range(px.size):
        east, north = rng.uniform(-extent_m / 2, extent_m / 2, (2, n_distractors))
        lon, lat = snap(*offset_lonlat(lon0, lat0, east, north))
        slot = int(rng.integers(0, n_distractors + 1))
        hits["lon"].append(np.insert(lon, slot, true_lon[p]))
        hits["lat"].append(np.insert(lat, slot, true_lat[p]))
        hits["true"].append(np.arange(n_distractors + 1) == slot)
        for key, value in (("patch", p), ("px", px[p]), ("py", py[p])):
            hits[key].append(np.full(n_distractors + 1, value))
    arrays = {k: np.concatenate(v) for k, v in hits.items()}
    arrays["score"] = rng.uniform(0.2, 0.9, arrays["patch"].size).astype(np.float32)
    tolerance = 1.5 * math.sqrt(tile_w * tile_h)
    return arrays, (gsd, gsd), CliqueParams(tolerance_m=tolerance)


def run(arrays, gsd, params):
    cols = ("patch", "px", "py", "lon", "lat", "score")
    return find_geo_cliques(*(arrays[c] for c in cols), gsd, params)


@pytest.mark.parametrize("seed", range(6))
def test_planted_location_is_the_best_group(seed):
    arrays, gsd, params = planted(seed)
    result = run(arrays, gsd, params)
    best = np.flatnonzero(result.candidate_group == 0)
    assert result.group_scores[0] >= 0.8 * 30
    assert np.unique(arrays["patch"][best]).size == best.size
    # Every member is its patch's true tile, or the hit that suppressed it as a duplicate: a
    # higher-scoring hit of the same patch within the suppression radius (one tile here).
    true = np.flatnonzero(arrays["true"])
    for hit in best[~arrays["true"][best]]:
        t = true[arrays["patch"][true] == arrays["patch"][hit]][0]
        gap = distance_m(arrays["lon"][hit], arrays["lat"][hit], arrays["lon"][t], arrays["lat"][t])
        assert gap <= params.suppress_ratio * params.tolerance_m
        assert arrays["score"][hit] >= arrays["score"][t]
    assert arrays["true"][best].mean() >= 0.8
    assert result.candidate_score[best].min() == result.group_scores[0]
    assert set(result.ranking[: best.size].tolist()) == set(best.tolist())
    assert np.all(np.diff(result.group_scores) <= 0)
    assert result.clique_size[0] == max(map(len, result.cliques))
    assert not result.truncated


def test_geo_stage_is_deterministic_and_takes_arrow_input():
    arrays, gsd, params = planted(7)
    first, second = run(arrays, gsd, params), run(arrays, gsd, params)
    arrow = run({k: pa.array(v) for k, v in arrays.items()}, gsd, params)
    for other in (second, arrow):
        assert [c.tolist() for c in first.cliques] == [c.tolist() for c in other.cliques]
        for field in ("candidate_score", "candidate_group", "ranking", "group_scores"):
            np.testing.assert_array_equal(getattr(first, field), getattr(other, field))
        assert (first.n_edges, first.n_maximal) == (other.n_edges, other.n_maximal)


def test_edge_rule_needs_matching_distances():
    # Three patches 1 km apart in the query; candidates 1 km apart on the ground form a clique.
    lon, lat = offset_lonlat(2.0, 48.0, np.array([0.0, 1000.0, 0.0]), np.array([0.0, 0.0, 1000.0]))
    hits = [np.arange(3), [0, 1000, 0], [0, 0, 1000], lon, lat, np.full(3, 0.5)]
    params = CliqueParams(tolerance_m=100.0)
    result = find_geo_cliques(*hits, (1.0, 1.0), params)
    assert [c.tolist() for c in result.cliques] == [[0, 1, 2]]
    assert result.group_scores.tolist() == [3]
    far_lon, far_lat = offset_lonlat(2.0, 48.0, 0.0, 1250.0)
    hits[3], hits[4] = np.append(lon[:2], far_lon), np.append(lat[:2], far_lat)
    assert find_geo_cliques(*hits, (1.0, 1.0), params).cliques == []
    too_close = CliqueParams(tolerance_m=100.0, min_distance_m=1100.0)
    only_diagonal = find_geo_cliques(*[*hits[:3], lon, lat, hits[5]], (1.0, 1.0), too_close)
    assert (only_diagonal.n_edges, only_diagonal.cliques) == (1, [])


def test_duplicates_within_a_patch_are_suppressed():
    lon, lat = offset_lonlat(2.0, 48.0, np.array([0, 1000, 0, 100]), np.array([0, 0, 1000, 0]))
    hits = [[0, 1, 2, 0], [0, 1000, 0, 0], [0, 0, 1000, 0], lon, lat, [0.5, 0.5, 0.5, 0.9]]
    result = find_geo_cliques(*hits, (1.0, 1.0), CliqueParams(tolerance_m=200.0))
    assert result.n_suppressed == 1
    assert [c.tolist() for c in result.cliques] == [[1, 2, 3]]
    assert result.candidate_group.tolist() == [-1, 0, 0, 0]


def test_params_mirror_the_c_defaults():
    c = ffi.new("rsloc_geo_params *")
    lib.rsloc_geo_params_default(c)
    python = CliqueParams()
    for name in CliqueParams.__dataclass_fields__:
        assert getattr(python, name) == getattr(c, name), name


def test_invalid_input_raises_one_line_value_errors():
    arrays, gsd, params = planted(1)
    arrays["lon"] = arrays["lon"].copy()
    arrays["lon"][17] = np.nan
    with pytest.raises(ValueError, match="hit 17") as nan:
        run(arrays, gsd, params)
    assert isinstance(nan.value, CliqueInputError) and nan.value.code == Status.INVALID
    assert "\n" not in str(nan.value)
    ok, _, _ = planted(1)
    with pytest.raises(ValueError, match="ground resolution"):
        run(ok, (0.0, 0.5), params)
    with pytest.raises(ValueError, match="differ in length"):
        find_geo_cliques([0, 1], [0, 0], [0, 0], [0, 0], [0, 0], [0.5], (1.0, 1.0))
    with pytest.raises(ValueError, match="patch ids"):
        find_geo_cliques([-1], [0], [0], [0], [0], [0.5], (1.0, 1.0))
    with pytest.raises(ValueError, match="keep_ratio"):
        run(ok, gsd, CliqueParams(keep_ratio=1.5))


def test_empty_and_single_patch_inputs_give_empty_results():
    empty = find_geo_cliques([], [], [], [], [], [], (0.5, 0.5))
    assert (empty.n_nodes, empty.n_edges, empty.cliques, empty.ranking.size) == (0, 0, [], 0)
    one = find_geo_cliques(
        [4, 4, 4], [10, 10, 10], [5, 5, 5], [2.0, 2.1, 2.2], [48, 48, 48], [0.1, 0.9, 0.5], (1, 1)
    )
    assert (one.n_edges, one.n_maximal, one.cliques) == (0, 0, [])
    assert one.ranking.tolist() == [1, 2, 0]
    assert one.candidate_score.tolist() == [0, 0, 0]


def test_clique_cap_truncates_the_geo_stage():
    arrays, gsd, params = planted(2)
    every = CliqueParams(tolerance_m=params.tolerance_m, keep_ratio=0.0)
    assert run(arrays, gsd, every).n_maximal > 1
    result = run(arrays, gsd, dataclasses.replace(every, max_cliques=1))
    assert result.truncated
    assert len(result.cliques) == 1


def test_too_many_hits_is_a_limit_error():
    with pytest.raises(CliqueError) as err:
        find_geo_cliques(
            [0, 1, 2],
            [0] * 3,
            [0] * 3,
            [0] * 3,
            [0] * 3,
            [0.5] * 3,
            (1, 1),
            CliqueParams(max_nodes=2),
        )
    assert err.value.code == Status.LIMIT


def test_a_million_hits_at_one_spot_return_quickly():
    code = textwrap.dedent(
        """
        import numpy as np
        from rsloc_assets.cliques.native import CliqueError, Status, find_geo_cliques
        n = 1_000_000
        i = np.arange(n)
        try:
            find_geo_cliques(i % 100, i % 10 * 1000.0, i % 100 // 10 * 1000.0,
                             np.full(n, 2.0), np.full(n, 48.0), np.full(n, 0.5), (1.0, 1.0))
        except CliqueError as err:
            assert err.code == Status.LIMIT, err
            print("limit:", err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("limit: ") and "max_pair_checks" in done.stdout
