"""Warp georeferenced rasters into gallery tiles of either grid with GDAL (RSLoc SQLite or MBTiles).

Tiles are warped in blocks of tile rows and columns, so memory stays bounded for any input size.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from osgeo import gdal, osr

from rsloc_assets.grids import TILE_PX, Bounds, TileGrid, TileKey, get_grid, tms_row
from rsloc_assets.layout import write_atomic
from rsloc_assets.progress import Progress

gdal.UseExceptions()
osr.UseExceptions()

log = logging.getLogger(__name__)

BLOCK_ROWS = 8  # tile rows warped at once
BLOCK_COLS = 32  # tile columns warped at once: 2048 × 8192 px × 4 bands = 64 MiB per block
VALID_ALPHA = 128  # warped alpha at or above this marks a pixel covered by the input
EDGE_SAMPLES = 64  # points per raster edge when projecting its footprint to lon/lat

_GE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ge_tiles(zoom_level INTEGER, tile_column INTEGER,"
    " tile_row INTEGER, time_ TEXT, tile_data BLOB,"
    " PRIMARY KEY(zoom_level, tile_column, tile_row, time_))",
)
_MBTILES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS metadata(name TEXT, value TEXT)",
    "CREATE TABLE IF NOT EXISTS tiles(zoom_level INTEGER, tile_column INTEGER,"
    " tile_row INTEGER, tile_data BLOB)",
    "CREATE UNIQUE INDEX IF NOT EXISTS tile_index ON tiles(zoom_level, tile_column, tile_row)",
)
_GE_INSERT = (
    "INSERT OR REPLACE INTO ge_tiles(zoom_level, tile_column, tile_row, time_, tile_data)"
    " VALUES (?, ?, ?, ?, ?)"
)
_MBTILES_INSERT = (
    "INSERT OR REPLACE INTO tiles(zoom_level, tile_column, tile_row, tile_data) VALUES (?, ?, ?, ?)"
)


@dataclass
class BuildReport:
    """What one `build_gallery` run wrote: tiles stored, sparse tiles skipped, inputs and output."""

    written: int
    skipped_sparse: int
    inputs: list[Path]
    out: Path


@dataclass(frozen=True)
class _Source:
    """One input raster as an RGB(+alpha) view, with the tile rows and columns it touches."""

    path: Path
    dataset: gdal.Dataset
    view: gdal.Dataset
    has_alpha: bool
    cols: range
    rows: range

    def covers(self, col: int, row: int) -> bool:
        return col in self.cols and row in self.rows


def build_gallery(
    inputs: Sequence[str | Path],
    out: str | Path,
    grid: str,
    zoom: int,
    time: str = "0",
    min_coverage: float = 0.5,
    quality: int = 90,
) -> BuildReport:
    """Warp `inputs` into `grid` tiles at `zoom` and append them to `out`, idempotently per tile.

    Tiles whose input coverage is below `min_coverage` are skipped; uncovered pixels of kept tiles
    are black. Grid "ge" writes RSLoc `ge_tiles` SQLite, grid "xyz" writes MBTiles 1.3 JPEG tiles.
    """
    tile_grid = get_grid(grid)
    if not inputs:
        raise ValueError("no input rasters given")
    if not 0 <= zoom <= 30:
        raise ValueError(f"zoom must be within 0..30, got {zoom}")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be within 0..1, got {min_coverage}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be within 1..100, got {quality}")
    out = Path(out)
    sources = [_open_source(Path(p), tile_grid, zoom) for p in inputs]
    blocks: dict[tuple[int, int], list[_Source]] = {}
    for src in sources:
        for brow in range(src.rows.start // BLOCK_ROWS, (src.rows.stop - 1) // BLOCK_ROWS + 1):
            for bcol in range(src.cols.start // BLOCK_COLS, (src.cols.stop - 1) // BLOCK_COLS + 1):
                blocks.setdefault((brow, bcol), []).append(src)

    spans = [
        (
            range(
                max(brow * BLOCK_ROWS, min(s.rows.start for s in block_sources)),
                min((brow + 1) * BLOCK_ROWS, max(s.rows.stop for s in block_sources)),
            ),
            range(
                max(bcol * BLOCK_COLS, min(s.cols.start for s in block_sources)),
                min((bcol + 1) * BLOCK_COLS, max(s.cols.stop for s in block_sources)),
            ),
            block_sources,
        )
        for (brow, bcol), block_sources in sorted(blocks.items())
    ]
    progress = Progress(f"{out.name} z{zoom}: warping", sum(len(r) * len(c) for r, c, _ in spans))
    conn = _open_output(out, tile_grid)
    written = skipped = 0
    try:
        for rows, cols, block_sources in spans:
            pixels = _warp_block(block_sources, tile_grid, zoom, rows, cols)
            records = []
            for r, c in ((r, c) for r in rows for c in cols):
                if not any(s.covers(c, r) for s in block_sources):
                    continue
                y, x = (r - rows.start) * TILE_PX, (c - cols.start) * TILE_PX
                tile = pixels[:, y : y + TILE_PX, x : x + TILE_PX]
                valid = tile[3] >= VALID_ALPHA
                coverage = float(valid.mean())
                if coverage == 0.0:
                    continue
                if coverage < min_coverage:
                    skipped += 1
                    continue
                rgb = np.where(valid, tile[:3], 0).transpose(1, 2, 0)
                records.append(_record(tile_grid, TileKey(zoom, c, r), time, _encode(rgb, quality)))
            with conn:
                conn.executemany(_GE_INSERT if grid == "ge" else _MBTILES_INSERT, records)
            written += len(records)
            progress.advance(len(rows) * len(cols))
        if grid == "xyz":
            _update_mbtiles_metadata(conn, tile_grid, out)
    finally:
        conn.close()
    log.info(
        "%s: %d %s z%d tiles written, %d skipped below %.0f%% coverage",
        out,
        written,
        grid,
        zoom,
        skipped,
        100 * min_coverage,
    )
    return BuildReport(written, skipped, [s.path for s in sources], out)


@dataclass(frozen=True)
class TileBox:
    """Tiles at one level with columns `cols` and grid rows `rows`, both inclusive."""

    zoom: int
    cols: tuple[int, int]
    rows: tuple[int, int]


def extract_tiles(src: str | Path, out: str | Path, boxes: Sequence[TileBox]) -> int:
    """Write a new RSLoc gallery `out` (replaced whole) holding the `ge_tiles` rows of `src`, at
    every time, inside `boxes`; returns the rows copied. For nested or regional sub-galleries."""
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such gallery file")
    where = " OR ".join(
        "(zoom_level = ? AND tile_column BETWEEN ? AND ? AND tile_row BETWEEN ? AND ?)"
        for _ in boxes
    )
    params = [v for b in boxes for v in (b.zoom, *b.cols, *b.rows)]
    copied = 0

    def write(tmp: str) -> None:
        nonlocal copied
        conn = _open_output(Path(tmp), get_grid("ge"))
        try:
            conn.execute("ATTACH DATABASE ? AS src", (str(src.resolve()),))
            with conn:
                cur = conn.execute(
                    "INSERT INTO ge_tiles SELECT zoom_level, tile_column, tile_row, time_,"
                    f" tile_data FROM src.ge_tiles WHERE {where or '0'}",
                    params,
                )
                copied = cur.rowcount
        finally:
            conn.close()

    write_atomic(out, write)
    log.info("%s: %d tiles of %s in %d boxes", out, copied, src, len(boxes))
    return copied


def _open_source(path: Path, grid: TileGrid, zoom: int) -> _Source:
    """Open and validate one input raster; one-line ValueError when it cannot become tiles."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such raster file")
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a raster GDAL can read ({_first_line(exc)})") from None
    if ds.GetGeoTransform(can_return_null=True) is None or ds.GetSpatialRef() is None:
        raise ValueError(f"{path}: no georeference (needs a geotransform and a projection)")
    count = ds.RasterCount
    has_alpha = count > 1 and ds.GetRasterBand(count).GetColorInterpretation() == gdal.GCI_AlphaBand
    colour = count - has_alpha
    if colour in (0, 2):
        raise ValueError(f"{path}: {count} bands; expected 1 (grey) or 3+ (R, G, B first)")
    if colour == 1 and ds.GetRasterBand(1).GetColorTable() is not None:
        raise ValueError(f"{path}: paletted raster; expand it first (gdal_translate -expand rgb)")
    types = {gdal.GetDataTypeName(ds.GetRasterBand(b).DataType) for b in range(1, count + 1)}
    if types != {"Byte"}:
        raise ValueError(
            f"{path}: {'/'.join(sorted(types))} pixels; 8-bit imagery expected"
            " (gdal_translate -ot Byte -scale)"
        )
    bands = [1, 1, 1] if colour == 1 else [1, 2, 3]
    if has_alpha:
        bands.append(count)
    view = gdal.Translate("", ds, format="VRT", bandList=bands)
    cols, rows = _tile_span(grid, _lonlat_footprint(ds, path), zoom)
    log.info(
        "%s: %d×%d px, %d bands, %d×%d %s z%d tiles",
        path,
        ds.RasterXSize,
        ds.RasterYSize,
        count,
        len(cols),
        len(rows),
        grid.name,
        zoom,
    )
    return _Source(path, ds, view, has_alpha, cols, rows)


