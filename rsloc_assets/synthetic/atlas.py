"""A large synthetic gallery: many worlds of different seeds and landscapes side by side on
RSLoc's geographic grid, built one world at a time into one `ge_tiles` SQLite at several dates.

Memory is bounded by two worlds' geometry (`landscape.world` caches two), one render and one
GeoTIFF, whatever the atlas's size. Worlds are laid out in rows with a one-tile gap: grid
convergence tilts a world's edge at most ~230 m into the gap here, under the builder's half-tile
coverage threshold, so no tile is shared by two worlds, each world's tiles lie in its own
column/row box, and the first k worlds make a smaller gallery with the same mosaics. Progress is
stamped beside the SQLite, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyproj import Transformer

from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.geodesy import metres_per_degree
from rsloc_assets.grids import GeoGrid, ground_size_m
from rsloc_assets.layout import write_json
from rsloc_assets.progress import Progress
from rsloc_assets.synthetic.landscape import Landscape, WorldSpec, seeded_rng
from rsloc_assets.synthetic.queries import write_world

ZOOM = 15  # RSLoc-820K's gallery level
GRID = GeoGrid()
# Gallery dates (time_, season): two dates per tile; queries come from a third season.
DATES = (("2021", "spring"), ("2023", "summer"))


@dataclass(frozen=True)
class AtlasSpec:
    """An atlas: at least `tiles` z15 tiles of `world_km`-wide worlds at `gsd_m`, laid out in rows
    eastward from the south-west corner (`west`, `south`), landscapes in shuffled rounds of
    `landscapes`."""

    tiles: int
    seed: int = 1
    world_km: float = 12.0
    gsd_m: float = 4.0
    west: float = 0.5
    south: float = 44.0
    worlds_per_row: int = 16
    landscapes: tuple[Landscape, ...] = tuple(Landscape)
    dates: tuple[tuple[str, str], ...] = DATES

    def __post_init__(self) -> None:
        if self.tiles < 1 or self.world_km <= 0 or self.worlds_per_row < 1 or not self.landscapes:
            raise ValueError(f"an atlas needs tiles ≥ 1, world_km > 0, worlds_per_row ≥ 1: {self}")


@dataclass(frozen=True)
class AtlasWorld:
    """One world of an atlas, the box of z15 tiles it may fill (columns and rows inclusive), and
    the tiles it is expected to fill: its area over a tile's, as the builder keeps the tiles at
    least half covered."""

    index: int
    spec: WorldSpec
    cols: tuple[int, int]
    rows: tuple[int, int]
    tiles: int


def _tile_box(spec: WorldSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """Columns and rows of the z15 tiles a world touches: its UTM raster's corners in lon/lat
    (grid convergence turns it up to ~2° off true north in this atlas)."""
    gt = spec.geotransform
    x = gt[0] + np.array([0, spec.width_px, spec.width_px, 0]) * gt[1]
    y = gt[3] + np.array([0, 0, spec.height_px, spec.height_px]) * gt[5]
    lon, lat = Transformer.from_crs(spec.epsg, 4326, always_xy=True).transform(x, y)
    nw = GRID.tile_at(float(np.min(lon)), float(np.max(lat)), ZOOM)
    se = GRID.tile_at(float(np.max(lon)), float(np.min(lat)), ZOOM)
    return (nw.col, se.col), (nw.row, se.row)


def plan_atlas(spec: AtlasSpec) -> list[AtlasWorld]:
    """The worlds of an atlas, in build order, until they are expected to fill `spec.tiles`."""
    rng = seeded_rng(spec.seed, "atlas")
    order: list[Landscape] = []
    size_deg = GRID.size_deg(ZOOM)
    worlds: list[AtlasWorld] = []
    total = 0
    lat_south = spec.south
    while total < spec.tiles:
        row_top = lat_south
        lon_west = spec.west
        for _ in range(spec.worlds_per_row):
            if total >= spec.tiles:
                break
            m_lon, m_lat = (float(v) for v in metres_per_degree(lat_south))
            half_lon = spec.world_km * 500.0 / m_lon
            half_lat = spec.world_km * 500.0 / m_lat
            world = WorldSpec(
                width_m=spec.world_km * 1000.0,
                height_m=spec.world_km * 1000.0,
                gsd_m=spec.gsd_m,
                seed=int(rng.integers(1, 2**31)),
                centre_lon=lon_west + half_lon,
                centre_lat=lat_south + half_lat,
                landscape=_next_landscape(spec.landscapes, len(worlds), order, rng),
            )
            cols, rows = _tile_box(world)
            tile_w, tile_h = ground_size_m(
                GRID, GRID.tile_at(world.centre_lon, world.centre_lat, ZOOM)
            )
            tiles = max(1, round(world.width_m * world.height_m / (tile_w * tile_h)))
            worlds.append(AtlasWorld(len(worlds), world, cols, rows, tiles))
            total += tiles
            lon_west = (cols[1] + 2) * size_deg - 180.0  # one empty tile column between worlds
            row_top = max(row_top, 180.0 - rows[0] * size_deg)
        lat_south = row_top + size_deg  # one empty tile row between rows of worlds
    return worlds


def _next_landscape(
    kinds: tuple[Landscape, ...], index: int, order: list[Landscape], rng: np.random.Generator
) -> Landscape:
    """Landscapes in shuffled rounds of every kind: any run of worlds is as mixed as it can be."""
    if index == len(order):
        order.extend(kinds[i] for i in rng.permutation(len(kinds)))
    return order[index]


@dataclass
class AtlasReport:
    """What a build did: worlds built now or before, tiles written now, seconds per step."""

    worlds: int
    built: list[int] = field(default_factory=list)
    tiles_written: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"render": 0.0, "tiles": 0.0})


def stamp_path(out: Path) -> Path:
    """The atlas's build record beside its SQLite: spec, worlds and which are done."""
    return out.with_name(out.name + ".atlas.json")


