"""Retrieval voting: patches' candidates shifted by their offsets agree on the true centre."""

import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.cliques.vote import footprint, implied_centres, vote
from rsloc_assets.geodesy import distance_m, offset_lonlat
from rsloc_assets.grids import TileKey, get_grid, ground_size_m
from rsloc_assets.records import Method

GRID = get_grid("ge")
Z = 15


def synthetic_hits(
    seed: int, true_lon: float, true_lat: float, hit_rate: float, rotation_deg: float = 0.0
):
    """Patches on a 4×5 grid around the true centre of an image turned `rotation_deg`; each finds
    its true tile at that heading with `hit_rate`, among random tiles at random quarter turns."""
    rng = np.random.default_rng(seed)
    tile_m = ground_size_m(GRID, GRID.tile_at(true_lon, true_lat, Z))
    east = (np.arange(4) - 1.5) * tile_m[0]
    north = (np.arange(5) - 2.0) * tile_m[1]
    ee, nn = (a.ravel() for a in np.meshgrid(east, north))
    patches = pa.table({"east_m": ee, "north_m": nn})
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    rows = []
    for p, (e, n) in enumerate(zip(ee, nn, strict=True)):
        plon, plat = offset_lonlat(true_lon, true_lat, c * e - s * n, s * e + c * n)
        true_tile = GRID.tile_at(float(plon), float(plat), Z)
        tiles = [
            TileKey(
                Z,
                true_tile.col + int(rng.integers(-40, 40)),
                true_tile.row + int(rng.integers(-40, 40)),
            )
            for _ in range(30)
        ]
        headings = rng.integers(0, 4, len(tiles)) * 90.0
        if rng.random() < hit_rate:
            at = int(rng.integers(0, 5))
            tiles[at], headings[at] = true_tile, rotation_deg
        for rank, (t, heading) in enumerate(zip(tiles, headings, strict=True)):
            lon, lat = GRID.centres(Z, np.array([t.col]), np.array([t.row]))
            rows.append(
                {
                    "patch": p,
                    "rank": rank,
                    "lon": lon[0],
                    "lat": lat[0],
                    "score": 0.9 - rank * 0.01,
                    "heading_deg": heading,
                }
            )
    return pa.Table.from_pylist(rows), patches, tile_m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vote_finds_the_true_centre_within_a_tile(seed):
    true_lon, true_lat = 2.3512, 47.9123
    cands, patches, tile_m = synthetic_hits(seed, true_lon, true_lat, hit_rate=0.6)
    loc = vote("q", cands, patches, tile_m, (5000.0, 7000.0), vote_top=10)
    assert loc.method == Method.RETRIEVAL_VOTE
    error = float(distance_m(loc.centre_lon, loc.centre_lat, true_lon, true_lat))
    assert error < max(tile_m)
    assert 0.3 < loc.confidence <= 1.0
    assert loc.support >= 6
    assert len(loc.corners_lonlat) == 4


@pytest.mark.parametrize("rotation_deg", [90.0, 180.0])
def test_a_turned_query_votes_for_its_centre_and_heading(rotation_deg):
    true_lon, true_lat = 2.3512, 47.9123
    cands, patches, tile_m = synthetic_hits(5, true_lon, true_lat, 0.6, rotation_deg)
    loc = vote("q", cands, patches, tile_m, (5000.0, 7000.0), vote_top=10)
    assert float(distance_m(loc.centre_lon, loc.centre_lat, true_lon, true_lat)) < max(tile_m)
    truth = np.array(footprint(true_lon, true_lat, (5000.0, 7000.0), rotation_deg))
    corners = np.array(loc.corners_lonlat)
    assert distance_m(corners[:, 0], corners[:, 1], truth[:, 0], truth[:, 1]).max() < max(tile_m)


@pytest.mark.parametrize(
    ("rotation_deg", "offset", "on_ground"),
    [
        (90.0, (1000.0, 0.0), (0.0, 1000.0)),  # turned a quarter left, the image's x runs north
        (180.0, (1000.0, 500.0), (-1000.0, -500.0)),
    ],
)
def test_implied_centres_turn_the_patch_offset_by_its_heading(rotation_deg, offset, on_ground):
    """A patch `offset` metres along the image's (x, up) axes lies `on_ground` metres east/north
    of the centre of an image turned `rotation_deg`; its true tile at that heading implies the
    true centre, the same tile at 0° a wrong one."""
    true_lon, true_lat = 2.3512, 47.9123
    lon, lat = offset_lonlat(true_lon, true_lat, *on_ground)
    patches = pa.table({"east_m": [offset[0]], "north_m": [offset[1]]})
    cands = pa.table(
        {
            "patch": [0, 0],
            "lon": [float(lon)] * 2,
            "lat": [float(lat)] * 2,
            "score": [0.9, 0.9],
            "heading_deg": pa.array([rotation_deg, 0.0], pa.float32()),
        }
    )
    _, c_lon, c_lat, _ = implied_centres(cands, patches)
    error = distance_m(c_lon, c_lat, true_lon, true_lat)
    assert error[0] < 1.0 and error[1] > 1000.0  # offset_lonlat is a local approximation


def test_vote_fails_honestly_when_no_patch_finds_its_tile():
    cands, patches, tile_m = synthetic_hits(3, 2.35, 47.9, hit_rate=0.0)
    loc = vote("q", cands, patches, tile_m, (5000.0, 7000.0))
    assert loc.confidence <= 0.25


def test_no_candidates_is_not_localized():
    cands, patches, tile_m = synthetic_hits(4, 2.35, 47.9, hit_rate=1.0)
    loc = vote("q", cands.slice(0, 0), patches, tile_m, (5000.0, 7000.0))
    assert loc.method == Method.NOT_LOCALIZED and loc.centre_lon is None


def test_footprint_turns_with_the_rotation():
    north_up = np.array(footprint(2.35, 47.9, (4000.0, 2000.0)))
    turned = np.array(footprint(2.35, 47.9, (4000.0, 2000.0), rotation_deg=90.0))
    width = float(distance_m(*north_up[0], *north_up[1]))
    turned_width = float(distance_m(*turned[0], *turned[1]))
    assert width == pytest.approx(4000.0, rel=1e-3) and turned_width == pytest.approx(
        4000.0, rel=1e-3
    )
    # Turned a quarter counter-clockwise, the top edge runs south to north.
    assert turned[1][1] > turned[0][1] + 0.03 and abs(turned[1][0] - turned[0][0]) < 1e-6