def _lonlat_footprint(ds: gdal.Dataset, path: Path) -> Bounds:
    """Lon/lat box of a raster, from points along its four edges (projections bend edges)."""
    gt = ds.GetGeoTransform()
    w, h = ds.RasterXSize, ds.RasterYSize
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES)
    px = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    py = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    x = gt[0] + px * gt[1] + py * gt[2]
    y = gt[3] + px * gt[4] + py * gt[5]
    src = ds.GetSpatialRef().Clone()
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    points = osr.CoordinateTransformation(src, wgs84).TransformPoints(
        np.column_stack([x, y]).tolist()
    )
    lonlat = np.array(points, dtype=np.float64)[:, :2]
    lonlat = lonlat[np.isfinite(lonlat).all(axis=1)]
    if len(lonlat) == 0:
        raise ValueError(f"{path}: its footprint does not project to longitude/latitude")
    (west, south), (east, north) = lonlat.min(axis=0), lonlat.max(axis=0)
    return Bounds(float(west), float(south), float(east), float(north))


def _tile_span(grid: TileGrid, box: Bounds, zoom: int) -> tuple[range, range]:
    """Columns and rows of the `grid` tiles at `zoom` that a lon/lat box touches."""
    last = (1 << zoom) - 1

    def clamp(v: int) -> int:
        return min(max(v, 0), last)

    def lat(v: float) -> float:
        return min(max(v, -89.999999), 89.999999)

    nw = grid.tile_at(box.west, lat(box.north), zoom)
    se = grid.tile_at(box.east, lat(box.south), zoom)
    return range(clamp(nw.col), clamp(se.col) + 1), range(clamp(nw.row), clamp(se.row) + 1)


