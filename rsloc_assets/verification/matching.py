"""Stage 3: MAC-guided geometric verification of a query patch against a candidate's mosaic.

SIFT correspondences are filtered by the maximal cliques of a distance-preservation graph
(the native clique engine), a homography is fitted robustly on the best clique and checked
for plausibility, and an optional embedding re-check compares the two images where they overlap.

Both images are matched on one pixel grid, the working size (`working_size`): square on the
ground, as fine as the mosaic's finer axis, but a patch blown up at most
`VerifyParams.patch_upsample` times, so a finer patch comes down and a coarser one is blown up a
bounded amount while the mosaic comes down to it. SIFT, the correspondences and every pixel
threshold of `VerifyParams` live in working pixels; what `match_patch` returns is in each
image's ORIGINAL pixels.

Pixel coordinates here are continuous with the image's top-left corner at (0, 0) and its
bottom-right corner at (W, H): a pixel's centre is at (i + 0.5, j + 0.5). Homographies map such
coordinates, as do the GDAL geotransforms and `footprint.mosaic_to_lonlat`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import torch

from rsloc_assets.cliques.native import CliqueError, Status, maximal_cliques
from rsloc_assets.retrieval.encoders import Encoder

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """The verdict on one patch/candidate pair: accepted ("ok") or the first check it failed."""

    OK = "ok"
    TOO_FEW_KEYPOINTS = "too few keypoints"
    TOO_FEW_MATCHES = "too few matches"
    NO_CONSISTENT_CLIQUE = "no consistent clique"
    HOMOGRAPHY_FAILED = "homography failed"
    DEGENERATE = "degenerate homography"
    MIRRORED = "mirrored"
    SCALE_OUT_OF_RANGE = "scale out of range"
    TOO_FEW_INLIERS = "too few inliers"
    LOW_SIMILARITY = "low similarity"


_KNN_ROWS = 1024  # descriptors matched per matrix product: 16 MB of dot products at 4,000
_CLIQUE_RETRIES = 3  # halvings of the graph after the clique search hits its limits
# Shorter pairs measure the scale too coarsely to vote on it. Working px: the scale error of a
# pair is its keypoints' localisation error (working px) over its length.
_SCALE_MIN_PX = 64.0


@dataclass(frozen=True)
class VerifyParams:
    """Stage-3 settings. Defaults were measured on cross-season demo-world pairs and cross-year
    NAIP pairs (../shared); the figures are in the comments.

    Every `_px` setting is in working pixels (see `working_size`), the pixels SIFT ran on: each
    bounds a keypoint-localisation error, and SIFT localises to a fraction of its own pixel,
    whatever ground that pixel covers. Where the patch is finer than the mosaic the working
    pixels are the mosaic's, as all of these were first measured; for 5 m NAIP patches they are
    2.5 m against the mosaic's 1.6 m. Held in mosaic px instead (at patch_upsample 1, a third of
    a working px) they accepted 46 rather than 43 of the 216 true pairs below, no wrong one: the
    frame matters little, and working px is where SIFT's error lives."""

    # 0.85 over 0.8: 30 vs 25 of 41 NAIP pairs fitted correctly; wrong fits still ≤ 4 inliers.
    ratio: float = 0.85  # Lowe's ratio test, on RootSIFT descriptors
    # SIFT nfeatures, per image at the working size: median 3560 keypoints on NAIP patches at
    # 768 px, 2670 at patch_upsample 2, 756 at 1.
    max_features: int = 4000
    contrast_threshold: float = 0.01  # SIFT's; OpenCV's 0.04 finds too little in farmland
    max_correspondences: int = 400  # best-by-ratio correspondences in the compatibility graph
    min_pair_px: float = 8.0  # correspondences closer than this (either image) are merged
    # |s·‖p_i − p_j‖ − ‖q_i − q_j‖| allowed, in ground-square working px (x-axis units) ...
    compat_tol_px: float = 8.0
    compat_rel: float = 0.02  # ... plus this share of ‖q_i − q_j‖
    min_mac_size: int = 6  # smallest clique worth a homography
    clique_ratio: float = 0.8  # keep maximal cliques of ≥ this share of the largest
    cliques_tried: int = 4  # largest cliques whose homographies are scored
    max_clique_steps: int = 2_000_000  # bound on the clique search (then a smaller graph)
    ransac_px: float = 4.0  # MAGSAC threshold and inlier distance, working px on the mosaic side
    # No fit with wrong points had more than 4 inliers (80 demo and 82 NAIP pairs).
    min_inliers: int = 10
    # Plain cosine of the masked pair's embeddings. RSLoc's 0.5 + 0.5·cos ≥ 0.92 means cos ≥ 0.84,
    # which would reject most true cross-date pairs with EfficientNet-Lite2: true pairs scored
    # 0.66–0.90 and wrong ones 0.57–0.87, so this threshold only guards against gross errors.
    min_similarity: float = 0.6
    max_scale_error: float = 1.35  # local scale after resizing within [1/x, x]
    max_anisotropy: float = 1.35  # ratio of the local singular values
    max_perspective: float = 0.1  # largest change of the projective divisor across the patch
    # The most a patch coarser than the mosaic is blown up for SIFT (`working_size`); the mosaic
    # comes down to it. 216 true and 216 wrong NAIP cross-date pairs (5 m patches, z16 mosaics
    # of 2020; bench.real seed 1): 70 true accepted at 2, 61 at 1.5 and 43 at 1 (the coarser
    # side), 68 with the patch blown up 3.07× to the mosaic's 768 px; no wrong one at any; 0.29 s
    # a pair at 2, 0.05 at 1, 0.48 at 768 px (CPU, one thread, mosaic features cached). At 1 the
    # borderline pairs kept 3–9 correct correspondences where 768 px had 10–15. The whole seed-1
    # bench: 11, 9 and 12 of 18 queries verified (16 within one tile in all three).
    patch_upsample: float = 2.0
    # CLAHE on the grey image before SIFT, off at 0 (OpenCV's clipLimit otherwise). Off: on the
    # pairs above, clip 2 accepted 58 (8×8 tiles) and 59 (4×4) true pairs against 70 without; at
    # patch_upsample 1, 38 (clip 2 or 4, 8×8) and 46 (clip 2, 4×4) against 43; no wrong one.
    clahe_clip: float = 0.0
    # CLAHE's tiles per side: a count, not pixels, so that the patch and the mosaic, which cover
    # the same ground on the same working grid, are equalised over the same ground.
    clahe_grid: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1 or not 0 < self.clique_ratio <= 1:
            raise ValueError(f"ratio and clique_ratio must lie in (0, 1]: {self}")
        if self.min_mac_size < 4 or self.min_inliers < 4 or self.cliques_tried < 1:
            raise ValueError(f"min_mac_size and min_inliers need ≥ 4, cliques_tried ≥ 1: {self}")
        if min(self.max_scale_error, self.max_anisotropy) < 1 or self.max_perspective < 0:
            raise ValueError(f"max_scale_error, max_anisotropy ≥ 1, max_perspective ≥ 0: {self}")
        if min(self.compat_tol_px, self.ransac_px, self.min_pair_px) <= 0:
            raise ValueError(f"compat_tol_px, ransac_px and min_pair_px must be > 0: {self}")
        if self.patch_upsample < 1:
            raise ValueError(f"patch_upsample must be ≥ 1: {self}")
        if self.clahe_clip < 0 or self.clahe_grid < 1:
            raise ValueError(f"clahe_clip must be ≥ 0 and clahe_grid ≥ 1: {self}")


