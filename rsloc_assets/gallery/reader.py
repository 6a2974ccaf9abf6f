"""Read-only access to tile galleries: RSLoc `ge_tiles` SQLite and MBTiles, with 3×3 mosaics.

Rows are always in the grid's downward convention; MBTiles' TMS rows are flipped on read.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from rsloc_assets.grids import TILE_PX, Bounds, TileGrid, TileKey, get_grid, tms_row

log = logging.getLogger(__name__)

MOSAIC_PX = 3 * TILE_PX


class GalleryFormat(StrEnum):
    """The SQLite layouts rsloc reads: RSLoc's `ge_tiles` and MBTiles' `tiles`."""

    GE = "ge"
    MBTILES = "mbtiles"


@dataclass(frozen=True)
class TileRef:
    """One stored tile: grid position (rows downward) and acquisition time ("" when untimed)."""

    z: int
    col: int
    row: int
    time: str

    @property
    def tile(self) -> TileKey:
        return TileKey(self.z, self.col, self.row)

    @property
    def key(self) -> str:
        return self.tile.key


@dataclass
class MosaicStats:
    """Counters of `Gallery.mosaics` sweeps: decodes performed, gaps filled black, tiles skipped."""

    mosaics: int = 0
    decoded: int = 0
    missing_neighbours: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing_centres: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Queries:
    """The fixed SQL of one gallery format; every value is a bound parameter."""

    levels: str
    times: str
    positions: str
    count: str
    duplicates: str
    extent: str
    blob: str
    block: str


_GE_SQL = _Queries(
    levels="SELECT DISTINCT zoom_level FROM ge_tiles ORDER BY zoom_level",
    times="SELECT DISTINCT time_ FROM ge_tiles WHERE zoom_level = ?",
    positions="SELECT tile_column, tile_row, time_ FROM ge_tiles WHERE zoom_level = ?",
    count="SELECT COUNT(*) FROM ge_tiles WHERE zoom_level = ?",
    duplicates="SELECT COUNT(*) - COUNT(DISTINCT tile_column || '/' || tile_row || '/' || time_)"
    " FROM ge_tiles WHERE zoom_level = ?",
    extent="SELECT MIN(tile_column), MAX(tile_column), MIN(tile_row), MAX(tile_row)"
    " FROM ge_tiles WHERE zoom_level = ?",
    # Of rows repeating one tile and time, the last written (highest rowid) is the tile.
    blob="SELECT time_, tile_data FROM ge_tiles"
    " WHERE zoom_level = ? AND tile_column = ? AND tile_row = ? ORDER BY rowid DESC",
    block="SELECT tile_column, tile_row, time_, tile_data FROM ge_tiles"
    " WHERE zoom_level = ? AND tile_row BETWEEN ? AND ? AND tile_column BETWEEN ? AND ?"
    " ORDER BY rowid",
)

# A `WITHOUT ROWID` table or a view has no row order to prefer: the first row found is used.
_GE_SQL_UNORDERED = replace(
    _GE_SQL,
    blob=_GE_SQL.blob.removesuffix(" ORDER BY rowid DESC"),
    block=_GE_SQL.block.removesuffix(" ORDER BY rowid"),
)


def _has_rowid(conn: sqlite3.Connection) -> bool:
    """Whether `ge_tiles` has rowids (a plain table), so the last written of repeated rows wins."""
    try:
        conn.execute("SELECT rowid FROM ge_tiles LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        return False
    return True


_MBTILES_SQL = _Queries(
    levels="SELECT DISTINCT zoom_level FROM tiles ORDER BY zoom_level",
    times="SELECT DISTINCT '' FROM tiles WHERE zoom_level = ?",
    positions="SELECT tile_column, tile_row, '' FROM tiles WHERE zoom_level = ?",
    count="SELECT COUNT(*) FROM tiles WHERE zoom_level = ?",
    duplicates="SELECT COUNT(*) - COUNT(DISTINCT tile_column || '/' || tile_row)"
    " FROM tiles WHERE zoom_level = ?",
    extent="SELECT MIN(tile_column), MAX(tile_column), MIN(tile_row), MAX(tile_row)"
    " FROM tiles WHERE zoom_level = ?",
    blob="SELECT '', tile_data FROM tiles"
    " WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
    block="SELECT tile_column, tile_row, '', tile_data FROM tiles"
    " WHERE zoom_level = ? AND tile_row BETWEEN ? AND ? AND tile_column BETWEEN ? AND ?",
)

_FORMATS = {
    GalleryFormat.GE: ("ge_tiles", {"zoom_level", "tile_column", "tile_row", "time_", "tile_data"}),
    GalleryFormat.MBTILES: ("tiles", {"zoom_level", "tile_column", "tile_row", "tile_data"}),
}


def normalise_time(value: object) -> str:
    """A stored `time_` (INTEGER, REAL, TEXT or NULL) as the string rsloc uses everywhere."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def order_times(times: Iterable[str]) -> list[str]:
    """Distinct times oldest first: by numeric value when all are numbers, else lexically."""
    distinct = sorted(set(times))
    try:
        return sorted(distinct, key=lambda t: (float(t), t))
    except ValueError:
        return distinct


