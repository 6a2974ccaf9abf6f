"""Tile grids against hand-computed values: RSLoc's geographic grid and Web-Mercator XYZ."""

import numpy as np
import pytest

from rsloc_assets.grids import (
    MERCATOR_HALF,
    TileKey,
    get_grid,
    ground_size_m,
    lonlat_to_mercator,
    mercator_to_lonlat,
    tms_row,
)

GE = get_grid("ge")
XYZ = get_grid("xyz")
WORKED = TileKey(15, 16158, 12025)  # shared/README.md: top-left at lon −2.48291°, lat 47.88940°


def test_ge_worked_example_top_left_corner():
    b = GE.bounds(WORKED)
    assert b.west == pytest.approx(-2.48291, abs=5e-6)
    assert b.north == pytest.approx(47.88940, abs=5e-6)
    d = 360 / 2**15
    assert b.east - b.west == pytest.approx(d)
    assert b.north - b.south == pytest.approx(d)


@pytest.mark.parametrize("grid", [GE, XYZ], ids=["ge", "xyz"])
def test_tile_at_round_trips_through_centres_and_corners(grid):
    for tile in [WORKED, TileKey(15, 16400, 11000), TileKey(9, 3, 200), TileKey(17, 70000, 40000)]:
        b = grid.bounds(tile)
        assert grid.tile_at(*b.centre, tile.z) == tile
        eps = (b.east - b.west) * 1e-6
        assert grid.tile_at(b.west + eps, b.north - eps, tile.z) == tile
        assert grid.tile_at(b.east + eps, b.north - eps, tile.z) == TileKey(
            tile.z, tile.col + 1, tile.row
        )


def test_ge_tile_ground_size_matches_hand_computation():
    width, height = ground_size_m(GE, WORKED)
    assert width == pytest.approx(822, rel=0.01)
    assert height == pytest.approx(1222, rel=0.01)


def test_ge_tiles_are_not_square_on_the_ground():
    width, height = ground_size_m(GE, WORKED)
    assert height / width == pytest.approx(1.487, rel=0.01)  # ≈ 1 / cos(47.88°) on the ellipsoid


def test_xyz_z0_is_the_whole_mercator_world():
    b = XYZ.bounds(TileKey(0, 0, 0))
    assert (b.west, b.east) == pytest.approx((-180.0, 180.0))
    assert (b.south, b.north) == pytest.approx((-85.0511288, 85.0511288), abs=1e-7)
    nb = XYZ.native_bounds(TileKey(0, 0, 0))
    assert (nb.west, nb.south, nb.east, nb.north) == pytest.approx(
        (-MERCATOR_HALF, -MERCATOR_HALF, MERCATOR_HALF, MERCATOR_HALF)
    )


def test_xyz_z1_tile_1_0_is_the_north_east_quadrant():
    b = XYZ.bounds(TileKey(1, 1, 0))
    assert (b.west, b.south, b.east) == pytest.approx((0.0, 0.0, 180.0), abs=1e-9)
    assert b.north == pytest.approx(85.0511288, abs=1e-7)
    assert XYZ.tile_at(10.0, 45.0, 1) == TileKey(1, 1, 0)
    assert XYZ.tile_at(-10.0, -45.0, 1) == TileKey(1, 0, 1)


def test_tms_row_flip():
    assert tms_row(0, 3) == 7
    assert tms_row(7, 3) == 0
    for z in (0, 1, 5, 15):
        rows = range(0, 1 << z, max(1, (1 << z) // 7))
        assert [tms_row(tms_row(r, z), z) for r in rows] == list(rows)


@pytest.mark.parametrize("grid", [GE, XYZ], ids=["ge", "xyz"])
def test_vectorised_centres_agree_with_bounds(grid):
    cols = np.array([16158, 16159, 16400, 0])
    rows = np.array([12025, 11000, 11001, 9000])
    lon, lat = grid.centres(15, cols, rows)
    for c, r, x, y in zip(cols, rows, lon, lat, strict=True):
        tile = TileKey(15, int(c), int(r))
        native = grid.native_bounds(tile).centre
        exact = native if grid is GE else tuple(float(v) for v in mercator_to_lonlat(*native))
        assert (x, y) == pytest.approx(exact, abs=1e-9)
        # lon/lat box midpoints differ from the Mercator centre by < 1e-6° at z15
        assert (x, y) == pytest.approx(grid.bounds(tile).centre, abs=1e-6)


def test_web_mercator_round_trip_and_known_value():
    lon = np.array([-179.0, -2.48291, 0.0, 3.5, 120.0])
    lat = np.array([-80.0, 47.8894, 0.0, 46.2, 85.0])
    x, y = lonlat_to_mercator(lon, lat)
    back_lon, back_lat = mercator_to_lonlat(x, y)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    x180, _ = lonlat_to_mercator(180.0, 0.0)
    assert float(x180) == pytest.approx(MERCATOR_HALF)
    _, y45 = lonlat_to_mercator(0.0, 45.0)
    assert float(y45) == pytest.approx(5621521.486, abs=0.01)  # R·ln(tan(67.5°))


def test_unknown_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tile grid"):
        get_grid("utm")