@dataclass
class Features:
    """SIFT keypoints of one image: positions (corner convention) and 128-d descriptors, found at
    `size` = (width, height) px, the size the image was resized to for SIFT."""

    xy: np.ndarray  # float32 (N, 2), px of the image at `size`
    descriptors: np.ndarray  # float32 (N, 128), integral values 0..255
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.xy)


@dataclass
class PatchMatch:
    """The verdict on one patch against one mosaic, with what led to it."""

    accepted: bool
    reason: Reason
    keypoints: int  # SIFT keypoints in the patch at the working size
    matches: int  # ratio-test correspondences after merging near-duplicates
    mac_size: int  # correspondences in the clique whose homography won
    inliers: int  # correspondences within ransac_px of the homography
    similarity: float | None  # cosine of the masked pair's embeddings, when an encoder was given
    homography: np.ndarray | None  # 3×3 float64: ORIGINAL patch px → mosaic px
    src_xy: np.ndarray  # float64 (inliers, 2): original patch px
    dst_xy: np.ndarray  # float64 (inliers, 2): mosaic px
    work_size: tuple[int, int]  # (width, height) both images were matched at


WORK_STEP_PX = 16  # working sizes are rounded to this, so queries of similar gsd share a cache


def working_size(
    patch_size: tuple[int, int], mosaic_size: tuple[int, int], max_upsample: float = 1.0
) -> tuple[int, int]:
    """The (width, height) a patch and a mosaic of the same ground are matched at: the patch
    scaled evenly (query pixels are square on the ground, so the grid is too) until its finer
    axis reaches the mosaic's pixel count there, but blown up at most `max_upsample` times;
    rounded to `WORK_STEP_PX`.

    A square ground grid is what lets a query turned 90° match at all: on RSLoc's `ge` grid
    mosaic pixels are 1.49× taller than wide on the ground, and matching on the mosaic's own
    grid left a 90° demo query with 0 of 45 pairs accepted (all "no consistent clique")."""
    if max_upsample < 1:
        raise ValueError(f"max_upsample must be ≥ 1, got {max_upsample}")
    (pw, ph), (mw, mh) = patch_size, mosaic_size
    scale = min(max_upsample, max(mw / pw, mh / ph))
    return tuple(
        max(WORK_STEP_PX, WORK_STEP_PX * round(scale * side / WORK_STEP_PX)) for side in (pw, ph)
    )


