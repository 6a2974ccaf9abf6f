"""Real GDAL gallery builds from synthetic UTM GeoTIFFs, checked against independent warps."""

import sqlite3

import numpy as np
import pytest
from osgeo import gdal, osr

from rsloc_assets.cli import main
from rsloc_assets.gallery.builder import TileBox, build_gallery, extract_tiles
from rsloc_assets.gallery.reader import Gallery, TileRef, decode_tile
from rsloc_assets.grids import TILE_PX, get_grid, ground_size_m, lonlat_to_mercator

gdal.UseExceptions()

PIXEL_M = 4.0
SIZE_PX = 750  # 3 km a side
X0, Y0 = 498_500.0, 5_304_000.0  # UTM 31N, near lon 2.98°, lat 47.87°
Z = 15
MARKER_FRACTION = (0.3, 0.6)  # marker at 30 % across and 60 % down its ge tile


def utm_to_lonlat() -> osr.CoordinateTransformation:
    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    wgs84.ImportFromEPSG(4326)
    for srs in (utm, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(utm, wgs84)


def marker_lonlat() -> tuple[float, float]:
    """A point placed at a hand-chosen spot of the ge tile under the raster's centre."""
    lon, lat, _ = utm_to_lonlat().TransformPoint(
        X0 + SIZE_PX * PIXEL_M / 2, Y0 - SIZE_PX * PIXEL_M / 2
    )
    b = get_grid("ge").bounds(get_grid("ge").tile_at(lon, lat, Z))
    fx, fy = MARKER_FRACTION
    return b.west + fx * (b.east - b.west), b.north - fy * (b.north - b.south)


def write_geotiff(path, bands: int = 3, georeferenced: bool = True, nodata_west: int = 0) -> None:
    """Smooth stripes/checks/gradient (≤ 180) with a white 5×5 px marker at `marker_lonlat()`."""
    yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    rgb = np.stack(
        [
            100 + 60 * np.sin(xx / 9.0),
            np.where((xx // 64 + yy // 64) % 2 == 0, 60, 150),
            30 + yy * 150 // SIZE_PX,
        ]
    ).astype(np.uint8)
    if georeferenced:
        inverse = utm_to_lonlat().GetInverse()
        mx, my, _ = inverse.TransformPoint(*marker_lonlat())
        col, row = round((mx - X0) / PIXEL_M - 0.5), round((Y0 - my) / PIXEL_M - 0.5)
        rgb[:, row - 2 : row + 3, col - 2 : col + 3] = 255
    data = np.concatenate([rgb, np.full((bands - 3, SIZE_PX, SIZE_PX), 240, np.uint8)])
    if nodata_west:
        data[:, :, :nodata_west] = 0
    ds = gdal.GetDriverByName("GTiff").Create(str(path), SIZE_PX, SIZE_PX, bands, gdal.GDT_Byte)
    if georeferenced:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(32631)
        ds.SetSpatialRef(srs)
        ds.SetGeoTransform((X0, PIXEL_M, 0.0, Y0, 0.0, -PIXEL_M))
    for i in range(bands):
        ds.GetRasterBand(i + 1).WriteArray(data[i])
        if nodata_west:
            ds.GetRasterBand(i + 1).SetNoDataValue(0)
    ds.FlushCache()
    del ds


@pytest.fixture(scope="module")
def tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "utm.tif"
    write_geotiff(path)
    return path


def tile_pixel(grid_name: str, lon: float, lat: float) -> tuple[TileRef, float, float]:
    """The tile under lon/lat and the point's (x, y) position in it, in 256-px tile pixels."""
    grid = get_grid(grid_name)
    tile = grid.tile_at(lon, lat, Z)
    nb = grid.native_bounds(tile)
    x, y = (lon, lat) if grid_name == "ge" else (float(v) for v in lonlat_to_mercator(lon, lat))
    px = (x - nb.west) / (nb.east - nb.west) * TILE_PX
    py = (nb.north - y) / (nb.north - nb.south) * TILE_PX
    return TileRef(Z, tile.col, tile.row, "0" if grid_name == "ge" else ""), px, py


def bright_centroid(rgb: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(rgb.min(axis=2) > 215)
    assert 4 <= len(xs) < 200, "marker not found (or not isolated) in the tile"
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def independent_warp(src, grid_name: str, ref: TileRef) -> np.ndarray:
    grid = get_grid(grid_name)
    nb = grid.native_bounds(ref.tile)
    ds = gdal.Warp(
        "",
        str(src),
        format="MEM",
        dstSRS=grid.crs,
        outputBounds=(nb.west, nb.south, nb.east, nb.north),
        width=TILE_PX,
        height=TILE_PX,
        resampleAlg="bilinear",
    )
    return ds.ReadAsArray().transpose(1, 2, 0)


@pytest.mark.parametrize("grid_name", ["ge", "xyz"])
def test_build_places_pixels_where_the_grid_says(tif, tmp_path, grid_name):
    out = tmp_path / ("g.sqlite" if grid_name == "ge" else "g.mbtiles")
    report = build_gallery([tif], out, grid=grid_name, zoom=Z)
    grid = get_grid(grid_name)
    lon, lat = marker_lonlat()
    width_m, height_m = ground_size_m(grid, grid.tile_at(lon, lat, Z))
    expected = (SIZE_PX * PIXEL_M) ** 2 / (width_m * height_m)  # ≈ 9 ge or 13 xyz tiles
    assert 0.6 * expected <= report.written <= 1.5 * expected
    assert report.skipped_sparse > 0  # the raster's edges cut through tiles
    with Gallery.open(out) as g:
        assert g.grid.name == grid_name and g.levels() == [Z]
        refs = g.tiles(Z)
        assert len(refs) == report.written
        assert all(decode_tile(g.blob(r)).shape == (TILE_PX, TILE_PX, 3) for r in refs)
        ref, px, py = tile_pixel(grid_name, lon, lat)
        assert ref in refs
        tile = decode_tile(g.blob(ref))
    if grid_name == "ge":
        assert (px, py) == pytest.approx((0.3 * TILE_PX, 0.6 * TILE_PX))
    found = bright_centroid(tile)
    assert found == pytest.approx((px, py), abs=2.0)
    reference = independent_warp(tif, grid_name, ref)
    assert np.abs(tile.astype(int) - reference).mean() < 4.0


def test_rebuild_is_idempotent_and_a_new_time_appends(tif, tmp_path):
    out = tmp_path / "g.sqlite"
    first = build_gallery([tif], out, grid="ge", zoom=Z)
    again = build_gallery([tif], out, grid="ge", zoom=Z)
    assert again.written == first.written
    with Gallery.open(out) as g:
        assert g.count(Z) == first.written
    build_gallery([tif], out, grid="ge", zoom=Z, time="2")
    with Gallery.open(out) as g:
        assert g.count(Z) == 2 * first.written
        assert g.times(Z) == ["0", "2"]
        assert {r.time for r in g.tiles(Z)} == {"2"}


def test_mbtiles_metadata_and_tms_rows(tif, tmp_path):
    out = tmp_path / "g.mbtiles"
    report = build_gallery([tif], out, grid="xyz", zoom=Z)
    build_gallery([tif], out, grid="xyz", zoom=Z)
    with sqlite3.connect(out) as conn:
        meta = dict(conn.execute("SELECT name, value FROM metadata"))
        stored_rows = {r for (r,) in conn.execute("SELECT tile_row FROM tiles")}
        assert conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == report.written
    conn.close()
    assert (meta["name"], meta["format"], meta["minzoom"], meta["maxzoom"]) == (
        "g",
        "jpg",
        "15",
        "15",
    )
    west, south, east, north = (float(v) for v in meta["bounds"].split(","))
    lon, lat = marker_lonlat()
    assert west < lon < east and south < lat < north
    xyz_row = get_grid("xyz").tile_at(lon, lat, Z).row
    assert (1 << Z) - 1 - xyz_row in stored_rows  # TMS rows count up from the south


def test_nodata_and_extra_bands(tif, tmp_path):
    src = tmp_path / "naip_like.tif"
    write_geotiff(src, bands=4, nodata_west=SIZE_PX // 2)  # R, G, B, NIR=240; west half nodata
    out = tmp_path / "g.sqlite"
    report = build_gallery([src], out, grid="ge", zoom=Z, min_coverage=0.0)
    ge = get_grid("ge")
    edge_lon = utm_to_lonlat().TransformPoint(X0 + SIZE_PX * PIXEL_M / 2, Y0)[0]  # 3°E
    with Gallery.open(out) as g:
        tiles = {r: decode_tile(g.blob(r)) for r in g.tiles(Z)}
    assert len(tiles) == report.written
    compared = 0
    for ref, rgb in tiles.items():
        b = ge.bounds(ref.tile)
        assert b.east > edge_lon, f"{ref.key} lies wholly in the nodata half but was written"
        edge_px = int((edge_lon - b.west) / (b.east - b.west) * TILE_PX)
        if edge_px > 6:
            assert rgb[:, : edge_px - 3].max() < 20  # nodata is black, not data
        reference = independent_warp(tif, "ge", ref)  # the 3-band source: no NIR band mixed in
        valid = reference.max(axis=2) > 0
        valid[:, : max(edge_px + 3, 0)] = False
        if valid.any():
            assert np.abs(rgb[valid].astype(int) - reference[valid]).mean() < 4.0
            compared += int(valid.sum())
    assert compared > 50_000


@pytest.mark.parametrize("grid_name", ["ge", "xyz"])
def test_grey_single_band_in_the_western_hemisphere(tmp_path, grid_name):
    """A 1-band UTM 14N raster in North Dakota (negative longitudes, like the NAIP data)."""
    x0, y0 = 485_900.0, 5_209_250.0
    src = tmp_path / "grey.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 300, 300, 1, gdal.GDT_Byte)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(26914)
    ds.SetSpatialRef(srs)
    ds.SetGeoTransform((x0, 10.0, 0.0, y0, 0.0, -10.0))
    ds.GetRasterBand(1).WriteArray(np.full((300, 300), 120, np.uint8))
    ds.FlushCache()
    del ds
    out = tmp_path / "g.sqlite"
    assert build_gallery([src], out, grid=grid_name, zoom=Z).written > 0
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(srs, wgs84).TransformPoint(x0 + 1.5e3, y0 - 1.5e3)
    assert lon == pytest.approx(-99.17, abs=0.01)
    tile = get_grid(grid_name).tile_at(lon, lat, Z)  # 3 km raster, ≤ 1.25 km tiles: covered
    with Gallery.open(out) as g:
        rgb = decode_tile(g.blob(TileRef(Z, tile.col, tile.row, g.tiles(Z)[0].time)))
    assert np.abs(rgb.astype(int) - 120).max() <= 3


def test_tiff_without_georeference_is_a_one_line_error(tmp_path):
    src = tmp_path / "plain.tif"
    write_geotiff(src, georeferenced=False)
    with pytest.raises(ValueError, match=r"plain\.tif: no georeference") as info:
        build_gallery([src], tmp_path / "g.sqlite", grid="ge", zoom=Z)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "g.sqlite").exists()


def test_cli_builds_and_describes_a_gallery(tif, tmp_path, capsys):
    out = tmp_path / "cli.sqlite"
    assert main(["gallery", "build", "--grid", "ge", "--zoom", "15", str(tif), str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote ") and str(out) in line and "\n" not in line
    assert main(["gallery", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "format ge" in info and "z15: " in info and "lon 2.9" in info

    assert main(["gallery", "info", str(tmp_path / "absent.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsloc: error: ") and err.count("\n") == 1
    plain = tmp_path / "plain.tif"
    write_geotiff(plain, georeferenced=False)
    assert main(["gallery", "build", "--grid", "xyz", "--zoom", "15", str(plain), str(out)]) == 2
    assert "no georeference" in capsys.readouterr().err


def test_extract_tiles_copies_every_time_inside_the_boxes(tmp_path):
    src = tmp_path / "src.sqlite"
    with sqlite3.connect(src) as conn:
        conn.execute(
            "CREATE TABLE ge_tiles(zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " time_ TEXT, tile_data BLOB)"
        )
        conn.executemany(
            "INSERT INTO ge_tiles VALUES (15, ?, ?, ?, x'00')",
            [(c, r, t) for c in range(10) for r in range(10) for t in ("2021", "2023")],
        )
    out = tmp_path / "out.sqlite"
    boxes = [TileBox(15, (0, 2), (0, 1)), TileBox(15, (8, 9), (8, 9)), TileBox(14, (0, 9), (0, 9))]
    assert extract_tiles(src, out, boxes) == 20
    with Gallery.open(out) as g:
        assert g.count(15) == 20 and g.times(15) == ["2021", "2023"]
        assert {(t.col, t.row) for t in g.tiles(15)} == {
            *((c, r) for c in range(3) for r in range(2)),
            *((c, r) for c in (8, 9) for r in (8, 9)),
        }
    assert extract_tiles(src, out, boxes[:1]) == 12  # replaced whole, not appended