def build_atlas(spec: AtlasSpec, out: Path, scratch: Path | None = None) -> AtlasReport:
    """Build (or resume) the atlas into `out`: each world rendered on each date into a GeoTIFF in
    `scratch`, warped into tiles with the gallery builder, then deleted."""
    worlds = plan_atlas(spec)
    wanted = {"spec": _plain(asdict(spec)), "worlds": [_world_record(w) for w in worlds]}
    path = stamp_path(out)
    stamp = json.loads(path.read_text()) if path.exists() else {}
    if stamp and out.exists() and {k: stamp.get(k) for k in wanted} != wanted:
        raise ValueError(f"{out} holds another atlas: delete it and {path.name} first")
    if out.exists() and not stamp:
        raise ValueError(f"{out} exists but is not an atlas this code built: delete it first")
    done = set(stamp.get("done", [])) if out.exists() else set()
    report = AtlasReport(len(worlds))
    progress = Progress(f"atlas {out.name}", len(worlds) - len(done), "worlds")
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        for world in worlds:
            if world.index in done:
                continue
            for time_, season in spec.dates:
                t0 = time.perf_counter()
                tif = write_world(world.spec, Path(tmp) / f"w{world.index}_{season}.tif", season)
                t1 = time.perf_counter()
                built = build_gallery([tif], out, grid="ge", zoom=ZOOM, time=time_)
                tif.unlink()
                report.seconds["render"] += t1 - t0
                report.seconds["tiles"] += time.perf_counter() - t1
                report.tiles_written += built.written
            done.add(world.index)
            report.built.append(world.index)
            write_json(path, {**wanted, "done": sorted(done)})
            progress.advance()
    return report


def _plain(record: dict) -> dict:
    """A record as JSON reads it back (tuples as lists, enums as their values)."""
    return json.loads(json.dumps(record))


def _world_record(world: AtlasWorld) -> dict:
    return {
        "index": world.index,
        "spec": _plain(asdict(world.spec)),
        "cols": list(world.cols),
        "rows": list(world.rows),
        "tiles": world.tiles,
    }