def extract_features(
    rgb: np.ndarray, params: VerifyParams | None = None, size: tuple[int, int] | None = None
) -> Features:
    """SIFT on the grey image resized to `size` (w, h; default its own), deterministic; keypoint
    positions in the corner convention, in px at `size`.

    Uses `params.max_features`, `contrast_threshold` and the CLAHE settings: cache mosaics'
    features per tile, settings and size."""
    p = params or VerifyParams()
    _check_rgb(rgb, "image")
    h, w = rgb.shape[:2]
    size = (w, h) if size is None else (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"feature size must be positive, got {size}")
    if size != (w, h):
        shrink = w * h > size[0] * size[1]
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if p.clahe_clip > 0:
        grid = (p.clahe_grid, p.clahe_grid)
        grey = cv2.createCLAHE(clipLimit=p.clahe_clip, tileGridSize=grid).apply(grey)
    sift = cv2.SIFT_create(nfeatures=p.max_features, contrastThreshold=p.contrast_threshold)
    keypoints, desc = sift.detectAndCompute(grey, None)
    if not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), size)
    xy = np.array([k.pt for k in keypoints], np.float32) + 0.5
    return Features(xy, desc.astype(np.float32), size)


def patch_features(
    patch_rgb: np.ndarray, mosaic_size: tuple[int, int], params: VerifyParams | None = None
) -> Features:
    """A patch's SIFT at the working size it meets a mosaic of `mosaic_size` = (w, h) at: the
    same for every mosaic of that size, so found once per patch (as `match_patch` takes it)."""
    p = params or VerifyParams()
    size = working_size((patch_rgb.shape[1], patch_rgb.shape[0]), mosaic_size, p.patch_upsample)
    return extract_features(patch_rgb, p, size)