def _warp_block(
    sources: list[_Source], grid: TileGrid, zoom: int, rows: range, cols: range
) -> np.ndarray:
    """RGBA pixels (4, h, w) of a block of tiles, every source warped onto the same canvas."""
    nw = grid.native_bounds(TileKey(zoom, cols.start, rows.start))
    se = grid.native_bounds(TileKey(zoom, cols.stop - 1, rows.stop - 1))
    width, height = len(cols) * TILE_PX, len(rows) * TILE_PX
    canvas = gdal.GetDriverByName("MEM").Create("", width, height, 4, gdal.GDT_Byte)
    canvas.SetGeoTransform(
        (nw.west, (se.east - nw.west) / width, 0.0, nw.north, 0.0, (se.south - nw.north) / height)
    )
    srs = osr.SpatialReference()
    srs.SetFromUserInput(grid.crs)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    canvas.SetSpatialRef(srs)
    canvas.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    for src in sources:
        try:
            gdal.Warp(
                canvas,
                src.view,
                resampleAlg="bilinear",
                srcAlpha=src.has_alpha,
                dstAlpha=True,
                multithread=True,
            )
        except RuntimeError as exc:
            raise ValueError(
                f"{src.path}: warping to {grid.name} z{zoom} tiles failed ({_first_line(exc)})"
            ) from None
    return canvas.ReadAsArray()


def _encode(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(
        ".jpg",
        cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, quality],
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _record(grid: TileGrid, tile: TileKey, time: str, blob: bytes) -> tuple:
    """An insert row: ge_tiles keeps grid rows and a time, MBTiles flips rows to TMS."""
    if grid.name == "ge":
        return tile.z, tile.col, tile.row, time, blob
    return tile.z, tile.col, tms_row(tile.row, tile.z), blob


def _open_output(out: Path, grid: TileGrid) -> sqlite3.Connection:
    """Open (creating if needed) the output gallery and check it holds this grid's table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(out)
    try:
        names = dict(conn.execute("SELECT name, type FROM sqlite_master"))
        own, other = ("ge_tiles", "tiles") if grid.name == "ge" else ("tiles", "ge_tiles")
        if other in names and own not in names:
            raise ValueError(f"{out}: holds a {other} gallery, not one for grid {grid.name!r}")
        if names.get(own, "table") != "table":
            raise ValueError(f"{out}: {own} is a {names[own]}, cannot append tiles to it")
        with conn:
            for statement in _GE_SCHEMA if grid.name == "ge" else _MBTILES_SCHEMA:
                conn.execute(statement)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ValueError(f"{out}: cannot write a gallery there ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _update_mbtiles_metadata(conn: sqlite3.Connection, grid: TileGrid, out: Path) -> None:
    """Rewrite MBTiles name/format/zoom range/bounds from what the tiles table now holds."""
    boxes = []
    for z, col0, col1, row0, row1 in conn.execute(
        "SELECT zoom_level, MIN(tile_column), MAX(tile_column), MIN(tile_row), MAX(tile_row)"
        " FROM tiles GROUP BY zoom_level"
    ):
        nw = grid.bounds(TileKey(z, col0, tms_row(row1, z)))
        se = grid.bounds(TileKey(z, col1, tms_row(row0, z)))
        boxes.append((z, nw.west, se.south, se.east, nw.north))
    if not boxes:
        return
    zooms, west, south, east, north = zip(*boxes, strict=True)
    metadata = {
        "name": out.stem,
        "format": "jpg",
        "minzoom": str(min(zooms)),
        "maxzoom": str(max(zooms)),
        "bounds": f"{min(west):.7f},{min(south):.7f},{max(east):.7f},{max(north):.7f}",
    }
    with conn:
        conn.executemany("DELETE FROM metadata WHERE name = ?", [(k,) for k in metadata])
        conn.executemany("INSERT INTO metadata(name, value) VALUES (?, ?)", metadata.items())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
