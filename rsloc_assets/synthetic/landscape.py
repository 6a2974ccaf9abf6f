"""The synthetic landscape: fields, forests, rivers, roads and settlements of a `WorldSpec`.

Geometry is drawn once per spec; a season only changes appearance (`synthetic.seasons`), so an
autumn query lies on exactly the same ground as the summer gallery. A spec's `Landscape` picks the
kind of country (farmland, bocage, prairie, forest, steppe, desert, hills, lakes, suburbs) through
one table of `LandscapeProfile`s, so a large gallery of many worlds is not one texture.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
from pyproj import Transformer

log = logging.getLogger(__name__)

# Land-cover classes of `World.cover`. GRASS is unfenced natural grassland (steppe), BARE is rock
# or dry earth, SAND is dunes and beaches.
FIELD, FOREST, TREES, HEDGE, MARGIN, TRACK, WATER, BUILT, PAVED, GRASS, BARE, SAND = range(12)

CROPS = ("wheat", "barley", "maize", "rapeseed", "sugar_beet", "sunflower", "grassland", "fallow")
# Shares of CROPS: French open-field farming, pasture country, the US Midwest-like prairie, dry
# farming, irrigated oasis plots.
_CROP_SHARE = (0.30, 0.12, 0.15, 0.12, 0.06, 0.05, 0.13, 0.07)
_PASTURE_SHARE = (0.16, 0.08, 0.14, 0.06, 0.02, 0.00, 0.46, 0.08)
_PRAIRIE_SHARE = (0.34, 0.08, 0.26, 0.12, 0.04, 0.12, 0.02, 0.02)
_DRY_SHARE = (0.36, 0.22, 0.00, 0.04, 0.00, 0.16, 0.06, 0.16)
_OASIS_SHARE = (0.22, 0.12, 0.16, 0.00, 0.00, 0.00, 0.40, 0.10)


class Landscape(StrEnum):
    """The kind of country a world shows; its parameters are `PROFILES[landscape]`."""

    FARMLAND = "farmland"
    BOCAGE = "bocage"
    PRAIRIE = "prairie"
    FOREST = "forest"
    STEPPE = "steppe"
    DESERT = "desert"
    HILLS = "hills"
    LAKES = "lakes"
    SUBURBS = "suburbs"


class Ground(StrEnum):
    """The palette of a world's grass and open ground (`synthetic.seasons` colours it by date)."""

    TEMPERATE = "temperate"
    DRY = "dry"
    SAND = "sand"


@dataclass(frozen=True)
class LandscapeProfile:
    """What makes a landscape kind: field sizes, land-cover shares, settlement and water, relief.

    The defaults are the French-style farmland the demo world has always had.
    """

    region_m: float = 2500.0  # farm region (Voronoi cell) size; each region has its own grid
    strip_m: tuple[float, float] = (80.0, 160.0)  # strip unit width; a strip merges 1-3 units
    plot_m: tuple[float, float] = (200.0, 800.0)  # plot length along a strip
    crops: tuple[float, ...] = _CROP_SHARE  # share of each of CROPS among the fields
    forest_pct: int = 18  # % of the land under forest (an int: the quantile stays exact)
    conifer: float = 0.25  # share of forest parcels planted with conifers
    hedges: float = 1.0  # factor on each farm region's hedge odds
    fields: float = 1.0  # share of parcels cultivated; the rest is open ground
    oasis_m: float = 0.0  # parcels within this distance of a town are cultivated anyway
    towns_per_100km2: float = 0.0  # towns on a world (at least one)
    town_m: float = 800.0  # largest town radius
    village_km2: float = 15.0  # km² per village (at least two)
    farmstead_km2: float = 6.0  # km² per farmstead (at least three)
    minor_roads: float = 1.0  # factor on the number of minor roads (one per 4 km²)
    suburbs: float = 0.0  # share of the land under suburban housing grids
    lakes_per_100km2: float = 0.0
    coast: float = 0.0  # odds of a sea along one edge of the world
    rivers: bool = True
    relief_m: float = 0.0  # standard deviation of terrain height; 0 is flat (no heightmap)
    ground: Ground = Ground.TEMPERATE


PROFILES: dict[Landscape, LandscapeProfile] = {
    Landscape.FARMLAND: LandscapeProfile(),
    # Small pasture fields walled by hedges, more woods, dense hamlets (Normandy, Brittany).
    Landscape.BOCAGE: LandscapeProfile(
        region_m=1500.0,
        strip_m=(35.0, 70.0),
        plot_m=(80.0, 250.0),
        crops=_PASTURE_SHARE,
        forest_pct=22,
        hedges=4.0,
        village_km2=10.0,
        farmstead_km2=3.0,
        relief_m=20.0,
    ),
    # Fields 3× the farmland's both ways, hardly a hedge or wood, villages far apart.
    Landscape.PRAIRIE: LandscapeProfile(
        region_m=6000.0,
        strip_m=(240.0, 480.0),
        plot_m=(600.0, 2000.0),
        crops=_PRAIRIE_SHARE,
        forest_pct=4,
        hedges=0.15,
        village_km2=40.0,
        farmstead_km2=12.0,
        minor_roads=0.7,
    ),
    # Mostly forest on low hills, fields in the clearings, a few villages.
    Landscape.FOREST: LandscapeProfile(
        crops=_PASTURE_SHARE,
        forest_pct=78,
        conifer=0.45,
        hedges=0.5,
        town_m=500.0,
        village_km2=50.0,
        farmstead_km2=20.0,
        minor_roads=0.6,
        relief_m=40.0,
    ),
    # Dry grassland, a third of it in a few large faint fields, almost no trees.
    Landscape.STEPPE: LandscapeProfile(
        region_m=5000.0,
        strip_m=(200.0, 400.0),
        plot_m=(500.0, 1600.0),
        crops=_DRY_SHARE,
        forest_pct=1,
        hedges=0.0,
        fields=0.3,
        town_m=600.0,
        village_km2=60.0,
        farmstead_km2=25.0,
        minor_roads=0.5,
        relief_m=12.0,
        ground=Ground.DRY,
    ),
    # Dunes and rock, no rivers; plots and palms only around the oasis town.
    Landscape.DESERT: LandscapeProfile(
        region_m=800.0,
        strip_m=(25.0, 50.0),
        plot_m=(60.0, 180.0),
        crops=_OASIS_SHARE,
        forest_pct=0,
        fields=0.0,
        oasis_m=250.0,
        town_m=500.0,
        village_km2=150.0,
        farmstead_km2=80.0,
        minor_roads=0.3,
        rivers=False,
        relief_m=18.0,
        ground=Ground.SAND,
    ),
    # The farmland on rolling hills, forest taking the steep slopes.
    Landscape.HILLS: LandscapeProfile(forest_pct=30, conifer=0.35, hedges=1.2, relief_m=110.0),
    # Farmland and forest on a glacial plain strewn with lakes, half the worlds on a sea coast.
    Landscape.LAKES: LandscapeProfile(
        forest_pct=28, conifer=0.4, lakes_per_100km2=30.0, coast=0.5, relief_m=12.0
    ),
    # Several towns and housing grids over ~45 % of the land, villages close together.
    Landscape.SUBURBS: LandscapeProfile(
        forest_pct=12,
        towns_per_100km2=3.0,
        town_m=1100.0,
        village_km2=6.0,
        farmstead_km2=12.0,
        minor_roads=1.5,
        suburbs=0.45,
    ),
}