def match_patch(
    patch_rgb: np.ndarray,
    mosaic_rgb: np.ndarray,
    params: VerifyParams | None = None,
    mosaic_features: Features | None = None,
    encoder: Encoder | None = None,
    patch_valid: np.ndarray | None = None,
    patch_features: Features | None = None,
) -> PatchMatch:
    """Verify `patch_rgb` against `mosaic_rgb` (same ground, any pixel sizes): MAC-filtered SIFT
    correspondences at the working size, a checked homography, and the embedding re-check when
    `encoder` is given, over the patch's `patch_valid` pixels (default: all).

    `mosaic_features` and `patch_features` are each image's at `working_size` (as `FeatureCache`
    keeps the mosaic's; a patch matched against several mosaics needs its own once); features of
    another size cannot be used and are extracted again."""
    p = params or VerifyParams()
    _check_rgb(patch_rgb, "patch")
    _check_rgb(mosaic_rgb, "mosaic")
    mh, mw = mosaic_rgb.shape[:2]
    ph, pw = patch_rgb.shape[:2]
    ww, wh = work = working_size((pw, ph), (mw, mh), p.patch_upsample)
    mosaic = mosaic_features
    if mosaic is None or mosaic.size != work:
        if mosaic is not None:
            log.debug(
                "mosaic features at %s px, not the working %s px: re-extracted", mosaic.size, work
            )
        mosaic = extract_features(mosaic_rgb, p, work)
    feats = patch_features
    if feats is None or feats.size != work:
        feats = extract_features(patch_rgb, p, work)
    result = _Verdict(len(feats), work)
    if min(len(feats), len(mosaic)) < p.min_inliers:
        return result.reject(Reason.TOO_FEW_KEYPOINTS)

    # Both images share the working grid, which removes the known (possibly anisotropic) scale
    # between them. Fits run from ORIGINAL patch px (`src`) to working px on the mosaic side
    # (`dst`), where ransac_px is measured; `to_mosaic` takes those to ORIGINAL mosaic px.
    # Cliques run in a ground-isotropic frame in working x-px units, `to_ground` for each side.
    src, dst = _correspondences(feats, mosaic, p)
    src *= np.array([pw / ww, ph / wh])
    to_mosaic = np.array([mw / ww, mh / wh])
    to_ground = (np.array([ww / pw, ww / pw]), np.array([1.0, ph * ww / (pw * wh)]))
    result.matches = len(src)
    if len(src) < p.min_inliers:
        return result.reject(Reason.TOO_FEW_MATCHES)

    cliques = consistent_cliques(src * to_ground[0], dst * to_ground[1], p)
    if not cliques:
        return result.reject(Reason.NO_CONSISTENT_CLIQUE)
    best = None
    for clique in cliques[: p.cliques_tried]:
        h, _ = cv2.findHomography(src[clique], dst[clique], cv2.USAC_MAGSAC, p.ransac_px)
        if h is None or not np.isfinite(h).all():
            continue
        count = int(_inliers(h, src, dst, p.ransac_px).sum())
        if best is None or count > best[0]:
            best = (count, len(clique), h)
    if best is None:
        # USAC refuses orientation-reversing samples; a mirrored patch still forms cliques,
        # since reflections preserve distances.
        mac = cliques[0]
        result.mac_size = len(mac)
        return result.reject(
            Reason.MIRRORED if _reflected(src[mac], dst[mac]) else Reason.HOMOGRAPHY_FAILED
        )
    _, result.mac_size, h = best
    h = _refine(h, src, dst, p.ransac_px)
    keep = _inliers(h, src, dst, p.ransac_px)
    result.inliers = int(keep.sum())
    to_original = np.diag([*to_mosaic, 1.0]) @ h
    result.homography = to_original / to_original[2, 2]
    result.src_xy, result.dst_xy = src[keep], dst[keep] * to_mosaic

    ground_h = np.diag([*to_ground[1], 1.0]) @ h @ np.diag([*1 / to_ground[0], 1.0])
    defect = homography_check(ground_h, (ww, ww * ph / pw), p)
    if defect != Reason.OK:
        return result.reject(defect)
    if result.inliers < p.min_inliers:
        return result.reject(Reason.TOO_FEW_INLIERS)
    if encoder is not None:
        result.similarity = overlap_similarity(
            patch_rgb, mosaic_rgb, result.homography, encoder, patch_valid
        )
        if result.similarity < p.min_similarity:
            return result.reject(Reason.LOW_SIMILARITY)
    return result.accept()


