"""Location hypotheses: a rigid fit of patch offsets to candidate tiles, refined on every
candidate that agrees, ranks the true place (at any heading) above mirrored and weaker ones."""

import math

import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.cliques import hypotheses
from rsloc_assets.cliques.hypotheses import HypothesisParams, Seed, rank_hypotheses, rigid_fit
from rsloc_assets.geodesy import distance_m, offset_lonlat
from rsloc_assets.grids import get_grid, ground_size_m
from rsloc_assets.records import HYPOTHESIS_SCHEMA, Method

GRID = get_grid("ge")
Z = 15
TRUE_LON, TRUE_LAT = 2.3512, 47.9123


def test_rigid_fit_recovers_rotation_and_shift_but_not_a_mirror():
    rng = np.random.default_rng(0)
    src = rng.uniform(-5000, 5000, size=(12, 2))
    theta = math.radians(35.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    dst = src @ rot.T + np.array([120.0, -80.0])
    got, shift = rigid_fit(src, dst)
    assert math.degrees(got) == pytest.approx(35.0, abs=1e-9)
    assert shift == pytest.approx([120.0, -80.0], abs=1e-6)
    mirrored = dst * np.array([-1.0, 1.0])
    got, shift = rigid_fit(src, mirrored)
    residual = np.linalg.norm(src @ _rot(got).T + shift - mirrored, axis=1)
    assert np.median(residual) > 1000.0  # no rotation explains a reflection


def _rot(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _tile_centre(lon: float, lat: float) -> tuple[float, float]:
    t = GRID.tile_at(lon, lat, Z)
    c_lon, c_lat = GRID.centres(Z, np.array([t.col]), np.array([t.row]))
    return float(c_lon[0]), float(c_lat[0])


def _scene(rotation_deg: float, hit_rate: float, seed: int = 0):
    """A 4×5 grid of patches turned by `rotation_deg` at the true place; each patch finds its
    true tile with `hit_rate` among 20 random candidates. Returns nodes, patches, the true hits,
    and hits for the same offsets mirrored east–west 30 km away (a distance-consistent fake)."""
    rng = np.random.default_rng(seed)
    tile_m = ground_size_m(GRID, GRID.tile_at(TRUE_LON, TRUE_LAT, Z))
    ee, nn = (
        a.ravel() for a in np.meshgrid((np.arange(4) - 1.5) * 1200, (np.arange(5) - 2) * 1200)
    )
    patches = pa.table({"east_m": ee, "north_m": nn})
    turned = np.stack([ee, nn], axis=1) @ _rot(math.radians(rotation_deg)).T
    rows, true_hits, fake_hits = [], [], []
    fake_lon, fake_lat = offset_lonlat(TRUE_LON, TRUE_LAT, 30_000.0, 0.0)
    for p, ((e, n), (te, tn)) in enumerate(zip(zip(ee, nn, strict=True), turned, strict=True)):
        spots = []
        for _ in range(20):
            lon, lat = offset_lonlat(TRUE_LON, TRUE_LAT, *rng.uniform(-60_000, 60_000, 2))
            spots.append(_tile_centre(float(lon), float(lat)))
        if rng.random() < hit_rate:
            at = int(rng.integers(0, 5))
            lon, lat = offset_lonlat(TRUE_LON, TRUE_LAT, te, tn)
            spots[at] = _tile_centre(float(lon), float(lat))
            true_hits.append(p * 20 + at)
        if p < 8:  # the fake: the same offsets mirrored, found by 8 patches
            spots[19] = _tile_centre(*map(float, offset_lonlat(fake_lon, fake_lat, -e, n)))
            fake_hits.append(p * 20 + 19)
        for rank, (lon, lat) in enumerate(spots):
            rows.append(
                {
                    "patch": p,
                    "rank": rank,
                    "key": GRID.tile_at(lon, lat, Z).key,
                    "lon": lon,
                    "lat": lat,
                    "score": 0.9 - 0.01 * rank,
                    "heading_deg": 0.0,
                }
            )
    nodes = pa.Table.from_pylist(rows)
    return nodes, patches, np.array(true_hits), np.array(fake_hits), math.sqrt(math.prod(tile_m))


@pytest.mark.parametrize("rotation_deg", [0.0, 25.0, -140.0])
def test_the_true_place_ranks_first_at_any_heading(rotation_deg):
    nodes, patches, true_hits, fake_hits, tile_m = _scene(rotation_deg, hit_rate=0.8)
    seeds = [Seed(fake_hits, Method.CLIQUE), Seed(true_hits[:4], Method.CLIQUE)]
    ranked, table = rank_hypotheses(nodes, patches, seeds, tile_m, GRID, Z)
    best = ranked[0]
    assert best.rank == 0 and best.source == Method.CLIQUE
    assert float(distance_m(best.centre_lon, best.centre_lat, TRUE_LON, TRUE_LAT)) < tile_m
    # Refined on every candidate, the support grows from the 4 seed hits to every true hit.
    assert best.support >= len(true_hits) - 1
    delta = (best.rotation_deg - rotation_deg + 180.0) % 360.0 - 180.0
    assert abs(delta) < 5.0
    assert all(h.evidence < best.evidence for h in ranked[1:])
    assert table.schema == HYPOTHESIS_SCHEMA
    first = table.filter(pa.compute.equal(table["hypothesis"], 0)).to_pylist()
    assert [r["patch"] for r in first] == list(range(patches.num_rows))
    supported = [r for r in first if r["hit_key"] is not None]
    assert len(supported) == best.support
    # The predicted tile is the supporting hit's tile, or its neighbour, for every supported patch.
    near = [
        abs(int(r["key"].split("/")[1]) - int(r["hit_key"].split("/")[1])) <= 1
        and abs(int(r["key"].split("/")[2]) - int(r["hit_key"].split("/")[2])) <= 1
        for r in supported
    ]
    assert all(near)


def test_seeds_at_one_place_merge_and_the_list_is_capped():
    nodes, patches, true_hits, _, tile_m = _scene(10.0, hit_rate=0.9, seed=1)
    seeds = [Seed(true_hits[:4], Method.CLIQUE), Seed(true_hits[4:9], Method.RETRIEVAL_VOTE)]
    seeds += [Seed(np.array([i, i + 21, i + 42]), Method.CLIQUE) for i in range(0, 200, 7)]
    ranked, _ = rank_hypotheses(
        nodes, patches, seeds, tile_m, GRID, Z, HypothesisParams(max_hypotheses=3)
    )
    assert len(ranked) <= 3 and [h.rank for h in ranked] == list(range(len(ranked)))
    near_truth = [
        h for h in ranked if distance_m(h.centre_lon, h.centre_lat, TRUE_LON, TRUE_LAT) < tile_m
    ]
    assert len(near_truth) == 1 and near_truth[0].rank == 0


def test_seeds_scored_on_their_neighbourhood_rank_as_on_every_node(monkeypatch):
    """Candidates lie up to 60 km away, the image spans ~5 km: each seed is fitted on the nodes
    near it, and gives the hypotheses (and patch rows) a fit on every node gives."""
    nodes, patches, true_hits, fake_hits, tile_m = _scene(25.0, hit_rate=0.8, seed=2)
    rng = np.random.default_rng(5)
    seeds = [Seed(true_hits[:4], Method.CLIQUE), Seed(fake_hits, Method.CLIQUE)]
    seeds += [Seed(rng.choice(nodes.num_rows, 3, replace=False), Method.CLIQUE) for _ in range(60)]
    params = HypothesisParams(max_hypotheses=10)
    near, near_table = rank_hypotheses(nodes, patches, seeds, tile_m, GRID, Z, params)
    monkeypatch.setattr(hypotheses, "REACH", math.inf)
    every, every_table = rank_hypotheses(nodes, patches, seeds, tile_m, GRID, Z, params)
    assert len(near) > 3 and near == every and near_table.equals(every_table)


def test_no_seeds_no_hypotheses():
    nodes, patches, _, _, tile_m = _scene(0.0, hit_rate=0.5)
    ranked, table = rank_hypotheses(
        nodes, patches, [Seed(np.zeros(0, np.int64), Method.CLIQUE)], tile_m, GRID, Z
    )
    assert ranked == [] and table.num_rows == 0 and table.schema == HYPOTHESIS_SCHEMA


def test_a_lone_hit_takes_its_heading_as_the_rotation():
    """A one-patch query forms no clique: each of its hits is a hypothesis, turned by the heading
    it was retrieved at, since one offset fixes no rotation."""
    spots = [(TRUE_LON, TRUE_LAT), offset_lonlat(TRUE_LON, TRUE_LAT, 20_000.0, 0.0)]
    rows = []
    for rank, (lon, lat) in enumerate(spots):
        lon, lat = _tile_centre(float(lon), float(lat))
        key = GRID.tile_at(lon, lat, Z).key
        rows.append(
            {"patch": 0, "rank": rank, "key": key, "lon": lon, "lat": lat, "score": 0.9 - rank / 10}
            | {"heading_deg": 90.0 * (rank + 1)}
        )
    patches = pa.table({"east_m": [0.0], "north_m": [0.0]})
    seeds = [Seed(np.array([0]), Method.RETRIEVAL_VOTE), Seed(np.array([1]), Method.RETRIEVAL_VOTE)]
    ranked, _ = rank_hypotheses(pa.Table.from_pylist(rows), patches, seeds, 800.0, GRID, Z)
    assert [round(h.rotation_deg) for h in ranked] == [90, 180]
    assert ranked[0].centre_lon == pytest.approx(rows[0]["lon"])
