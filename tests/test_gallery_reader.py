"""Gallery reading against small real SQLite galleries (ge_tiles and MBTiles) built in the test."""

import logging
import sqlite3
import threading

import cv2
import numpy as np
import pytest

from rsloc_assets.gallery.reader import Gallery, MosaicStats, TileRef, decode_tile
from rsloc_assets.grids import TILE_PX, get_grid, tms_row

Z = 15
COL0, ROW0 = 16150, 12020


def tile_colour(col: int, row: int, time: str = "0") -> tuple[int, int, int]:
    """A distinct flat RGB colour per tile and time, far apart under JPEG error."""
    return (40 + 23 * (col % 9), 40 + 23 * (row % 9), 60 + 90 * (len(time) % 3))


def jpeg(colour: tuple[int, int, int], size: int = TILE_PX, grey: bool = False) -> bytes:
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = colour
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if grey else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def make_ge(path, rows: list[tuple]) -> None:
    """A ge_tiles gallery from (z, col, row, time_, blob) rows; time_ keeps its Python type."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE ge_tiles(zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " time_, tile_data BLOB)"
        )
        conn.executemany("INSERT INTO ge_tiles VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()


def make_block(path, cols: range, rows: range, corrupt: tuple[int, int] | None = None) -> None:
    records = []
    for r in rows:
        for c in cols:
            blob = b"\xff\xd8 not a jpeg" if (c, r) == corrupt else jpeg(tile_colour(c, r))
            records.append((Z, c, r, "0", blob))
    make_ge(path, records)


def decoded(blob: bytes) -> np.ndarray:
    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def cell(mosaic: np.ndarray, dx: int, dy: int) -> np.ndarray:
    y, x = (dy + 1) * TILE_PX, (dx + 1) * TILE_PX
    return mosaic[y : y + TILE_PX, x : x + TILE_PX]


def test_ge_refs_levels_times_and_latest_selection(tmp_path):
    path = tmp_path / "g.sqlite"
    rows = [
        (Z, 1, 1, 9, jpeg((10, 10, 10))),
        (Z, 1, 1, 10, jpeg((20, 20, 20))),  # integer times: 10 is later than 9
        (Z, 2, 1, 9, jpeg((30, 30, 30))),
        (Z, 1, 2, "10", jpeg((40, 40, 40))),  # a text time equal to an integer one
        (14, 5, 6, "2019b", jpeg((50, 50, 50))),
        (14, 5, 6, "2020", jpeg((60, 60, 60))),  # not all numeric: lexical, "2020" < "2019b"
    ]
    make_ge(path, rows)
    with Gallery.open(path) as g:
        assert (g.format, g.grid.name) == ("ge", "ge")
        assert g.levels() == [14, 15]
        assert g.times(Z) == ["9", "10"]
        assert g.times(14) == ["2019b", "2020"]
        assert g.count(Z) == 4
        assert g.tiles(Z) == [TileRef(Z, 1, 1, "10"), TileRef(Z, 2, 1, "9"), TileRef(Z, 1, 2, "10")]
        assert g.tiles(Z, time="9") == [TileRef(Z, 1, 1, "9"), TileRef(Z, 2, 1, "9")]
        assert g.tiles(14) == [TileRef(14, 5, 6, "2020")]
        assert decode_tile(g.blob(TileRef(Z, 1, 1, "9")))[0, 0] == pytest.approx(10, abs=3)
        assert decode_tile(g.blob(TileRef(Z, 1, 1, "10")))[0, 0] == pytest.approx(20, abs=3)
        assert g.blob(TileRef(Z, 1, 1, "11")) is None
        grid = get_grid("ge")
        box = g.extent(Z)
        assert (box.west, box.north) == (
            grid.bounds(TileRef(Z, 1, 1, "").tile).west,
            180 - 360 / 2**15,
        )
        assert (box.east, box.south) == pytest.approx(
            (-180 + 3 * 360 / 2**15, 180 - 3 * 360 / 2**15)
        )
        with pytest.raises(ValueError, match="no tiles at zoom level 3"):
            g.extent(3)


def test_mosaic_layout_places_each_neighbour(tmp_path):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 3), range(ROW0, ROW0 + 3))
    stats = MosaicStats()
    with Gallery.open(path) as g:
        centre = TileRef(Z, COL0 + 1, ROW0 + 1, "0")
        [(ref, mosaic)] = list(g.mosaics([centre], stats=stats))
        assert ref == centre
        assert mosaic.shape == (768, 768, 3) and mosaic.dtype == np.uint8
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = TileRef(Z, centre.col + dx, centre.row + dy, "0")
                np.testing.assert_array_equal(cell(mosaic, dx, dy), decoded(g.blob(neighbour)))
                expected = tile_colour(neighbour.col, neighbour.row)
                np.testing.assert_allclose(cell(mosaic, dx, dy).mean(axis=(0, 1)), expected, atol=3)
        [(_, small)] = list(g.mosaics([centre], size=224))
        assert small.shape == (224, 224, 3)
    assert (stats.mosaics, stats.decoded, stats.missing_neighbours, stats.corrupt) == (1, 9, 0, [])


def test_a_repeated_tile_row_is_counted_and_the_last_written_is_used(tmp_path):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 3), range(ROW0, ROW0 + 3))
    centre = TileRef(Z, COL0 + 1, ROW0 + 1, "0")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO ge_tiles VALUES (?, ?, ?, ?, ?)",
            (Z, centre.col, centre.row, "0", jpeg((250, 10, 10))),
        )
    conn.close()
    with Gallery.open(path) as g:
        assert g.duplicates(Z) == 1 and len(g.tiles(Z)) == 9
        assert decoded(g.blob(centre)).mean(axis=(0, 1))[0] > 240
        [(_, mosaic)] = list(g.mosaics([centre]))
        assert cell(mosaic, 0, 0).mean(axis=(0, 1))[0] > 240


def test_a_ge_tiles_table_without_rowids_is_read(tmp_path):
    path = tmp_path / "g.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE ge_tiles(zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " time_ TEXT, tile_data BLOB, PRIMARY KEY (zoom_level, tile_column, tile_row, time_))"
            " WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO ge_tiles VALUES (?, ?, ?, ?, ?)", (Z, COL0, ROW0, "0", jpeg((9, 9, 9)))
        )
    conn.close()
    with Gallery.open(path) as g:
        [ref] = g.tiles(Z)
        assert g.duplicates(Z) == 0 and g.blob(ref) is not None


def test_missing_neighbours_are_black_and_counted(tmp_path):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 2), range(ROW0, ROW0 + 2))
    stats = MosaicStats()
    with Gallery.open(path) as g:
        corner = TileRef(Z, COL0, ROW0, "0")
        mosaic = dict(g.mosaics([corner], stats=stats))[corner]
    for dx, dy in [(-1, -1), (0, -1), (1, -1), (-1, 0), (-1, 1)]:
        assert not cell(mosaic, dx, dy).any()
    for dx, dy in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        assert cell(mosaic, dx, dy).min() > 30
    assert stats.missing_neighbours == 5


def test_corrupt_tile_is_logged_once_skipped_and_others_still_mosaic(tmp_path, caplog):
    path = tmp_path / "g.sqlite"
    bad = (COL0 + 1, ROW0 + 1)
    make_block(path, range(COL0, COL0 + 3), range(ROW0, ROW0 + 3), corrupt=bad)
    stats = MosaicStats()
    with caplog.at_level(logging.WARNING), Gallery.open(path) as g:
        results = dict(g.mosaics(g.tiles(Z), stats=stats))
    bad_ref = TileRef(Z, *bad, "0")
    assert results[bad_ref] is None
    assert sum(m is not None for m in results.values()) == 8
    assert stats.corrupt == [bad_ref.key]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and bad_ref.key in warnings[0]
    top_left = results[TileRef(Z, COL0, ROW0, "0")]
    assert not cell(top_left, 1, 1).any()  # the corrupt tile is a black neighbour
    assert stats.mosaics == 8


def test_each_tile_is_decoded_once_over_a_block(tmp_path):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 7), range(ROW0, ROW0 + 7))
    with Gallery.open(path) as g:
        inner = [r for r in g.tiles(Z) if COL0 < r.col < COL0 + 6 and ROW0 < r.row < ROW0 + 6]
        assert len(inner) == 25
        stats = MosaicStats()
        order = [ref for ref, mosaic in g.mosaics(reversed(inner), stats=stats)]
        assert order == sorted(inner, key=lambda r: (r.row, r.col))
        assert (stats.mosaics, stats.decoded, stats.missing_neighbours) == (25, 49, 0)

        whole = g.tiles(Z)
        positions = {(r.col, r.row) for r in whole}
        absent = sum(
            (r.col + dx, r.row + dy) not in positions
            for r in whole
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
        )
        stats = MosaicStats()
        assert len(list(g.mosaics(whole, stats=stats))) == 49
        assert (stats.decoded, stats.missing_neighbours) == (49, absent)


def test_neighbours_follow_the_times_the_refs_name(tmp_path):
    path = tmp_path / "g.sqlite"
    rows = []
    for c in range(COL0, COL0 + 3):
        rows.append((Z, c, ROW0, "2019", jpeg(tile_colour(c, ROW0, "2019"))))
        rows.append((Z, c, ROW0, "2020", jpeg(tile_colour(c, ROW0, "2020x"))))
    rows.append((Z, COL0 + 1, ROW0 + 1, "2020", jpeg((200, 200, 200))))  # only in 2020
    make_ge(path, rows)
    with Gallery.open(path) as g:
        refs_2019 = g.tiles(Z, time="2019")
        assert len(refs_2019) == 3
        centre = TileRef(Z, COL0 + 1, ROW0, "2019")
        mosaic = dict(g.mosaics(refs_2019))[centre]
        np.testing.assert_array_equal(
            cell(mosaic, -1, 0), decoded(g.blob(TileRef(Z, COL0, ROW0, "2019")))
        )
        np.testing.assert_array_equal(
            cell(mosaic, 0, 1), decoded(g.blob(TileRef(Z, COL0 + 1, ROW0 + 1, "2020")))
        )
        alone = dict(g.mosaics([centre]))[centre]  # no ref names the neighbours: latest
        np.testing.assert_array_equal(
            cell(alone, -1, 0), decoded(g.blob(TileRef(Z, COL0, ROW0, "2020")))
        )


def test_missing_centre_is_recorded_not_raised(tmp_path, caplog):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 2), range(ROW0, ROW0 + 1))
    stats = MosaicStats()
    with caplog.at_level(logging.WARNING), Gallery.open(path) as g:
        ghost = TileRef(Z, COL0, ROW0, "1999")
        assert list(g.mosaics([ghost], stats=stats)) == [(ghost, None)]
    assert stats.missing_centres == [ghost.key] and stats.mosaics == 0
    assert ghost.key in caplog.text


def test_mbtiles_rows_flip_and_mosaic_is_north_up(tmp_path):
    path = tmp_path / "g.mbtiles"
    z = 4
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE metadata(name TEXT, value TEXT)")
        conn.execute(
            "CREATE TABLE tiles(zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB)"
        )
        for row in (5, 6, 7):  # XYZ rows; stored as TMS
            blob = jpeg(tile_colour(3, row), grey=row == 7)
            conn.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, 3, tms_row(row, z), blob))
        conn.execute(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, 4, tms_row(6, z), jpeg((9, 9, 9), 512))
        )
    conn.close()
    with Gallery.open(path) as g:
        assert (g.format, g.grid.name, g.levels(), g.times(z)) == ("mbtiles", "xyz", [z], [""])
        refs = g.tiles(z)
        assert refs == [
            TileRef(z, 3, 5, ""),
            TileRef(z, 3, 6, ""),
            TileRef(z, 4, 6, ""),
            TileRef(z, 3, 7, ""),
        ]
        box = g.extent(z)
        xyz = get_grid("xyz")
        assert box.north == pytest.approx(xyz.bounds(TileRef(z, 3, 5, "").tile).north)
        assert box.east == pytest.approx(xyz.bounds(TileRef(z, 4, 6, "").tile).east)
        stats = MosaicStats()
        mosaic = dict(g.mosaics(refs, stats=stats))[TileRef(z, 3, 6, "")]
    np.testing.assert_allclose(cell(mosaic, 0, -1).mean(axis=(0, 1)), tile_colour(3, 5), atol=3)
    np.testing.assert_allclose(cell(mosaic, 0, 0).mean(axis=(0, 1)), tile_colour(3, 6), atol=3)
    grey = cell(mosaic, 0, 1)  # grey JPEG tile replicated to RGB
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    np.testing.assert_allclose(cell(mosaic, 1, 0), 9, atol=3)  # 512-px tile resized to 256
    assert stats.decoded == 4 and stats.corrupt == []


def test_mosaics_can_be_consumed_from_another_thread(tmp_path):
    path = tmp_path / "g.sqlite"
    make_block(path, range(COL0, COL0 + 2), range(ROW0, ROW0 + 2))
    results = []
    with Gallery.open(path) as g:
        worker = threading.Thread(target=lambda: results.extend(g.mosaics(g.tiles(Z))))
        worker.start()
        worker.join()
    assert len(results) == 4 and all(m is not None for _, m in results)


def test_bad_gallery_files_give_one_line_errors(tmp_path):
    missing = tmp_path / "absent.sqlite"
    with pytest.raises(FileNotFoundError, match=r"absent\.sqlite"):
        Gallery.open(missing)
    text = tmp_path / "notes.sqlite"
    text.write_text("this is not a database, just text long enough to fill a header " * 4)
    with pytest.raises(ValueError, match=r"notes\.sqlite: not an SQLite gallery") as info:
        Gallery.open(text)
    assert "\n" not in str(info.value)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE places(name TEXT)")
    conn.close()
    with pytest.raises(ValueError, match=r"other\.sqlite: neither an RSLoc ge_tiles gallery"):
        Gallery.open(other)