def homography_check(h: np.ndarray, size: tuple[int, int], params: VerifyParams) -> Reason:
    """`Reason.OK`, or why `h` is implausible between ortho images of the same ground at one scale;
    `h` maps a patch of `size` = (w, h) to the mosaic, both in ground-square pixels."""
    h = np.asarray(h, np.float64)
    if h.shape != (3, 3) or not np.isfinite(h).all() or abs(h[2, 2]) < 1e-12:
        return Reason.DEGENERATE
    h = h / h[2, 2]
    w, hh = size
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, hh, 1], [0, hh, 1]], np.float64)
    divisor = corners @ h[2]
    centre = h[2] @ (w / 2, hh / 2, 1.0)
    if centre <= 0 or (divisor <= 0).any():
        return Reason.DEGENERATE
    if np.abs(divisor / centre - 1).max() > params.max_perspective:
        return Reason.DEGENERATE
    # Jacobian of the homography at the patch centre.
    x, y = (h[:2] @ (w / 2, hh / 2, 1.0)) / centre
    jac = (h[:2, :2] - np.outer((x, y), h[2, :2])) / centre
    det = float(np.linalg.det(jac))
    if det <= 0:
        return Reason.MIRRORED
    s_max, s_min = np.linalg.svd(jac, compute_uv=False)
    if s_max / s_min > params.max_anisotropy:
        return Reason.DEGENERATE
    if not 1 / params.max_scale_error <= np.sqrt(det) <= params.max_scale_error:
        return Reason.SCALE_OUT_OF_RANGE
    return Reason.OK


def overlap_similarity(
    patch_rgb: np.ndarray,
    mosaic_rgb: np.ndarray,
    homography: np.ndarray,
    encoder: Encoder,
    patch_valid: np.ndarray | None = None,
) -> float:
    """Cosine of the embeddings of the patch warped into the mosaic and the mosaic, both masked
    to the warped footprint of the patch's valid pixels (default: all) and cropped to its
    bounding box."""
    mh, mw = mosaic_rgb.shape[:2]
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    h_idx = np.linalg.inv(shift) @ homography @ shift  # pixel-index convention for OpenCV
    warped = cv2.warpPerspective(patch_rgb, h_idx, (mw, mh), flags=cv2.INTER_LINEAR)
    if patch_valid is None:
        patch_valid = np.ones(patch_rgb.shape[:2], bool)
    ones = patch_valid.astype(np.uint8) * 255
    valid = cv2.warpPerspective(ones, h_idx, (mw, mh), flags=cv2.INTER_NEAREST)
    valid = cv2.erode(valid, np.ones((3, 3), np.uint8)) > 0
    if not valid.any():
        return -1.0
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    mask = valid[box][..., None]
    pair = np.stack([warped[box] * mask, mosaic_rgb[box] * mask])
    emb = encoder.embed(pair)
    return float(emb[0] @ emb[1])


@dataclass
class _Verdict:
    """A PatchMatch under construction."""

    keypoints: int
    work_size: tuple[int, int]
    matches: int = 0
    mac_size: int = 0
    inliers: int = 0
    similarity: float | None = None
    homography: np.ndarray | None = None
    src_xy: np.ndarray | None = None
    dst_xy: np.ndarray | None = None

    def reject(self, reason: Reason) -> PatchMatch:
        return self._done(False, reason)

    def accept(self) -> PatchMatch:
        return self._done(True, Reason.OK)

    def _done(self, accepted: bool, reason: Reason) -> PatchMatch:
        empty = np.zeros((0, 2), np.float64)
        return PatchMatch(
            accepted=accepted,
            reason=reason,
            keypoints=self.keypoints,
            matches=self.matches,
            mac_size=self.mac_size,
            inliers=self.inliers,
            similarity=self.similarity,
            homography=self.homography,
            src_xy=empty if self.src_xy is None else self.src_xy,
            dst_xy=empty if self.dst_xy is None else self.dst_xy,
            work_size=self.work_size,
        )


