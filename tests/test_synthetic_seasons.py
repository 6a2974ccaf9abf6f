"""Rendering the synthetic world: deterministic, two honest dates on one geometry, structure at
several scales."""

import cv2
import numpy as np

from rsloc_assets.synthetic.landscape import WorldSpec, build_world
from rsloc_assets.synthetic.seasons import render

SPEC = WorldSpec.small()


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
