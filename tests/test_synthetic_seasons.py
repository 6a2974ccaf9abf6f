"""Rendering the synthetic world: deterministic, three honest dates on one geometry, structure at
several scales, every landscape kind plausible on every date, hillshade from the date's sun."""

import dataclasses
import math

import cv2
import numpy as np

from rsloc_assets.synthetic.landscape import (
    CROPS,
    FIELD,
    FOREST,
    WATER,
    Landscape,
    WorldSpec,
    build_world,
    world,
)
from rsloc_assets.synthetic.seasons import Season, render

SPEC = WorldSpec.small()


def kind_spec(kind: Landscape) -> WorldSpec:
    return WorldSpec(width_m=4000.0, height_m=4000.0, gsd_m=8.0, landscape=kind)


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def gradient(img: np.ndarray) -> np.ndarray:
    g = cv2.GaussianBlur(grey(img), (0, 0), 1.0)
    return np.hypot(cv2.Sobel(g, cv2.CV_64F, 1, 0), cv2.Sobel(g, cv2.CV_64F, 0, 1))


def autocorrelation(img: np.ndarray, shift: int) -> float:
    g = grey(img)
    return ncc(g[:, :-shift], g[:, shift:])


def test_render_is_deterministic_and_shape_matches_spec():
    summer = render(SPEC, "summer")
    assert summer.shape == (SPEC.height_px, SPEC.width_px, 3) and summer.dtype == np.uint8
    rebuilt = render(build_world(SPEC), "summer")
    assert rebuilt.tobytes() == summer.tobytes()
    other = render(
        build_world(WorldSpec(SPEC.width_m, SPEC.height_m, SPEC.gsd_m, seed=8)), "summer"
    )
    assert np.abs(other.astype(int) - summer).mean() > 10


def test_seasons_differ_in_colour_but_share_geometry():
    summer, autumn = render(SPEC, "summer"), render(SPEC, "autumn")
    assert np.abs(summer.astype(int) - autumn).mean() > 12
    gs, ga = gradient(summer), gradient(autumn)
    same = ncc(gs, ga)
    shifted = ncc(gs[:, 25:], ga[:, :-25])
    assert same > 0.45 and same > shifted + 0.3, (same, shifted)


def test_image_has_structure_at_several_scales():
    img = render(SPEC, "summer")
    shuffled = np.random.default_rng(0).permutation(img.reshape(-1, 3)).reshape(img.shape)
    for shift, floor in ((5, 0.5), (20, 0.25), (80, 0.08)):
        assert autocorrelation(img, shift) > floor, shift
        assert abs(autocorrelation(shuffled, shift)) < 0.02
    assert autocorrelation(img, 5) > autocorrelation(img, 20) > autocorrelation(img, 80)
    # Edges (roads, parcels, hedges) are sparse: gradient energy is heavy-tailed, unlike noise.
    mag = gradient(img)
    assert np.mean(mag > 4 * np.median(mag)) > 0.05


def test_spring_differs_in_colour_but_shares_geometry():
    spring, summer = render(SPEC, Season.SPRING), render(SPEC, "summer")
    assert np.abs(spring.astype(int) - summer).mean() > 10
    gs, gp = gradient(summer), gradient(spring)
    same = ncc(gs, gp)
    shifted = ncc(gs[:, 25:], gp[:, :-25])
    assert same > 0.45 and same > shifted + 0.3, (same, shifted)

    land = world(SPEC)
    crop = np.take(land.crop, land.field_id)
    fields = land.cover == FIELD

    def mean_rgb(img: np.ndarray, name: str) -> np.ndarray:
        return img[fields & (crop == CROPS.index(name))].astype(float).mean(axis=0)

    r, g, b = mean_rgb(spring, "rapeseed")  # in flower: bright yellow
    assert r > 180 and g > 170 and b < 100, (r, g, b)
    r, g, b = mean_rgb(summer, "rapeseed")
    assert min(r, g) - b < 60, (r, g, b)
    r, g, b = mean_rgb(spring, "maize")  # sown, not up yet: bare soil
    assert r > g > b, (r, g, b)
    r, g, b = mean_rgb(summer, "maize")
    assert g > r, (r, g, b)
    forest = land.cover == FOREST
    assert spring[forest].mean() > summer[forest].mean() + 5  # fresh leaves are lighter


def test_every_kind_renders_plausibly_on_every_date():
    brightness = {}
    for kind in Landscape:
        land = build_world(kind_spec(kind))
        for season in Season:
            img = render(land, season)
            assert img.shape == (500, 500, 3) and img.dtype == np.uint8
            assert 50 < img.mean() < 210 and grey(img).std() > 5, (kind, season)
            brightness[kind, season] = img.mean()
        assert (
            render(land, "spring").tobytes() == render(build_world(land.spec), "spring").tobytes()
        )
    for season in Season:
        assert brightness[Landscape.DESERT, season] > brightness[Landscape.FOREST, season] + 50
        assert brightness[Landscape.STEPPE, season] > brightness[Landscape.FOREST, season] + 30


def test_hillshade_follows_the_sun_of_each_date():
    land = build_world(kind_spec(Landscape.HILLS))
    flat = dataclasses.replace(land, height=None)
    water = land.cover == WATER
    g = land.spec.gsd_m
    east = cv2.Sobel(land.height, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / (8 * g))
    north = cv2.Sobel(land.height, cv2.CV_32F, 0, 1, ksize=3, scale=-1.0 / (8 * g))
    spread = {}
    for season, sun_azimuth in ((Season.SUMMER, 150.0), (Season.AUTUMN, 140.0)):
        lit, plain = render(land, season), render(flat, season)
        assert np.array_equal(lit[water], plain[water])  # water lies flat
        ratio = np.log((grey(lit) + 1) / (grey(plain) + 1))
        ratio = cv2.GaussianBlur(ratio, (0, 0), 3)
        spread[season] = ratio.std()
        az = math.radians(sun_azimuth)
        rising = east * math.sin(az) + north * math.cos(az)  # ground rising towards the sun
        assert ncc(ratio, -cv2.GaussianBlur(rising, (0, 0), 3)) > 0.6, season  # faces away
    assert spread[Season.SUMMER] > 0.04 and spread[Season.AUTUMN] > 1.5 * spread[Season.SUMMER]