def _check_rgb(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what} must be an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )


def _correspondences(
    patch: Features, mosaic: Features, p: VerifyParams
) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT ratio-test matches best first, near-duplicates merged: (src, dst) px arrays."""
    nearest, dist = _two_nearest(_root_sift(patch.descriptors), _root_sift(mosaic.descriptors))
    good = (dist[:, 1] > 0) & (dist[:, 0] < p.ratio * dist[:, 1])
    if not good.any():
        empty = np.zeros((0, 2), np.float64)
        return empty, empty
    qi = np.flatnonzero(good)
    ti, ratio = nearest[qi, 0], dist[qi, 0] / dist[qi, 1]
    order = np.lexsort((qi, ratio))  # best ratio first; ties by keypoint index
    src = patch.xy[qi[order]].astype(np.float64)
    dst = mosaic.xy[ti[order]].astype(np.float64)
    keep = _spread(src, dst, p.min_pair_px)
    return src[keep], dst[keep]


def _two_nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `a`'s two nearest rows of `b` (unit vectors, as RootSIFT's are) and their L2
    distances, exact in float64: the two are chosen by one matrix product a block of rows at a
    time (the largest dot products), which on 4,000 × 4,000 RootSIFT descriptors took 0.11 s
    against 0.37–0.45 s for OpenCV's brute-force `knnMatch` (one thread) and chose the same
    nearest neighbour for every descriptor of bench-query's 16 f20 pairs."""
    if len(a) == 0 or len(b) < 2:
        return np.zeros((len(a), 2), np.int64), np.zeros((len(a), 2), np.float64)
    gallery = torch.from_numpy(np.ascontiguousarray(b, np.float32)).T
    nearest = np.zeros((len(a), 2), np.int64)
    for i in range(0, len(a), _KNN_ROWS):
        dots = torch.from_numpy(np.ascontiguousarray(a[i : i + _KNN_ROWS], np.float32)) @ gallery
        nearest[i : i + _KNN_ROWS] = torch.topk(dots, 2, dim=1).indices.numpy()
    diff = a[:, None, :].astype(np.float64) - b[nearest].astype(np.float64)
    return nearest, np.sqrt((diff * diff).sum(axis=2))


