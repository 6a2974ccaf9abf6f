"""How the synthetic world looks on each date: crop states, vegetation, ground and water tones,
the sun (cast shadows, and hillshade where the world has relief).

Rendering only colours the fixed geometry of `synthetic.landscape`, so every date shows the
same ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from rsloc_assets.raster import shift
from rsloc_assets.synthetic.landscape import (
    BARE,
    BUILT,
    FOREST,
    GRASS,
    HEDGE,
    MARGIN,
    PAVED,
    SAND,
    TRACK,
    TREES,
    WATER,
    Ground,
    World,
    WorldSpec,
    seeded_rng,
    value_noise,
    world,
)

RGB = tuple[int, int, int]


class Season(StrEnum):
    """The dates a world can be rendered on."""

    SPRING = "spring"
    SUMMER = "summer"
    AUTUMN = "autumn"


# Land-cover classes that stand tall: tree-coloured, and casting shadows.
_TALL = np.zeros(256, np.uint8)
_TALL[[FOREST, TREES, HEDGE]] = 1


@dataclass(frozen=True)
class _Look:
    """One state a crop can show on a date: its share of fields, colour and row-pattern strength."""

    share: float
    rgb: RGB
    rows: float


@dataclass(frozen=True)
class _GroundLook:
    """A ground palette on one date: grass, bare earth or rock, sand, and how far field colours
    fade towards the grass (dry country's faint fields)."""

    grass: RGB
    bare: RGB
    sand: RGB
    fade: float


@dataclass(frozen=True)
class _Season:
    """Everything that changes between dates: crop states, vegetation, ground and water tones, the
    sun. `shadow_m` is the shadow of a `_TALL_M` tree, so it also sets the sun's elevation."""

    crops: tuple[tuple[_Look, ...], ...]
    deciduous: tuple[RGB, RGB]
    conifer: RGB
    water: RGB
    grounds: dict[Ground, _GroundLook]
    track: RGB
    gain: tuple[float, float, float]
    field_jitter: float
    shadow_m: float
    shadow_azimuth_deg: float


# Height of the trees and houses whose shadows `_Season.shadow_m` measures.
_TALL_M = 10.0
# How much of the light hillshade modulates (the rest is sky light, the same on every slope).
_HILLSHADE = 0.75

_SEASONS: dict[Season, _Season] = {
    Season.SPRING: _Season(
        crops=(
            (_Look(0.8, (86, 132, 58), 0.04), _Look(0.2, (102, 140, 66), 0.04)),
            (_Look(1.0, (104, 144, 66), 0.04),),
            (_Look(0.5, (140, 118, 92), 0.07), _Look(0.5, (124, 104, 82), 0.06)),
            (_Look(0.85, (222, 206, 64), 0.02), _Look(0.15, (176, 184, 72), 0.03)),
            (_Look(1.0, (130, 112, 88), 0.07),),
            (_Look(1.0, (146, 124, 96), 0.06),),
            (_Look(0.7, (94, 144, 62), 0.015), _Look(0.3, (116, 152, 76), 0.02)),
            (_Look(0.5, (126, 130, 86), 0.03), _Look(0.5, (140, 120, 94), 0.04)),
        ),
        deciduous=((80, 116, 58), (116, 148, 76)),
        conifer=(44, 68, 46),
        water=(58, 80, 78),
        grounds={
            Ground.TEMPERATE: _GroundLook((104, 148, 70), (132, 112, 88), (204, 190, 158), 0.0),
            Ground.DRY: _GroundLook((132, 146, 88), (170, 150, 116), (214, 196, 156), 0.4),
            Ground.SAND: _GroundLook((150, 140, 98), (178, 142, 106), (222, 196, 150), 0.1),
        },
        track=(184, 172, 146),
        gain=(0.99, 1.0, 1.02),
        field_jitter=0.08,
        shadow_m=10.0,
        shadow_azimuth_deg=325.0,
    ),
    Season.SUMMER: _Season(
        crops=(
            (_Look(0.8, (200, 180, 120), 0.03), _Look(0.2, (172, 168, 100), 0.03)),
            (_Look(1.0, (214, 198, 152), 0.05),),
            (_Look(1.0, (92, 128, 62), 0.04),),
            (_Look(0.6, (150, 134, 92), 0.03), _Look(0.4, (196, 182, 140), 0.05)),
            (_Look(1.0, (74, 118, 58), 0.04),),
            (_Look(1.0, (114, 136, 62), 0.04),),
            (_Look(0.7, (122, 148, 88), 0.015), _Look(0.3, (162, 160, 112), 0.02)),
            (_Look(1.0, (150, 134, 104), 0.02),),
        ),
        deciduous=((56, 84, 46), (80, 106, 58)),
        conifer=(40, 62, 44),
        water=(56, 76, 72),
        grounds={
            Ground.TEMPERATE: _GroundLook((110, 136, 80), (150, 132, 104), (206, 192, 160), 0.0),
            Ground.DRY: _GroundLook((178, 164, 116), (186, 164, 128), (220, 200, 160), 0.55),
            Ground.SAND: _GroundLook((162, 146, 104), (186, 148, 110), (228, 200, 152), 0.15),
        },
        track=(190, 178, 150),
        gain=(1.0, 1.0, 1.0),
        field_jitter=0.07,
        shadow_m=6.0,
        shadow_azimuth_deg=330.0,
    ),
    Season.AUTUMN: _Season(
        crops=(
            (
                _Look(0.25, (178, 164, 128), 0.05),
                _Look(0.4, (118, 98, 80), 0.09),
                _Look(0.35, (142, 124, 98), 0.05),
            ),
            (
                _Look(0.5, (112, 94, 76), 0.09),
                _Look(0.3, (134, 118, 92), 0.05),
                _Look(0.2, (108, 130, 70), 0.03),
            ),
            (_Look(0.4, (168, 150, 100), 0.04), _Look(0.6, (150, 132, 102), 0.06)),
            (_Look(1.0, (96, 132, 66), 0.04),),
            (_Look(0.6, (82, 120, 62), 0.04), _Look(0.4, (124, 104, 84), 0.07)),
            (_Look(1.0, (104, 92, 74), 0.05),),
            (_Look(0.7, (114, 136, 84), 0.015), _Look(0.3, (134, 140, 96), 0.02)),
            (_Look(0.5, (128, 110, 86), 0.07), _Look(0.5, (140, 136, 96), 0.02)),
        ),
        deciduous=((76, 90, 50), (112, 100, 60)),
        conifer=(42, 60, 44),
        water=(60, 72, 68),
        grounds={
            Ground.TEMPERATE: _GroundLook((104, 122, 78), (128, 110, 86), (196, 184, 156), 0.0),
            Ground.DRY: _GroundLook((160, 146, 108), (168, 148, 116), (212, 194, 156), 0.5),
            Ground.SAND: _GroundLook((154, 140, 100), (178, 142, 106), (220, 194, 148), 0.1),
        },
        track=(158, 146, 122),
        gain=(0.97, 0.95, 0.9),
        field_jitter=0.09,
        shadow_m=16.0,
        shadow_azimuth_deg=320.0,
    ),
}
SEASONS = tuple(Season)

_MAIN_ROAD: RGB = (100, 100, 98)
_MINOR_ROAD: RGB = (128, 126, 120)
_PAVED: RGB = (150, 148, 142)
# Roof colours (index 1..8); index + 8 is the same roof's shaded slope.
_ROOFS = np.array(
    [
        (0, 0, 0),
        (168, 98, 76),
        (132, 90, 74),
        (150, 114, 96),
        (88, 92, 100),
        (68, 70, 78),
        (196, 196, 194),
        (176, 164, 144),
        (118, 122, 128),
    ],
    np.float32,
)
_ROOF_PALETTE = np.concatenate([_ROOFS, _ROOFS[1:] * 0.72]).astype(np.float32)


def render(world_or_spec: World | WorldSpec, season: Season | str) -> np.ndarray:
    """The world seen on `season` (spring, summer or autumn) as an H×W×3 RGB uint8 image.

    A spec is resolved through the per-process `landscape.world` cache.
    """
    season = _season(season)
    look = _SEASONS[season]
    land = world_or_spec if isinstance(world_or_spec, World) else world(world_or_spec)
    ground = look.grounds[land.spec.profile.ground]
    rng = seeded_rng(land.spec.seed, "render", season)
    h, w = land.cover.shape
    colour, rows_amp = _field_looks(land.crop, look, rng)
    if ground.fade:
        colour += ground.fade * (np.asarray(ground.grass, np.float32) - colour)

    shade = np.take(rows_amp, land.field_id)
    shade *= land.rows
    shade += 1.0
    shade += 0.035 * land.soil
    shade += 0.04 * value_noise(rng, (h, w), 1500.0 / land.spec.gsd_m, octaves=3)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        np.multiply(np.take(colour[:, c], land.field_id), shade, out=img[..., c])
    del shade
    flat = img.reshape(-1, 3)
    cover = land.cover.ravel()
    grain, soil = land.grain.ravel(), land.soil.ravel()

    idx = np.flatnonzero(cover == MARGIN)
    flat[idx] = 0.5 * flat[idx] + 0.5 * np.asarray(ground.grass, np.float32)
    _paint(flat, np.flatnonzero(cover == TRACK), look.track, grain, 0.04)
    _paint(flat, np.flatnonzero(cover == WATER), look.water, soil, 0.03)
    _paint(flat, np.flatnonzero(cover == PAVED), _PAVED, grain, 0.06)
    _paint_open_ground(land, flat, ground)
    _paint_trees(land, flat, look)
    _paint_gardens(land, flat, ground)
    _blend(flat, land.minor_roads.ravel(), _MINOR_ROAD)
    _blend(flat, land.main_roads.ravel(), _MAIN_ROAD)
    idx = np.flatnonzero(land.roof.ravel())
    flat[idx] = _ROOF_PALETTE[land.roof.ravel()[idx]]

    _cast_shadows(land, img, look)
    _hillshade(land, img, look)
    img *= np.asarray(look.gain, np.float32)
    img += 1.5 * rng.standard_normal((h, w), dtype=np.float32)[..., None]
    np.clip(img, 0.0, 254.5, out=img)
    img += 0.5
    return img.astype(np.uint8)


def _paint_trees(land: World, flat: np.ndarray, look: _Season) -> None:
    """Forests, riparian strips and hedges: broadleaf tints, conifer parcels, crown texture."""
    cover = land.cover.ravel()
    idx = np.flatnonzero(_TALL[cover])
    lo, hi = (np.asarray(c, np.float32) for c in look.deciduous)
    broadleaf = np.clip((land.tint.ravel()[idx] - 0.3) / 0.4, 0.0, 1.0)
    pine = (cover[idx] == FOREST) & np.take(land.conifer, land.field_id.ravel()[idx])
    texture = 0.2 * np.clip(land.grain.ravel()[idx], -2.5, 2.5)
    texture += 0.06 * land.soil.ravel()[idx]
    texture += 1.0
    for c in range(3):  # a channel at a time: no (n, 3) temporaries on forest worlds
        tone = lo[c] + (hi[c] - lo[c]) * broadleaf
        tone[pine] = look.conifer[c]
        tone *= texture
        flat[idx, c] = tone


def _paint_open_ground(land: World, flat: np.ndarray, ground: _GroundLook) -> None:
    """Unfenced grass patchy with bare earth, bare rock or earth, sand: each on its soil texture."""
    cover = land.cover.ravel()
    soil, grain = land.soil.ravel(), land.grain.ravel()
    grass, bare = (np.asarray(c, np.float32) for c in (ground.grass, ground.bare))
    idx = np.flatnonzero(cover == GRASS)
    mix = np.clip(0.3 + 0.25 * soil[idx], 0.0, 1.0)
    texture = 1.0 + 0.05 * grain[idx]
    for c in range(3):  # a channel at a time: no (n, 3) temporaries on steppe worlds
        tone = grass[c] + (bare[c] - grass[c]) * mix
        tone *= texture
        flat[idx, c] = tone
    idx = np.flatnonzero(cover == BARE)
    texture = 1.0 + 0.08 * soil[idx] + 0.04 * grain[idx]
    for c in range(3):
        flat[idx, c] = bare[c] * texture
    _paint(flat, np.flatnonzero(cover == SAND), ground.sand, soil, 0.03)


def _paint_gardens(land: World, flat: np.ndarray, ground: _GroundLook) -> None:
    """Village and town ground: mostly gardens, with yards and drives where the tint is high."""
    idx = np.flatnonzero(land.cover.ravel() == BUILT)
    paved = np.clip((land.tint.ravel()[idx, None] - 0.5) / 0.25, 0.0, 0.8)
    grass = np.asarray(ground.grass, np.float32)
    rgb = grass + (np.asarray(_PAVED, np.float32) - grass) * paved
    flat[idx] = rgb * (1.0 + 0.08 * land.grain.ravel()[idx, None])


def _cast_shadows(land: World, img: np.ndarray, look: _Season) -> None:
    """Darken the ground beside trees and buildings, away from the sun of this date."""
    tall = _TALL[land.cover]
    tall[land.roof > 0] = 1
    az = math.radians(look.shadow_azimuth_deg)
    dx = round(look.shadow_m * math.sin(az) / land.spec.gsd_m)
    dy = round(-look.shadow_m * math.cos(az) / land.spec.gsd_m)
    cast = shift(tall, dx, dy)
    cast &= 1 - tall
    shadow = cv2.GaussianBlur(cast.astype(np.float32), (3, 3), 0)
    shadow *= -0.42
    shadow += 1.0
    img *= shadow[..., None]


def _hillshade(land: World, img: np.ndarray, look: _Season) -> None:
    """Light the terrain from this date's sun (Lambert, relative to flat ground); water is flat."""
    if land.height is None:
        return
    g = land.spec.gsd_m
    rise_e = cv2.Sobel(land.height, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / (8 * g))
    rise_n = cv2.Sobel(land.height, cv2.CV_32F, 0, 1, ksize=3, scale=-1.0 / (8 * g))  # rows run S
    azimuth = math.radians(look.shadow_azimuth_deg + 180.0)
    cot = look.shadow_m / _TALL_M  # of the sun's elevation
    # Surface normal ∝ (-rise_e, -rise_n, 1); its cosine to the sun over the flat ground's.
    norm = np.hypot(rise_e, rise_n)
    norm *= norm
    norm += 1.0
    np.sqrt(norm, out=norm)
    shade = rise_e
    shade *= -math.sin(azimuth) * cot
    shade -= (math.cos(azimuth) * cot) * rise_n
    shade += 1.0
    shade /= norm
    del rise_n, norm
    shade -= 1.0
    shade *= _HILLSHADE
    shade += 1.0
    np.clip(shade, 0.25, 1.6, out=shade)
    shade[land.cover == WATER] = 1.0
    img *= shade[..., None]


def _season(season: Season | str) -> Season:
    try:
        return Season(season)
    except ValueError:
        kinds = ", ".join(Season)
        raise ValueError(f"unknown season {season!r}: expected one of {kinds}") from None


def _field_looks(
    crop: np.ndarray, look: _Season, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per field label: RGB colour and row-pattern amplitude on this date, with per-field jitter."""
    n = len(crop)
    colour = np.empty((n, 3), np.float32)
    rows = np.empty(n, np.float32)
    pick = rng.random(n)
    for k, states in enumerate(look.crops):
        sel = crop == k
        edges = np.cumsum([s.share for s in states])
        state = np.minimum(np.searchsorted(edges / edges[-1], pick[sel]), len(states) - 1)
        colour[sel] = np.asarray([s.rgb for s in states], np.float32)[state]
        rows[sel] = np.asarray([s.rows for s in states], np.float32)[state]
    colour *= (1.0 + look.field_jitter * rng.standard_normal(n)).astype(np.float32)[:, None]
    colour += rng.normal(0.0, 3.0, (n, 3)).astype(np.float32)
    rows *= rng.uniform(0.5, 1.5, n).astype(np.float32)
    return colour, rows


def _paint(flat: np.ndarray, idx: np.ndarray, rgb: RGB, texture: np.ndarray, amp: float) -> None:
    flat[idx] = np.asarray(rgb, np.float32) * (1.0 + amp * texture[idx, None])


def _blend(flat: np.ndarray, alpha: np.ndarray, rgb: RGB) -> None:
    idx = np.flatnonzero(alpha)
    a = alpha[idx, None].astype(np.float32) / 255.0
    flat[idx] = flat[idx] * (1.0 - a) + np.asarray(rgb, np.float32) * a