@dataclass(frozen=True)
class WorldSpec:
    """A synthetic world: size on the ground, metres per pixel, seed, centre (WGS84), landscape.

    The raster is north-up in the UTM zone of the centre, placed so its centre is that point.
    """

    width_m: float
    height_m: float
    gsd_m: float = 4.0
    seed: int = 7
    centre_lon: float = 2.35
    centre_lat: float = 47.9
    landscape: Landscape = Landscape.FARMLAND

    def __post_init__(self) -> None:
        if not self.gsd_m > 0 or not min(self.width_m, self.height_m) >= 100 * self.gsd_m:
            raise ValueError(f"a world needs gsd_m > 0 and at least 100 px a side: {self}")
        if not (-180 < self.centre_lon < 180 and -80 < self.centre_lat < 84):
            raise ValueError(f"world centre outside the UTM domain: {self}")
        if self.landscape not in PROFILES:
            kinds = ", ".join(Landscape)
            raise ValueError(f"unknown landscape {self.landscape!r}: expected one of {kinds}")
        object.__setattr__(self, "landscape", Landscape(self.landscape))  # a str from JSON

    @classmethod
    def demo(cls) -> WorldSpec:
        """17 km × 20 km at 4 m/px: 320 whole z15 tiles of RSLoc's geographic grid (20 × 16)."""
        return cls(width_m=17_000.0, height_m=20_000.0, gsd_m=4.0)

    @classmethod
    def small(cls) -> WorldSpec:
        """7 km × 9 km at 8 m/px, for fast tests."""
        return cls(width_m=7_000.0, height_m=9_000.0, gsd_m=8.0)

    @property
    def profile(self) -> LandscapeProfile:
        """The parameters of this world's landscape kind."""
        return PROFILES[self.landscape]

    @property
    def width_px(self) -> int:
        return round(self.width_m / self.gsd_m)

    @property
    def height_px(self) -> int:
        return round(self.height_m / self.gsd_m)

    @property
    def epsg(self) -> int:
        """EPSG code of the WGS84 / UTM zone holding the centre."""
        zone = int((self.centre_lon + 180.0) // 6.0) + 1
        return (32600 if self.centre_lat >= 0 else 32700) + zone

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL geotransform (pixel corners) of the north-up world raster in UTM metres."""
        cx, cy = _to_utm(self.epsg).transform(self.centre_lon, self.centre_lat)
        g = self.gsd_m
        return (cx - self.width_px * g / 2, g, 0.0, cy + self.height_px * g / 2, 0.0, -g)


@functools.cache
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


# Roof palette indices (see `seasons._ROOFS`) and their odds, for houses and for farm sheds.
_HOUSE_ROOFS = (np.array([1, 2, 3, 4, 5]), np.array([0.15, 0.25, 0.1, 0.35, 0.15]))
_BARN_ROOFS = (np.array([5, 6, 7, 8]), np.array([0.2, 0.3, 0.2, 0.3]))


@dataclass(frozen=True, eq=False)
class World:
    """A world's geometry, drawn once: per-pixel field ids, land cover, roofs, roads, textures,
    and terrain heights where the landscape has relief."""

    spec: WorldSpec
    field_id: np.ndarray  # int32 (H, W): field parcel label of each pixel
    crop: np.ndarray  # int8 (n_labels,): index into CROPS of each field label
    conifer: np.ndarray  # bool (n_labels,): parcels planted with conifers where forested
    cover: np.ndarray  # uint8 (H, W): land-cover class (FIELD, FOREST, ...)
    roof: np.ndarray  # uint8 (H, W): roof palette index, 0 where no building
    main_roads: np.ndarray  # uint8 (H, W): main-road coverage 0..255
    minor_roads: np.ndarray  # uint8 (H, W): minor-road and street coverage 0..255
    rows: np.ndarray  # float32 (H, W): in-field row/furrow pattern in [-1, 1]
    soil: np.ndarray  # float32 (H, W): unit-variance patchiness (~30-150 m)
    grain: np.ndarray  # float32 (H, W): unit-variance fine texture (tree crowns, gardens)
    tint: np.ndarray  # float32 (H, W): 0..1 broadleaf tint, garden/yard mix
    height: np.ndarray | None = None  # float32 (H, W): terrain metres; None on flat worlds


def seeded_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator for one named stream of a seed, stable across processes and Python versions."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def value_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell_px: float,
    octaves: int = 1,
    persistence: float = 0.5,
) -> np.ndarray:
    """Multi-octave value noise, zero mean and unit variance, with features ~`cell_px` wide."""
    h, w = shape
    step = max(1.0, cell_px / 2 ** (octaves - 1) / 4.0)
    gh, gw = math.ceil(h / step), math.ceil(w / step)
    acc = np.zeros((gh, gw), np.float32)
    amp = 1.0
    for o in range(octaves):
        c = max(cell_px / 2**o / step, 1.0)
        nh, nw = math.ceil(gh / c) + 3, math.ceil(gw / c) + 3
        grid = rng.standard_normal((nh, nw), dtype=np.float32)
        up = cv2.resize(grid, (round(nw * c), round(nh * c)), interpolation=cv2.INTER_CUBIC)
        o0 = int(c)
        acc += amp * up[o0 : o0 + gh, o0 : o0 + gw]
        amp *= persistence
    if step > 1.0:
        acc = cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR)
    acc -= acc.mean()
    acc /= acc.std() + 1e-6
    return acc


def _wander(
    rng: np.random.Generator,
    start: np.ndarray,
    target: np.ndarray,
    step: float,
    turn: float,
    meander: float = 0.0,
    wavelength: float = 1.0,
) -> np.ndarray:
    """A curving path (N×2 pixel points) from `start` steered towards `target`.

    The heading drifts randomly (`turn`, radians per step) and optionally swings sinusoidally
    (`meander` radians, `wavelength` pixels); the pull to the target tightens as it nears.
    """
    start = np.asarray(start, np.float64)
    target = np.asarray(target, np.float64)
    n = int(2.5 * float(np.hypot(*(target - start))) / step) + 2
    kicks = rng.normal(0.0, turn, n)
    phase = rng.uniform(0.0, 2 * math.pi)
    pts = [start]
    p = start.copy()
    heading = math.atan2(target[1] - start[1], target[0] - start[0])
    curv = 0.0
    for i in range(n):
        dx, dy = target - p
        dist = math.hypot(dx, dy)
        if dist < step:
            pts.append(target)
            break
        pull = min(0.9, 0.06 + 3.0 * step / dist)
        curv = 0.8 * curv + kicks[i]
        heading += curv + pull * math.remainder(math.atan2(dy, dx) - heading, 2 * math.pi)
        h = heading + meander * math.sin(2 * math.pi * i * step / wavelength + phase)
        p = p + step * np.array([math.cos(h), math.sin(h)])
        pts.append(p)
    return np.array(pts)


def _edge_point(rng: np.random.Generator, w: int, h: int, side: int) -> np.ndarray:
    """A random point just outside side 0..3 (west, east, north, south) of a w×h raster."""
    m = 0.02 * max(w, h)
    if side < 2:
        return np.array([-m if side == 0 else w + m, rng.uniform(0.1, 0.9) * h])
    return np.array([rng.uniform(0.1, 0.9) * w, -m if side == 2 else h + m])


def _tangent(line: np.ndarray, k: int) -> np.ndarray:
    """Unit direction of a polyline at vertex `k`."""
    d = line[min(k + 1, len(line) - 1)] - line[max(k - 1, 0)]
    return d / max(float(np.hypot(*d)), 1e-9)


def _draw_lines(
    canvas: np.ndarray, lines: list[np.ndarray], width_px: float, value: int, aa: bool
) -> None:
    """Draw polylines of real-valued pixel points at `width_px` (anti-aliased coverage if `aa`)."""
    thickness = max(1, round(width_px))
    if aa:
        value = round(value * min(1.0, width_px / thickness))
    pts = [np.round(ln * 8).astype(np.int32) for ln in lines]
    cv2.polylines(canvas, pts, False, value, thickness, cv2.LINE_AA if aa else cv2.LINE_8, shift=3)


def _fill_polys(canvas: np.ndarray, polys: list[np.ndarray], value: int) -> None:
    cv2.fillPoly(canvas, [np.round(p * 8).astype(np.int32) for p in polys], value, shift=3)


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """An irregular closed polygon around `centre` of mean radius `radius` (pixels)."""
    theta = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    wobble = np.zeros_like(theta)
    for f in (1, 2, 3, 5, 8):
        wobble += rng.normal(0.0, 0.2 / f) * np.cos(f * theta + rng.uniform(0, 2 * math.pi))
    r = radius * (1.0 + wobble)
    return np.stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)], axis=1)


@dataclass
class _Ground:
    """Settlement layers being drawn: roof palette indices, gardens, paved ground, new streets."""

    roof: np.ndarray
    built: np.ndarray
    paved: np.ndarray
    streets: list[np.ndarray] = field(default_factory=list)

    def buildings(
        self, rng: np.random.Generator, boxes: np.ndarray, roofs: tuple[np.ndarray, np.ndarray]
    ) -> None:
        """Two-slope roofs for boxes (cx, cy, length, width, angle_deg): box, then shaded half."""
        if len(boxes) == 0:
            return
        colours = rng.choice(roofs[0], size=len(boxes), p=roofs[1])
        half = boxes.copy()
        a = np.radians(boxes[:, 4])
        half[:, 0] -= np.sin(a) * boxes[:, 3] / 4
        half[:, 1] += np.cos(a) * boxes[:, 3] / 4
        half[:, 3] = boxes[:, 3] / 2
        for layer, values in ((boxes, colours), (half, colours + 8)):
            for (cx, cy, length, width, angle), v in zip(layer, values, strict=True):
                corners = cv2.boxPoints(((cx, cy), (length, width), angle))
                cv2.fillPoly(self.roof, [np.round(corners * 8).astype(np.int32)], int(v), shift=3)


def _houses_along(
    rng: np.random.Generator,
    line: np.ndarray,
    centre: np.ndarray,
    radius: float,
    gsd: float,
    density: float,
    lot_m: float,
) -> np.ndarray:
    """Houses (cx, cy, length, width, angle) fronting both sides of `line`, thinning with radius."""
    seg = np.diff(line, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    keep = seg_len > 1e-6
    if not keep.any():
        return np.empty((0, 5))
    seg, seg_len = seg[keep], seg_len[keep]
    s = np.concatenate([[0.0], np.cumsum(seg_len)])
    pts = np.vstack([line[:1], line[1:][keep]])
    lots = np.arange(rng.uniform(0, lot_m / gsd), s[-1], lot_m / gsd)
    x, y = np.interp(lots, s, pts[:, 0]), np.interp(lots, s, pts[:, 1])
    seg_i = np.clip(np.searchsorted(s, lots) - 1, 0, len(seg) - 1)
    tangent = seg[seg_i] / seg_len[seg_i, None]
    r = np.hypot(x - centre[0], y - centre[1]) / radius
    out = []
    for side in (-1.0, 1.0):
        sel = rng.random(len(lots)) < density * np.clip(1.2 - r, 0.0, 1.0)
        m = int(sel.sum())
        length = rng.uniform(0.7, 0.95, m) * lot_m / gsd
        width = rng.uniform(9.0, 13.0, m) / gsd
        off = (rng.uniform(3.0, 10.0, m) / gsd + width / 2) * side
        cx = x[sel] - tangent[sel, 1] * off
        cy = y[sel] + tangent[sel, 0] * off
        angle = np.degrees(np.arctan2(tangent[sel, 1], tangent[sel, 0]))
        out.append(np.stack([cx, cy, length, width, angle], axis=1))
    return np.vstack(out)


def _houses_scattered(
    rng: np.random.Generator,
    centre: np.ndarray,
    radius: float,
    gsd: float,
    per_ha: float,
    angle_deg: float,
) -> np.ndarray:
    """Back-lot houses scattered over a settlement, denser at its heart, on its street grid."""
    n = int(rng.poisson(per_ha * math.pi * (radius * gsd) ** 2 / 1e4))
    r = 0.85 * radius * np.sqrt(rng.random(n)) * rng.uniform(0.6, 1.0, n)
    phi = rng.uniform(0.0, 2 * math.pi, n)
    boxes = np.empty((n, 5))
    boxes[:, 0] = centre[0] + r * np.cos(phi)
    boxes[:, 1] = centre[1] + r * np.sin(phi)
    boxes[:, 2] = rng.uniform(10.0, 18.0, n) / gsd
    boxes[:, 3] = rng.uniform(8.0, 12.0, n) / gsd
    boxes[:, 4] = angle_deg + rng.choice([0.0, 90.0], n) + rng.normal(0.0, 5.0, n)
    return boxes


def build_world(spec: WorldSpec) -> World:
    """Generate a world's geometry and fixed textures from its spec (deterministic in the seed)."""
    t0 = time.perf_counter()
    prof = spec.profile
    g = spec.gsd_m
    h, w = spec.height_px, spec.width_px
    area_km2 = spec.width_m * spec.height_m / 1e6

    height, erg = _relief(seeded_rng(spec.seed, "relief"), (h, w), g, prof)
    parcels = _fields(seeded_rng(spec.seed, "fields"), w, h, g, prof)
    field_id, crop = parcels.labels, parcels.crop
    cover = np.zeros((h, w), np.uint8)

    rng = seeded_rng(spec.seed, "forest")
    wood = value_noise(rng, (h, w), 3500.0 / g, octaves=6, persistence=0.55)
    if height is not None:
        wood += _STEEP_WOOD * _steepness(height, g)
    cut = float(np.quantile(wood[::5, ::5], (100 - prof.forest_pct) / 100))
    counts = np.bincount(field_id.ravel(), minlength=len(crop))
    mean_wood = np.bincount(field_id.ravel(), weights=wood.ravel(), minlength=len(crop))
    mean_wood /= np.maximum(counts, 1)
    forest = (mean_wood > cut)[field_id] | (wood > cut + 0.35)
    conifer = rng.random(len(crop)) < prof.conifer
    cover[forest] = FOREST
    del wood, forest

    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= field_id[:, 1:] != field_id[:, :-1]
    edge[1:, :] |= field_id[1:, :] != field_id[:-1, :]
    edge &= cover == FIELD
    rng = seeded_rng(spec.seed, "boundaries")
    kind = np.where(rng.random(len(crop)) < 0.15, TRACK, MARGIN).astype(np.uint8)
    cover[edge] = np.take(kind, field_id[edge])
    cover[parcels.farm_edge & (cover != FOREST)] = TRACK
    # Hedges: runs of a few hundred metres along parcel edges, commoner in bocage farm regions.
    hedge_cut = np.take((1.4 - 2.2 * parcels.hedge_p).astype(np.float32), field_id)
    edge &= value_noise(rng, (h, w), 300.0 / g, octaves=2) > hedge_cut
    edge &= value_noise(rng, (h, w), 40.0 / g) > -1.0
    hedges = cv2.dilate(edge.view(np.uint8), np.ones((max(1, round(7.0 / g)),) * 2, np.uint8))
    cover[(hedges > 0) & (cover != FOREST)] = HEDGE
    del edge, hedges, hedge_cut

    main_lines, minor_lines, junctions = _roads(
        seeded_rng(spec.seed, "roads"), w, h, g, area_km2, prof.minor_roads
    )
    ground = _Ground(*(np.zeros((h, w), np.uint8) for _ in range(3)))
    towns = _settlements(
        seeded_rng(spec.seed, "settlements"),
        ground,
        main_lines,
        minor_lines,
        junctions,
        g,
        area_km2,
        prof,
    )
    cover[ground.built > 0] = BUILT
    cover[ground.paved > 0] = PAVED

    if prof.rivers:
        _rivers(seeded_rng(spec.seed, "rivers"), cover, g, area_km2)
        if height is not None:
            _carve_valleys(height, cover, g, prof.relief_m)
    if prof.fields < 1.0:
        _open_ground(seeded_rng(spec.seed, "open"), cover, parcels, counts, towns, erg, g, prof)
    del erg

    main_roads = np.zeros((h, w), np.uint8)
    minor_roads = np.zeros((h, w), np.uint8)
    _draw_lines(main_roads, main_lines, 9.0 / g, 255, aa=True)
    _draw_lines(minor_roads, minor_lines, 5.0 / g, 255, aa=True)
    _draw_lines(minor_roads, ground.streets, 6.0 / g, 255, aa=True)

    if prof.suburbs > 0:
        _suburbs(
            seeded_rng(spec.seed, "suburbs"),
            cover,
            ground.roof,
            (main_roads, minor_roads),
            parcels,
            towns,
            g,
            prof.suburbs,
        )
    if prof.lakes_per_100km2 > 0:
        n_lakes = prof.lakes_per_100km2 * area_km2 / 100
        _lakes(seeded_rng(spec.seed, "lakes"), cover, ground.roof, height, towns, g, n_lakes)
    if prof.coast > 0:
        _coast(
            seeded_rng(spec.seed, "coast"),
            cover,
            ground.roof,
            (main_roads, minor_roads),
            towns,
            g,
            prof.coast,
        )

    rng = seeded_rng(spec.seed, "textures")
    soil = 0.75 * value_noise(rng, (h, w), 150.0 / g, octaves=3)
    soil += 0.45 * value_noise(rng, (h, w), 30.0 / g, octaves=2)
    grain = value_noise(rng, (h, w), 9.0 / g, octaves=2, persistence=0.6)
    tint = 0.7 * value_noise(rng, (h, w), 1500.0 / g, octaves=3)
    tint += 0.5 * value_noise(rng, (h, w), 150.0 / g, octaves=2)
    tint *= 0.2
    tint += 0.5
    np.clip(tint, 0.0, 1.0, out=tint)
    cover[(cover == BUILT) & (soil > 0.8) & (ground.roof == 0)] = TREES

    world = World(
        spec=spec,
        field_id=field_id,
        crop=crop,
        conifer=conifer,
        cover=cover,
        roof=ground.roof,
        main_roads=main_roads,
        minor_roads=minor_roads,
        rows=parcels.rows,
        soil=soil,
        grain=grain,
        tint=tint,
        height=height,
    )
    for arr in vars(world).values():
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False  # shared by every render of the cached world
    log.info(
        "built %s world %d×%d px, %d fields, in %.1f s",
        spec.landscape,
        w,
        h,
        len(crop),
        time.perf_counter() - t0,
    )
    return world


@functools.lru_cache(maxsize=2)
def world(spec: WorldSpec) -> World:
    """The world of `spec`, built once per process and shared by every render."""
    return build_world(spec)


@dataclass(frozen=True, eq=False)
class _Parcels:
    """The field partition: label map, in-field rows, per-label crop and hedge share, farm edges."""

    labels: np.ndarray  # int32 (H, W)
    rows: np.ndarray  # float32 (H, W) in [-1, 1]
    crop: np.ndarray  # int8 (n_labels,)
    hedge_p: np.ndarray  # float64 (n_labels,): how hedged the field's farm region is, 0..1
    farm_edge: np.ndarray  # bool (H, W): boundaries between farm regions
    region: np.ndarray  # int64 (n_labels,): farm region of each field label


def _fields(
    rng: np.random.Generator, w: int, h: int, gsd: float, prof: LandscapeProfile
) -> _Parcels:
    """Field parcels: farm regions (Voronoi cells) cut into gently bent strips and plots.

    Each region has its own orientation; a strip is 1-3 units of `prof.strip_m` wide, a plot
    `prof.plot_m` long (farmland: ~2.5 km regions, strips 80-480 m, plots 200-800 m).
    """
    region = prof.region_m / gsd
    nx, ny = math.ceil(w / region), math.ceil(h / region)
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1) + 0.5
    centres = (centres + rng.uniform(-0.35, 0.35, centres.shape)) * region
    centres = np.minimum(centres, [w - 1, h - 1])
    n_reg = len(centres)
    marks = np.ones((h, w), np.uint8)
    cx, cy = centres[:, 0].astype(np.int64), centres[:, 1].astype(np.int64)
    marks[cy, cx] = 0
    _, vor = cv2.distanceTransformWithLabels(
        marks, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    reg_of = np.zeros(int(vor.max()) + 1, np.int32)
    reg_of[vor[cy, cx]] = np.arange(n_reg)
    reg = np.take(reg_of, vor)
    del vor, marks
    farm_edge = np.zeros((h, w), bool)
    farm_edge[:, 1:] |= reg[:, 1:] != reg[:, :-1]
    farm_edge[1:, :] |= reg[1:, :] != reg[:-1, :]

    # Orientations drift smoothly across the world; a region may turn its grid a right angle.
    wave = rng.uniform(0.0, 2 * math.pi, 3)
    drift = 0.5 * np.sin(centres[:, 0] / (2.2 * region) + wave[1])
    drift += 0.5 * np.sin(centres[:, 1] / (2.7 * region) + wave[2])
    theta = wave[0] + drift + rng.choice([0.0, math.pi / 2], n_reg, p=[0.7, 0.3])
    theta += rng.normal(0.0, 0.12, n_reg)
    unit = rng.uniform(*prof.strip_m, n_reg) / gsd
    reach = 2.0 * region
    n_j = int(reach / (prof.strip_m[0] / gsd)) + 1
    n_i = int(reach / (prof.plot_m[0] / gsd)) + 1
    groups, cols = 2 * n_j + 1, 2 * n_i + 1
    merge = rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2], size=(n_reg, groups))
    strip = np.stack([np.repeat(np.arange(groups), m)[:groups] for m in merge])
    length = rng.uniform(*prof.plot_m, (n_reg, groups)) / gsd
    start = rng.uniform(0.0, 1.0, (n_reg, groups)) * length

    f32 = np.float32
    dx = np.arange(w, dtype=f32)[None, :] - np.take(centres[:, 0].astype(f32), reg)
    dy = np.arange(h, dtype=f32)[:, None] - np.take(centres[:, 1].astype(f32), reg)
    c, s = np.take(np.cos(theta).astype(f32), reg), np.take(np.sin(theta).astype(f32), reg)
    u = dx * c + dy * s
    v = dy * c - dx * s
    del dx, dy, c, s
    u += (25.0 / gsd) * value_noise(rng, (h, w), 1500.0 / gsd, octaves=2)
    v += (25.0 / gsd) * value_noise(rng, (h, w), 1500.0 / gsd, octaves=2)

    j = np.floor(v / np.take(unit.astype(f32), reg)).astype(np.int32)
    j += n_j
    np.clip(j, 0, groups - 1, out=j)
    cell = reg * groups
    cell += np.take(strip.ravel(), reg * groups + j)
    del j
    i = np.floor((u + np.take(start.ravel().astype(f32), cell)) / np.take(length.ravel(), cell))
    i = i.astype(np.int32)
    i += n_i
    np.clip(i, 0, cols - 1, out=i)
    cell *= cols
    cell += i
    del i
    used = np.bincount(cell.ravel(), minlength=n_reg * groups * cols) > 0
    compact = (np.cumsum(used) - 1).astype(np.int32)
    labels = np.take(compact, cell)
    del cell
    field_reg = np.flatnonzero(used) // (groups * cols)
    n_lab = len(field_reg)

    crop = rng.choice(len(CROPS), size=n_lab, p=prof.crops).astype(np.int8)
    hedge_p = np.minimum(prof.hedges * rng.beta(0.8, 3.0, n_reg), 1.0)[field_reg]
    period = np.maximum(rng.uniform(12.0, 30.0, n_lab), 2.6 * gsd) / gsd
    across = rng.random(n_lab) < 0.2
    coord = np.where(np.take(across, labels), u, v)
    del u, v
    coord *= np.take((2 * math.pi / period).astype(f32), labels)
    coord += np.take(rng.uniform(0.0, 2 * math.pi, n_lab).astype(f32), labels)
    return _Parcels(labels, np.sin(coord, out=coord), crop, hedge_p, farm_edge, field_reg)