def _root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L2 on these is the Hellinger kernel on SIFT;
    it matched 40 of 40 cross-season demo pairs against 36 for plain SIFT."""
    return np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _spread(src: np.ndarray, dst: np.ndarray, min_px: float) -> np.ndarray:
    """Indices of a greedy subset (in order) with every pair ≥ `min_px` apart in both images.

    SIFT often returns one spot twice (two orientations); such near-duplicates can never share a
    clique under the distance test, and each would double the number of maximal cliques.
    """
    images = [_Buckets(pts, min_px) for pts in (src, dst)]
    kept = []
    for i in range(len(src)):
        if not any(b.near(i) for b in images):
            kept.append(i)
            for b in images:
                b.add(i)
    return np.asarray(kept, dtype=np.int64)


class _Buckets:
    """Points bucketed into `min_px` cells, to find an added point within `min_px` of another."""

    def __init__(self, points: np.ndarray, min_px: float) -> None:
        self.points = points.tolist()
        self.cells = [tuple(c) for c in np.floor(points / min_px).astype(np.int64).tolist()]
        self.min_px = min_px
        self.grid: dict[tuple[int, int], list[int]] = {}

    def near(self, i: int) -> bool:
        cx, cy = self.cells[i]
        p = self.points[i]
        return any(
            math.dist(self.points[j], p) < self.min_px
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for j in self.grid.get((cx + dx, cy + dy), ())
        )

    def add(self, i: int) -> None:
        self.grid.setdefault(self.cells[i], []).append(i)


def _pair_scale(dp: np.ndarray, dq: np.ndarray, p: VerifyParams) -> float:
    """The mosaic/patch distance ratio most correspondence pairs agree on, within the allowed
    scale range: inlier pairs all share it, outlier pairs spread out."""
    use = (dp > _SCALE_MIN_PX) & (dq > _SCALE_MIN_PX)
    lr = np.sort(np.log(dq[use] / dp[use]))
    lr = lr[np.abs(lr) <= np.log(p.max_scale_error)]
    if len(lr) == 0:
        return 1.0
    window = 0.02  # ±2 % in scale
    counts = np.searchsorted(lr, lr + window, "right") - np.searchsorted(lr, lr - window, "left")
    peak = lr[int(np.argmax(counts))]
    near = lr[np.abs(lr - peak) <= window]
    return float(np.exp(np.median(near)))


def consistent_cliques(
    src: np.ndarray, dst: np.ndarray, params: VerifyParams | None = None
) -> list[np.ndarray]:
    """Maximal cliques of correspondences (rows of `src`, `dst`, best first, both in ground-square
    pixels) that preserve pairwise distances up to one scale; largest first, then best ranked.

    Only the first max_correspondences are used. Cliques have ≥ min_mac_size members and
    ≥ clique_ratio × the largest size. A search that hits its limits is rerun on the best half.
    """
    p = params or VerifyParams()
    n = min(len(src), p.max_correspondences)
    for attempt in range(_CLIQUE_RETRIES + 1):
        i, j = np.triu_indices(n, 1)
        dp = np.hypot(*(src[i] - src[j]).T)
        dq = np.hypot(*(dst[i] - dst[j]).T)
        s = _pair_scale(dp, dq, p)
        ok = np.abs(s * dp - dq) <= p.compat_tol_px + p.compat_rel * dq
        edges = np.stack([i[ok], j[ok]], axis=1)
        try:
            found = maximal_cliques(
                n,
                edges,
                min_size=p.min_mac_size,
                max_steps=p.max_clique_steps,
                min_ratio=p.clique_ratio,
            )
        except CliqueError as err:
            if err.code != Status.LIMIT:
                raise
            log.debug("clique search limited on %d correspondences (try %d)", n, attempt + 1)
            n //= 2
            continue
        # Members are ascending and indices are ranked by ratio: a smaller sum is a better clique.
        return sorted(found, key=lambda c: (-len(c), int(c.sum())))
    log.warning("clique search limited down to %d correspondences; no clique kept", n)
    return []


def _reflected(src: np.ndarray, dst: np.ndarray) -> bool:
    """Whether the least-squares affine map src → dst reverses orientation."""
    design = np.column_stack([src, np.ones(len(src))])
    coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return bool(np.linalg.det(coef[:2].T) < 0)


def _inliers(h: np.ndarray, src: np.ndarray, dst: np.ndarray, tol: float) -> np.ndarray:
    """Mask of correspondences that `h` maps to within `tol` px of their match."""
    proj = cv2.perspectiveTransform(src.reshape(-1, 1, 2), h).reshape(-1, 2)
    err = np.hypot(*(proj - dst).T)
    return np.isfinite(err) & (err <= tol)


def _refine(h: np.ndarray, src: np.ndarray, dst: np.ndarray, tol: float) -> np.ndarray:
    """Least-squares homography on all of `h`'s inliers, kept only if it loses none."""
    keep = _inliers(h, src, dst, tol)
    if keep.sum() < 4:
        return h
    refit, _ = cv2.findHomography(src[keep], dst[keep], 0)
    if refit is None or not np.isfinite(refit).all():
        return h
    return refit if _inliers(refit, src, dst, tol).sum() >= keep.sum() else h