def latest_time(times: Iterable[str]) -> str:
    """The latest of `times` under `order_times`."""
    return order_times(times)[-1]


def decode_tile(blob: bytes | None) -> np.ndarray | None:
    """A JPEG/PNG blob as 256×256 RGB uint8 (other square sizes resized); None if undecodable."""
    if not blob:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(blob, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if image is None or image.shape[0] != image.shape[1]:
        return None
    if image.shape[0] != TILE_PX:
        image = cv2.resize(image, (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Gallery:
    """A tile gallery opened read-only; use `Gallery.open(path)`, ideally as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection, fmt: GalleryFormat) -> None:
        self.path = path
        self.format = fmt
        self.grid: TileGrid = get_grid("ge" if fmt == GalleryFormat.GE else "xyz")
        self._conn = conn
        self._sql = _MBTILES_SQL
        if fmt == GalleryFormat.GE:
            self._sql = _GE_SQL if _has_rowid(conn) else _GE_SQL_UNORDERED

    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        """Open `path` read-only and detect its format (RSLoc `ge_tiles` or MBTiles `tiles`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such gallery file")
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        try:
            fmt = _detect_format(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, fmt)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def levels(self) -> list[int]:
        """Zoom levels present, ascending."""
        return [int(z) for (z,) in self._conn.execute(self._sql.levels)]

    def times(self, z: int) -> list[str]:
        """Distinct acquisition times at level `z`, oldest first."""
        return order_times(normalise_time(t) for (t,) in self._conn.execute(self._sql.times, (z,)))

    def count(self, z: int) -> int:
        """Stored tiles at level `z`, every time included."""
        return int(self._conn.execute(self._sql.count, (z,)).fetchone()[0])

    def duplicates(self, z: int) -> int:
        """Rows at level `z` repeating a tile (and time) an earlier row holds: the last written of
        them is used in a `ge_tiles` gallery (MBTiles forbids them)."""
        return int(self._conn.execute(self._sql.duplicates, (z,)).fetchone()[0])

    def _versions(self, z: int) -> dict[tuple[int, int], list[str]]:
        versions: dict[tuple[int, int], list[str]] = {}
        for col, row, t in self._conn.execute(self._sql.positions, (z,)):
            versions.setdefault((int(col), self._row(z, int(row))), []).append(normalise_time(t))
        return versions

    def tile_times(self, z: int) -> dict[str, list[str]]:
        """Every stored time of every tile at `z`, oldest first, keyed "z/col/row"."""
        return {
            TileKey(z, col, row).key: order_times(times)
            for (col, row), times in self._versions(z).items()
        }

    def tiles(self, z: int, time: str | None = None) -> list[TileRef]:
        """One ref per tile position at `z`: exactly `time` if given, else the tile's latest."""
        refs = []
        for (col, row), times in self._versions(z).items():
            if time is None:
                refs.append(TileRef(z, col, row, latest_time(times)))
            elif time in times:
                refs.append(TileRef(z, col, row, time))
        return sorted(refs, key=lambda r: (r.row, r.col))

    def extent(self, z: int) -> Bounds:
        """Lon/lat box of all tiles at level `z`."""
        col0, col1, row0, row1 = self._conn.execute(self._sql.extent, (z,)).fetchone()
        if col0 is None:
            raise ValueError(f"{self.path}: no tiles at zoom level {z}")
        rows = sorted((self._row(z, row0), self._row(z, row1)))
        nw = self.grid.bounds(TileKey(z, col0, rows[0]))
        se = self.grid.bounds(TileKey(z, col1, rows[1]))
        return Bounds(nw.west, se.south, se.east, nw.north)

    def blob(self, ref: TileRef) -> bytes | None:
        """The encoded image of `ref`, or None when the gallery has no such tile."""
        params = (ref.z, ref.col, self._row(ref.z, ref.row))
        for t, data in self._conn.execute(self._sql.blob, params):
            if normalise_time(t) == ref.time:
                return data
        return None

    def mosaics(
        self, refs: Iterable[TileRef], size: int = MOSAIC_PX, stats: MosaicStats | None = None
    ) -> Iterator[tuple[TileRef, np.ndarray | None]]:
        """Each ref's 3×3 RGB mosaic (None if its tile is missing or corrupt); tiles decoded once.

        Yielded in (z, row, col) order. A neighbour takes the time its ref in `refs` names, else its
        latest; missing or corrupt neighbours are black.
        """
        if size < 1:
            raise ValueError(f"mosaic size must be positive, got {size}")
        stats = MosaicStats() if stats is None else stats
        ordered = sorted(refs, key=lambda r: (r.z, r.row, r.col, r.time))
        return self._sweep(ordered, size, stats)

    def _sweep(
        self, ordered: list[TileRef], size: int, stats: MosaicStats
    ) -> Iterator[tuple[TileRef, np.ndarray | None]]:
        for z, level_refs in itertools.groupby(ordered, key=lambda r: r.z):
            window = _RowWindow(self, z, list(level_refs), stats)
            for ref in window.refs:
                window.advance(ref.row)
                mosaic = window.mosaic(ref)
                if mosaic is not None and size != MOSAIC_PX:
                    interpolation = cv2.INTER_AREA if size < MOSAIC_PX else cv2.INTER_LINEAR
                    mosaic = cv2.resize(mosaic, (size, size), interpolation=interpolation)
                yield ref, mosaic

    def _row(self, z: int, row: int) -> int:
        """Convert between stored and grid rows (MBTiles TMS rows flip; self-inverse)."""
        return tms_row(row, z) if self.format == GalleryFormat.MBTILES else row

    def _fetch_rows(
        self, z: int, row0: int, row1: int, col0: int, col1: int
    ) -> Iterator[tuple[int, int, str, bytes | None]]:
        """(col, row, time, blob) of every stored tile in a grid-row and column range: one query."""
        stored = sorted((self._row(z, row0), self._row(z, row1)))
        for col, row, t, data in self._conn.execute(self._sql.block, (z, *stored, col0, col1)):
            yield int(col), self._row(z, int(row)), normalise_time(t), data


class _RowWindow:
    """Blobs and decoded tiles of the rows around the sweep row at one level, each decoded once."""

    def __init__(self, gallery: Gallery, z: int, refs: list[TileRef], stats: MosaicStats) -> None:
        self.refs = refs
        self._gallery = gallery
        self._z = z
        self._stats = stats
        self._named: dict[tuple[int, int], set[str]] = {}
        self._span: dict[int, tuple[int, int]] = {}
        for ref in refs:
            self._named.setdefault((ref.col, ref.row), set()).add(ref.time)
            for row in (ref.row - 1, ref.row, ref.row + 1):
                lo, hi = self._span.get(row, (ref.col - 1, ref.col + 1))
                self._span[row] = (min(lo, ref.col - 1), max(hi, ref.col + 1))
        self._blobs: dict[int, dict[int, dict[str, bytes | None]]] = {}
        self._decoded: dict[int, dict[tuple[int, str], np.ndarray | None]] = {}
        self._reported: set[TileRef] = set()

    def advance(self, row: int) -> None:
        """Hold rows row-1..row+1: drop rows already passed, fetch the new ones in one query."""
        for held in [r for r in self._blobs if r < row - 1]:
            del self._blobs[held]
            self._decoded.pop(held, None)
        needed = [r for r in (row - 1, row, row + 1) if r not in self._blobs]
        if not needed:
            return
        for r in needed:
            self._blobs[r] = {}
        col0 = min(self._span[r][0] for r in needed)
        col1 = max(self._span[r][1] for r in needed)
        fetched = self._gallery._fetch_rows(self._z, needed[0], needed[-1], col0, col1)
        for col, r, t, data in fetched:
            self._blobs[r].setdefault(col, {})[t] = data

    def mosaic(self, ref: TileRef) -> np.ndarray | None:
        """The 768-px mosaic centred on `ref`; None (recorded in the stats) if `ref` is unusable."""
        versions = self._blobs[ref.row].get(ref.col, {})
        if ref.time not in versions:
            if ref not in self._reported:
                self._reported.add(ref)
                self._stats.missing_centres.append(ref.key)
                log.warning("tile %s (time %r) is not in %s", ref.key, ref.time, self._gallery.path)
            return None
        centre = self._tile(ref.col, ref.row, ref.time)
        if centre is None:
            return None
        canvas = np.zeros((MOSAIC_PX, MOSAIC_PX, 3), dtype=np.uint8)
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            if dx == dy == 0:
                tile = centre
            else:
                tile = self._neighbour(ref.col + dx, ref.row + dy, ref.time)
            if tile is None:
                self._stats.missing_neighbours += 1
                continue
            y, x = (dy + 1) * TILE_PX, (dx + 1) * TILE_PX
            canvas[y : y + TILE_PX, x : x + TILE_PX] = tile
        self._stats.mosaics += 1
        return canvas

    def _neighbour(self, col: int, row: int, centre_time: str) -> np.ndarray | None:
        """A neighbour at the time its own ref names (the centre's, if several), else its latest."""
        versions = self._blobs[row].get(col)
        if not versions:
            return None
        named = self._named.get((col, row), set()) & versions.keys()
        time = centre_time if centre_time in named else latest_time(named or versions.keys())
        return self._tile(col, row, time)

    def _tile(self, col: int, row: int, time: str) -> np.ndarray | None:
        decoded = self._decoded.setdefault(row, {})
        if (col, time) not in decoded:
            self._stats.decoded += 1
            image = decode_tile(self._blobs[row][col][time])
            if image is None:
                key = TileKey(self._z, col, row).key
                self._stats.corrupt.append(key)
                log.warning(
                    "corrupt tile %s (time %r) in %s: skipped", key, time, self._gallery.path
                )
            decoded[(col, time)] = image
        return decoded[(col, time)]


def _detect_format(conn: sqlite3.Connection, path: Path) -> GalleryFormat:
    """The format from the tables or views present; one-line error if none."""
    try:
        names = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: not an SQLite gallery ({exc})") from None
    for fmt, (table, columns) in _FORMATS.items():
        if table not in names:
            continue
        present = {c for (c,) in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
        if missing := sorted(columns - present):
            raise ValueError(f"{path}: table {table} lacks columns {', '.join(missing)}")
        return fmt
    raise ValueError(f"{path}: neither an RSLoc ge_tiles gallery nor MBTiles (no such table)")
