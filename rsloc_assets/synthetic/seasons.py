"""How the synthetic world looks on each date: crop states, vegetation and water tones, the sun.

Rendering only colours the fixed geometry of `synthetic.landscape`, so every date shows the
same ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rsloc_assets.raster import shift
from rsloc_assets.synthetic.landscape import (
    BUILT,
    FOREST,
    HEDGE,
    MARGIN,
    PAVED,
    TRACK,
    TREES,
    WATER,
    World,
    WorldSpec,
    seeded_rng,
    value_noise,
    world,
)

RGB = tuple[int, int, int]

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
class _Season:
    """Everything that changes between dates: crop states, vegetation and water tones, the sun."""

    crops: tuple[tuple[_Look, ...], ...]
    deciduous: tuple[RGB, RGB]
    conifer: RGB
    water: RGB
    grass: RGB
    track: RGB
    gain: tuple[float, float, float]
    field_jitter: float
    shadow_m: float
    shadow_azimuth_deg: float


_SEASONS: dict[str, _Season] = {
    "summer": _Season(
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
        grass=(110, 136, 80),
        track=(190, 178, 150),
        gain=(1.0, 1.0, 1.0),
        field_jitter=0.07,
        shadow_m=6.0,
        shadow_azimuth_deg=330.0,
    ),
    "autumn": _Season(
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
        grass=(104, 122, 78),
        track=(158, 146, 122),
        gain=(0.97, 0.95, 0.9),
        field_jitter=0.09,
        shadow_m=16.0,
        shadow_azimuth_deg=320.0,
    ),
}
SEASONS = tuple(_SEASONS)

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


def render(world_or_spec: World | WorldSpec, season: str) -> np.ndarray:
    """The world seen on `season` ("summer" or "autumn") as an H×W×3 RGB uint8 image.

    A spec is resolved through the per-process `landscape.world` cache.
    """
    look = _season(season)
    land = world_or_spec if isinstance(world_or_spec, World) else world(world_or_spec)
    rng = seeded_rng(land.spec.seed, "render", season)
    h, w = land.cover.shape
    colour, rows_amp = _field_looks(land.crop, look, rng)

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
    flat[idx] = 0.5 * flat[idx] + 0.5 * np.asarray(look.grass, np.float32)
    _paint(flat, np.flatnonzero(cover == TRACK), look.track, grain, 0.04)
    _paint(flat, np.flatnonzero(cover == WATER), look.water, soil, 0.03)
    _paint(flat, np.flatnonzero(cover == PAVED), _PAVED, grain, 0.06)
    _paint_trees(land, flat, look)
    _paint_gardens(land, flat, look)
    _blend(flat, land.minor_roads.ravel(), _MINOR_ROAD)
    _blend(flat, land.main_roads.ravel(), _MAIN_ROAD)
    idx = np.flatnonzero(land.roof.ravel())
    flat[idx] = _ROOF_PALETTE[land.roof.ravel()[idx]]

    _cast_shadows(land, img, look)
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
    rgb = lo + (hi - lo) * np.clip((land.tint.ravel()[idx, None] - 0.3) / 0.4, 0.0, 1.0)
    pine = (cover[idx] == FOREST) & np.take(land.conifer, land.field_id.ravel()[idx])
    rgb[pine] = look.conifer
    texture = 0.2 * np.clip(land.grain.ravel()[idx], -2.5, 2.5)
    texture += 0.06 * land.soil.ravel()[idx]
    texture += 1.0
    flat[idx] = rgb * texture[:, None]


def _paint_gardens(land: World, flat: np.ndarray, look: _Season) -> None:
    """Village and town ground: mostly gardens, with yards and drives where the tint is high."""
    idx = np.flatnonzero(land.cover.ravel() == BUILT)
    paved = np.clip((land.tint.ravel()[idx, None] - 0.5) / 0.25, 0.0, 0.8)
    grass = np.asarray(look.grass, np.float32)
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


def _season(season: str) -> _Season:
    try:
        return _SEASONS[season]
    except KeyError:
        raise ValueError(f"unknown season {season!r}: expected one of {SEASONS}") from None


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