def _roads(
    rng: np.random.Generator, w: int, h: int, gsd: float, area_km2: float, minor_factor: float
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Main roads crossing the world edge to edge, minor roads (`minor_factor` per 4 km²)
    branching off them.

    Returns main and minor polylines (pixels) and the junctions where minor roads leave main ones.
    """
    main = []
    for _ in range(max(2, round(math.sqrt(area_km2) / 4))):
        a, b = rng.choice(4, size=2, replace=False)
        start, end = _edge_point(rng, w, h, a), _edge_point(rng, w, h, b)
        main.append(_wander(rng, start, end, 25.0 / gsd, 0.004))
    minor: list[np.ndarray] = []
    junctions = []
    for _ in range(max(6, round(minor_factor * area_km2 / 4))):
        if rng.random() < 0.75:
            from_main = rng.random() < 0.6 or not minor
            pool = main if from_main else minor
            line = pool[rng.integers(len(pool))]
            k = int(rng.integers(1, len(line) - 1)) if len(line) > 2 else 0
            start = line[k]
            t = _tangent(line, k)
            heading = math.atan2(t[1], t[0]) + rng.choice([-1, 1]) * rng.uniform(1.0, 2.1)
            if from_main and 0 <= start[0] < w and 0 <= start[1] < h:
                junctions.append(start)
        else:
            start = rng.uniform([0, 0], [w, h])
            heading = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(1000.0, 5000.0) / gsd
        end = start + length * np.array([math.cos(heading), math.sin(heading)])
        minor.append(_wander(rng, start, end, 25.0 / gsd, 0.012))
    return main, minor, junctions


def _settlements(
    rng: np.random.Generator,
    ground: _Ground,
    main: list[np.ndarray],
    minor: list[np.ndarray],
    junctions: list[np.ndarray],
    gsd: float,
    area_km2: float,
    prof: LandscapeProfile,
) -> list[tuple[np.ndarray, float]]:
    """A small town on a main road near the centre (more towns on dense kinds), villages at road
    junctions, farmsteads along minor roads. Returns each town's centre and radius (pixels)."""
    h, w = ground.roof.shape
    mid = np.array([w / 2, h / 2]) + rng.uniform(-0.15, 0.15, 2) * [w, h]
    pts = np.vstack(main)
    inner = (np.abs(pts[:, 0] - w / 2) < 0.3 * w) & (np.abs(pts[:, 1] - h / 2) < 0.3 * h)
    cand = pts[inner] if inner.any() else pts
    town = cand[np.argmin(np.hypot(*(cand - mid).T))]
    town_r = min(prof.town_m, 0.08 * min(w, h) * gsd) / gsd
    _town(rng, ground, town, town_r, main, gsd)
    towns = [(town, town_r)]
    _more_towns(rng, ground, towns, main, minor, gsd, round(prof.towns_per_100km2 * area_km2 / 100))

    sites: list[np.ndarray] = []
    pool = [*junctions, *(ln[len(ln) // 2] for ln in minor)]
    for i in rng.permutation(len(pool)):
        p = pool[i]
        if not (0 <= p[0] < w and 0 <= p[1] < h) or any(
            np.hypot(*(p - c)) < r + 1500 / gsd for c, r in towns
        ):
            continue
        if all(np.hypot(*(p - q)) > 1800.0 / gsd for q in sites):
            sites.append(p)
        if len(sites) >= max(2, round(area_km2 / prof.village_km2)):
            break
    for centre in sites:
        radius = rng.uniform(120.0, 260.0) / gsd
        _fill_polys(ground.built, [_blob(rng, centre, radius)], 1)
        near = [ln for ln in main + minor if np.min(np.hypot(*(ln - centre).T)) < radius]
        lanes = []
        for _ in range(rng.integers(2, 5)):
            a = rng.uniform(0, 2 * math.pi)
            end = centre + radius * rng.uniform(0.6, 0.95) * np.array([math.cos(a), math.sin(a)])
            lanes.append(_wander(rng, centre, end, 12.0 / gsd, 0.03))
        ground.streets.extend(lanes)
        boxes = [_houses_along(rng, ln, centre, radius, gsd, 0.85, 16.0) for ln in near + lanes]
        t = _tangent(near[0], 0) if near else np.array([1.0, 0.0])
        boxes.append(
            _houses_scattered(rng, centre, radius, gsd, 3.0, math.degrees(math.atan2(t[1], t[0])))
        )
        ground.buildings(rng, np.vstack(boxes), _HOUSE_ROOFS)

    for _ in range(max(3, round(area_km2 / prof.farmstead_km2))):
        line = minor[rng.integers(len(minor))]
        k = int(rng.integers(len(line)))
        t = _tangent(line, k)
        yard = line[k] + np.array([-t[1], t[0]]) * rng.choice([-1, 1]) * rng.uniform(40, 70) / gsd
        _fill_polys(ground.paved, [_blob(rng, yard, rng.uniform(20.0, 35.0) / gsd)], 1)
        m = int(rng.integers(2, 5))
        boxes = np.empty((m, 5))
        boxes[:, :2] = yard + rng.uniform(-22.0, 22.0, (m, 2)) / gsd
        boxes[:, 2] = rng.uniform(20.0, 45.0, m) / gsd
        boxes[:, 3] = rng.uniform(10.0, 18.0, m) / gsd
        boxes[:, 4] = math.degrees(math.atan2(t[1], t[0])) + rng.choice([0.0, 90.0], m)
        ground.buildings(rng, boxes, _BARN_ROOFS)
        ground.streets.append(np.array([line[k], yard]))
    return towns


def _more_towns(
    rng: np.random.Generator,
    ground: _Ground,
    towns: list[tuple[np.ndarray, float]],
    main: list[np.ndarray],
    minor: list[np.ndarray],
    gsd: float,
    n: int,
) -> None:
    """Grow `towns` to `n` on road points inside the world, each clear of the others."""
    h, w = ground.roof.shape
    pts = np.vstack(main + minor)
    inside = (pts[:, 0] > 0.05 * w) & (pts[:, 0] < 0.95 * w)
    inside &= (pts[:, 1] > 0.05 * h) & (pts[:, 1] < 0.95 * h)
    pts = pts[inside]
    biggest = towns[0][1]
    for _ in range(50 * n):
        if len(towns) >= n or len(pts) == 0:
            break
        centre = pts[rng.integers(len(pts))]
        radius = biggest * rng.uniform(0.55, 1.0)
        if all(np.hypot(*(centre - c)) > r + radius + 500.0 / gsd for c, r in towns):
            _town(rng, ground, centre, radius, main, gsd)
            towns.append((centre, radius))


def _town(
    rng: np.random.Generator,
    ground: _Ground,
    centre: np.ndarray,
    radius: float,
    main: list[np.ndarray],
    gsd: float,
) -> None:
    """A small town: an irregular street grid aligned with its main road, houses along and
    behind the streets, a paved square, and an industrial zone of large sheds on its edge."""
    _fill_polys(ground.built, [_blob(rng, centre, radius)], 1)
    _fill_polys(ground.paved, [_blob(rng, centre, 40.0 / gsd)], 1)
    nearest = min(main, key=lambda ln: float(np.min(np.hypot(*(ln - centre).T))))
    a = _tangent(nearest, int(np.argmin(np.hypot(*(nearest - centre).T))))
    b = np.array([-a[1], a[0]])
    streets = []
    for axis, across in ((a, b), (b, a)):
        offsets = np.cumsum(rng.uniform(80.0, 160.0, int(2.2 * radius * gsd / 80.0)) / gsd)
        for off in offsets[offsets < 2 * radius] - radius:
            half = math.sqrt(max(radius**2 - off**2, 0.0)) * rng.uniform(0.6, 0.95)
            if half < 60.0 / gsd or rng.random() < 0.2:
                continue
            t = np.linspace(-half, half, max(2, int(2 * half * gsd / 10.0)))
            t += rng.uniform(-0.2, 0.2) * half
            bend = np.cumsum(rng.normal(0.0, 0.4 / gsd, len(t)))
            streets.append(centre + off * across + t[:, None] * axis + bend[:, None] * across)
    ground.streets.extend(streets)
    boxes = [_houses_along(rng, ln, centre, radius, gsd, 0.95, 14.0) for ln in streets]
    angle = math.degrees(math.atan2(a[1], a[0]))
    boxes.append(_houses_scattered(rng, centre, radius, gsd, 6.0, angle))
    ground.buildings(rng, np.vstack(boxes), _HOUSE_ROOFS)

    zone_dir = rng.uniform(0, 2 * math.pi)
    zone = centre + 1.05 * radius * np.array([math.cos(zone_dir), math.sin(zone_dir)])
    _fill_polys(ground.paved, [_blob(rng, zone, 170.0 / gsd)], 1)
    ground.streets.append(np.array([centre, zone]))
    gi, gj = np.meshgrid(np.arange(-2, 3), np.arange(-1, 3))
    keep = rng.random(gi.size) < 0.75
    spot = zone + (gi.ravel()[keep, None] * a + gj.ravel()[keep, None] * b - 0.5 * b) * 65.0 / gsd
    boxes = np.empty((len(spot), 5))
    boxes[:, :2] = spot + rng.normal(0.0, 4.0 / gsd, spot.shape)
    boxes[:, 2] = rng.uniform(30.0, 58.0, len(spot)) / gsd
    boxes[:, 3] = rng.uniform(18.0, 40.0, len(spot)) / gsd
    boxes[:, 4] = angle
    ground.buildings(rng, boxes, _BARN_ROOFS)


def _rivers(rng: np.random.Generator, cover: np.ndarray, gsd: float, area_km2: float) -> None:
    """A meandering river edge to edge (plus a tributary on large worlds), broken riparian tree
    strips along them, and a few ponds in the flood plain."""
    h, w = cover.shape
    strip = np.zeros((h, w), np.uint8)
    water = np.zeros((h, w), np.uint8)
    side = int(rng.integers(2)) * 2
    start, end = _edge_point(rng, w, h, side), _edge_point(rng, w, h, side + 1)
    rivers = [_meander(rng, start, end, gsd)]
    if area_km2 >= 150:
        trunk = rivers[0]
        mouth = trunk[int(rng.integers(len(trunk) // 3, 2 * len(trunk) // 3))]
        source = _edge_point(rng, w, h, int(rng.choice([0, 1] if side else [2, 3])))
        rivers.append(_meander(rng, source, mouth, gsd))
    for river, width_m in zip(rivers, (24.0, 12.0), strict=False):
        bank = width_m / gsd + 2 * rng.uniform(20.0, 40.0) / gsd
        _draw_lines(strip, [river], bank, 1, aa=False)
        _draw_lines(water, [river], width_m / gsd, 1, aa=False)
        for k in rng.choice(len(river), size=int(rng.integers(2, 5)), replace=False):
            at = river[k] + rng.normal(0.0, 150.0 / gsd, 2)
            size = rng.uniform(60.0, 200.0, 2) / gsd
            angle = rng.uniform(0.0, 180.0)
            cv2.ellipse(
                strip, ((at[0], at[1]), (size[0] + 40 / gsd, size[1] + 40 / gsd), angle), 1, -1
            )
            cv2.ellipse(water, ((at[0], at[1]), (size[0], size[1]), angle), 1, -1)
    gaps = value_noise(rng, (h, w), 80.0 / gsd, octaves=2) > -0.5
    cover[(strip > 0) & gaps] = TREES
    cover[water > 0] = WATER


def _meander(
    rng: np.random.Generator, start: np.ndarray, end: np.ndarray, gsd: float
) -> np.ndarray:
    return _wander(rng, start, end, 15.0 / gsd, 0.01, 0.8, rng.uniform(500.0, 900.0) / gsd)


# Covers that farming (fields, their margins, tracks and hedges) or open ground hold: what open
# ground, housing grids and lake shores may take over.
_FARMED = np.zeros(256, bool)
_FARMED[[FIELD, MARGIN, TRACK, HEDGE]] = True
_OPEN = _FARMED.copy()
_OPEN[[GRASS, BARE, SAND]] = True
# Forest favours steep ground: weight of the slope (unit variance) against the forest noise.
_STEEP_WOOD = 0.8


def _relief(
    rng: np.random.Generator, shape: tuple[int, int], gsd: float, prof: LandscapeProfile
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Terrain heights in metres (None when flat) and, on sand worlds, the mask of the dune sea.

    Rolling terrain is ~4 km noise cut by V-shaped valleys ~2.5 km apart; a sand world has low
    rock plains and an erg of dune ridges ~300-500 m apart across one wind, skewed (gentle
    windward, steep lee), wandering and fading.
    """
    if prof.relief_m <= 0:
        return None, None
    height = _smooth_noise(rng, shape, 4000.0 / gsd, octaves=5)
    height *= 0.6
    valleys = _smooth_noise(rng, shape, 2500.0 / gsd, octaves=4)
    height -= 0.8 * np.abs(valleys, out=valleys)  # V-shaped valleys in a branching network
    del valleys
    height *= prof.relief_m
    if prof.ground is not Ground.SAND:
        return height, None
    h, w = shape
    height *= 0.6
    erg = _smooth_noise(rng, shape, 6000.0 / gsd, octaves=4)
    theta = rng.uniform(0.0, math.pi)
    k = 2 * math.pi * gsd / rng.uniform(300.0, 500.0)
    phase = 6.0 * _smooth_noise(rng, shape, 2000.0 / gsd, octaves=3)
    phase += (k * math.cos(theta)) * np.arange(w, dtype=np.float32)[None, :]
    phase += (k * math.sin(theta)) * np.arange(h, dtype=np.float32)[:, None]
    phase += 0.6 * np.sin(phase)
    dunes = np.sin(phase, out=phase)
    fade = _smooth_noise(rng, shape, 900.0 / gsd, octaves=2)
    fade *= 0.3
    fade += 0.7
    fade *= np.clip(3.0 * erg, 0.0, 1.0)  # no dunes on the rock, full height well inside
    np.clip(fade, 0.0, 1.0, out=fade)
    dunes *= fade
    dunes *= 1.5 * prof.relief_m
    height += dunes
    return height, erg > 0


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int
) -> np.ndarray:
    """`value_noise` with continuous slopes, for terrain: its knots are joined linearly (a
    hillshade of that shows the grid), so a box filter one knot wide rounds them off."""
    noise = value_noise(rng, shape, cell_px, octaves)
    knot = cell_px / 2 ** (octaves - 1) / 4.0  # value_noise's knot spacing
    k = 2 * round(knot / 2) + 1
    return cv2.blur(noise, (k, k), borderType=cv2.BORDER_REFLECT) if k > 1 else noise


def _steepness(height: np.ndarray, gsd: float) -> np.ndarray:
    """Terrain slope magnitude of a heightmap, scaled to unit standard deviation."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / (8 * gsd))
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3, scale=1.0 / (8 * gsd))
    slope = np.hypot(gx, gy, out=gx)
    slope /= float(slope[::5, ::5].std()) + 1e-9
    return slope


def _carve_valleys(height: np.ndarray, cover: np.ndarray, gsd: float, relief_m: float) -> None:
    """Sink the terrain along the rivers so they run in valleys: 1.5 × relief deep, ~600 m wide."""
    dist = cv2.distanceTransform((cover != WATER).view(np.uint8), cv2.DIST_L2, 3)
    dist *= -gsd / 600.0
    np.exp(dist, out=dist)
    dist *= 1.5 * relief_m
    height -= dist


def _open_ground(
    rng: np.random.Generator,
    cover: np.ndarray,
    parcels: _Parcels,
    counts: np.ndarray,
    towns: list[tuple[np.ndarray, float]],
    erg: np.ndarray | None,
    gsd: float,
    prof: LandscapeProfile,
) -> None:
    """Leave uncultivated parcels as open ground: grass, or dune sand and rock on sand worlds.

    A share `prof.fields` of the parcels is farmed, and any parcel mostly within `prof.oasis_m` of
    a town (the oasis).
    """
    farmed = rng.random(len(counts)) < prof.fields
    if prof.oasis_m > 0:
        near = np.zeros(cover.shape, np.uint8)
        for (x, y), radius in towns:
            cv2.circle(near, (round(x), round(y)), round(radius + prof.oasis_m / gsd), 1, -1)
        inside = np.bincount(parcels.labels[near > 0], minlength=len(counts))
        farmed |= inside > 0.5 * counts
    fallow = ~np.take(farmed, parcels.labels)
    fallow &= _FARMED[cover]
    if erg is None:
        cover[fallow] = GRASS
    else:
        cover[fallow & erg] = SAND
        cover[fallow & ~erg] = BARE


def _hash01(salt: int, *keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 of integer keys: one draw per distinct key (a lot, a house)."""
    x = np.full(np.broadcast_shapes(*(k.shape for k in keys)), salt, np.uint64)
    for k in keys:
        x ^= k.astype(np.int64).view(np.uint64)
        x *= np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def _suburbs(
    rng: np.random.Generator,
    cover: np.ndarray,
    roof: np.ndarray,
    roads: tuple[np.ndarray, np.ndarray],
    parcels: _Parcels,
    towns: list[tuple[np.ndarray, float]],
    gsd: float,
    share: float,
) -> None:
    """Housing grids over the farm regions nearest the towns, until `share` of the land is covered.

    Each region gets a street grid of its own orientation, gently curving: streets 55-85 m apart
    with cross streets every 180-380 m, lots of 14-22 m fronting them on both sides, most lots with
    a two-slope house and a drive. Towns, villages, water and forest are left as they are; streets
    are added to `roads[1]` (minor roads), houses keep clear of existing roads.
    """
    h, w = cover.shape
    n_reg = int(parcels.region.max()) + 1
    step = 8
    sub = np.take(parcels.region, parcels.labels[::step, ::step])
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    npx = np.bincount(sub.ravel(), minlength=n_reg).astype(np.float64)
    cx = np.bincount(sub.ravel(), weights=xs.ravel(), minlength=n_reg) / np.maximum(npx, 1)
    cy = np.bincount(sub.ravel(), weights=ys.ravel(), minlength=n_reg) / np.maximum(npx, 1)
    gap = np.min([np.hypot(cx - x, cy - y) - r for (x, y), r in towns], axis=0)
    order = np.argsort(gap * rng.uniform(0.7, 1.3, n_reg))
    taken = np.searchsorted(np.cumsum(npx[order]) / npx.sum(), share) + 1
    chosen = np.zeros(n_reg, bool)
    chosen[order[:taken]] = True

    f32 = np.float32
    theta = rng.uniform(0.0, math.pi / 2, n_reg)
    cos, sin = np.cos(theta).astype(f32), np.sin(theta).astype(f32)
    block = (rng.uniform(55.0, 85.0, n_reg) / gsd).astype(f32)
    cross = (rng.uniform(180.0, 380.0, n_reg) / gsd).astype(f32)
    lot = (rng.uniform(14.0, 22.0, n_reg) / gsd).astype(f32)
    house_w = lot * rng.uniform(0.5, 0.75, n_reg).astype(f32)
    depth = (rng.uniform(9.0, 13.0, n_reg) / gsd).astype(f32)
    setback = (rng.uniform(5.0, 9.0, n_reg) / gsd).astype(f32)
    bend = (rng.uniform(0.0, 40.0, n_reg) / gsd).astype(f32)
    bend_k = (2 * math.pi * gsd / rng.uniform(500.0, 1200.0, n_reg)).astype(f32)
    bend_phase = rng.uniform(0.0, 2 * math.pi, n_reg).astype(f32)
    salt = int(rng.integers(2**62))
    roof_cdf = np.cumsum(_HOUSE_ROOFS[1]).astype(f32)
    half = f32(3.5 / gsd)  # half a 7 m street
    near_road = (roads[0] > 0) | (roads[1] > 0)
    clear = max(1, round(2 * 6.0 / gsd) + 1)  # houses keep 6 m off existing roads
    near_road = cv2.dilate(near_road.view(np.uint8), np.ones((clear, clear), np.uint8)) > 0

    band = 512
    for y0 in range(0, h, band):
        rows = slice(y0, min(h, y0 + band))
        reg = np.take(parcels.region, parcels.labels[rows])
        ys, xs = np.nonzero(chosen[reg] & _OPEN[cover[rows]])
        if len(ys) == 0:
            continue
        reg = reg[ys, xs]
        x, y = xs.astype(f32), (ys + y0).astype(f32)
        u = x * cos[reg] + y * sin[reg]
        v = y * cos[reg] - x * sin[reg]
        v += bend[reg] * np.sin(u * bend_k[reg] + bend_phase[reg])
        bl, cr, ln = block[reg], cross[reg], lot[reg]
        j = np.floor(v / bl)
        fv = v - j * bl
        dv = np.minimum(fv, bl - fv)  # to the nearest street along the grid
        fu = u - np.floor(u / cr) * cr
        du = np.minimum(fu, cr - fu)  # to the nearest cross street
        street = (np.clip(half + 0.5 - np.minimum(dv, du), 0.0, 1.0) * 255).astype(np.uint8)
        minor = roads[1][rows]
        minor[ys, xs] = np.maximum(minor[ys, xs], street)

        i = np.floor(u / ln)
        along = np.abs(u - i * ln - ln / 2)
        back = dv - half - setback[reg]
        keys = (reg, j.astype(np.int64), (fv > bl / 2).astype(np.int64), i.astype(np.int64))
        lot_draw = _hash01(salt, *keys)
        built = lot_draw < 0.85  # the rest are empty lots
        house = built & (back > 0) & (back < depth[reg]) & (along < house_w[reg] / 2)
        house &= (du > half + 3.0 / gsd) & ~near_road[rows][ys, xs] & (roof[rows][ys, xs] == 0)
        drive = built & (back > -setback[reg]) & (back < depth[reg] / 2)
        drive &= (along > house_w[reg] / 2) & (along < house_w[reg] / 2 + 3.5 / gsd)
        colour = _HOUSE_ROOFS[0][np.searchsorted(roof_cdf, lot_draw[house] / 0.85)]
        colour += 8 * (back[house] > depth[reg][house] / 2)  # the shaded slope
        roof[rows][ys[house], xs[house]] = colour
        cover[rows][ys, xs] = BUILT
        cover[rows][ys[drive], xs[drive]] = PAVED


def _lakes(
    rng: np.random.Generator,
    cover: np.ndarray,
    roof: np.ndarray,
    height: np.ndarray | None,
    towns: list[tuple[np.ndarray, float]],
    gsd: float,
    mean_count: float,
) -> None:
    """Lakes of 80-700 m radius (log-uniform, some elongated), clear of the towns and rivers and in
    hollows where the world has relief, with broken tree-and-reed shores; buildings stay dry."""
    h, w = cover.shape
    water = np.zeros((h, w), np.uint8)
    shore = np.zeros((h, w), np.uint8)
    to_river = cv2.distanceTransform((cover != WATER).view(np.uint8), cv2.DIST_L2, 3)
    for _ in range(int(rng.poisson(mean_count))):
        radius = math.exp(rng.uniform(math.log(80.0), math.log(700.0))) / gsd
        angle, stretch = rng.uniform(0.0, math.pi), rng.uniform(1.0, 2.2)
        reach = stretch * radius + 100.0 / gsd
        spots = rng.uniform([0, 0], [w - 1, h - 1], (6, 2))
        clear = [
            p
            for p in spots
            if to_river[int(p[1]), int(p[0])] > reach
            and all(np.hypot(*(p - c)) > r + reach for c, r in towns)
        ]
        if not clear:
            continue
        at = clear[0] if height is None else min(clear, key=lambda p: height[int(p[1]), int(p[0])])
        outline = _blob(rng, at, radius) - at
        axis = np.array([math.cos(angle), math.sin(angle)])
        outline += (stretch - 1.0) * (outline @ axis)[:, None] * axis
        _fill_polys(water, [at + outline], 1)
        _fill_polys(shore, [at + outline * (1.0 + 50.0 / gsd / radius)], 1)
    wet = (water > 0) & (roof == 0) & (cover != BUILT) & (cover != PAVED)
    ring = (shore > 0) & ~wet & _OPEN[cover]
    ring &= value_noise(rng, (h, w), 100.0 / gsd, octaves=2) > -0.2
    cover[ring] = TREES
    cover[wet] = WATER


def _coast(
    rng: np.random.Generator,
    cover: np.ndarray,
    roof: np.ndarray,
    roads: tuple[np.ndarray, np.ndarray],
    towns: list[tuple[np.ndarray, float]],
    gsd: float,
    odds: float,
) -> None:
    """With `odds`, a sea along the edge farthest from the towns: a shoreline of bays and headlands
    8-22 % of the world in (kept 300 m off every town), a 15-50 m sand beach, and no roads or
    buildings on the water."""
    if rng.random() >= odds:
        return
    h, w = cover.shape
    # Inland distance of each town's edge from the west, east, north and south edges.
    room = np.array([[x, w - x, y, h - y] for (x, y), _ in towns]) - [[r] for _, r in towns]
    side = int(np.argmax(room.min(axis=0)))
    along, across = (h, w) if side < 2 else (w, h)
    bays = _smooth_noise(rng, (1, along), 4000.0 / gsd, octaves=5)[0]
    depth = rng.uniform(0.08, 0.22) * across + (0.05 * across) * bays
    depth -= max(0.0, float(depth.max()) - (float(room[:, side].min()) - 300.0 / gsd))
    beach = (
        rng.uniform(15.0, 35.0) / gsd * (1.0 + 0.5 * value_noise(rng, (1, along), 500.0 / gsd)[0])
    )
    np.maximum(beach, 1.0, out=beach)
    inland = np.arange(across, dtype=np.float32)
    if side in (1, 3):
        inland = inland[::-1].copy()
    if side < 2:
        sea = inland[None, :] < depth[:, None]
        sand = inland[None, :] < (depth + beach)[:, None]
    else:
        sea = inland[:, None] < depth[None, :]
        sand = inland[:, None] < (depth + beach)[None, :]
    sand &= ~sea & (cover != BUILT) & (cover != PAVED) & (roof == 0)
    cover[sand] = SAND
    cover[sea] = WATER
    roof[sea] = 0
    for r in roads:
        r[sea] = 0
