"""Stage 3: MAC-guided geometric verification of a query patch against a candidate's mosaic.

SIFT correspondences are filtered by the maximal cliques of a distance-preservation graph
(the native clique engine), a homography is fitted robustly on the best clique and checked
for plausibility, and an optional embedding re-check compares the two images where they overlap.

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


_CLIQUE_RETRIES = 3  # halvings of the graph after the clique search hits its limits
_SCALE_MIN_PX = 64.0  # shorter pairs measure the scale too coarsely to vote on it


@dataclass(frozen=True)
class VerifyParams:
    """Stage-3 settings. Defaults were measured on cross-season demo-world pairs and cross-year
    NAIP pairs (../shared); the figures are in the comments."""

    # 0.85 over 0.8: 30 vs 25 of 41 NAIP pairs fitted correctly; wrong fits still ≤ 4 inliers.
    ratio: float = 0.85  # Lowe's ratio test, on RootSIFT descriptors
    max_features: int = 4000  # SIFT nfeatures, per image
    contrast_threshold: float = 0.01  # SIFT's; OpenCV's 0.04 finds too little in farmland
    max_correspondences: int = 400  # best-by-ratio correspondences in the compatibility graph
    min_pair_px: float = 8.0  # correspondences closer than this (either image) are merged
    compat_tol_px: float = 8.0  # |s·‖p_i − p_j‖ − ‖q_i − q_j‖| allowed, mosaic px ...
    compat_rel: float = 0.02  # ... plus this share of ‖q_i − q_j‖
    min_mac_size: int = 6  # smallest clique worth a homography
    clique_ratio: float = 0.8  # keep maximal cliques of ≥ this share of the largest
    cliques_tried: int = 4  # largest cliques whose homographies are scored
    max_clique_steps: int = 2_000_000  # bound on the clique search (then a smaller graph)
    ransac_px: float = 4.0  # MAGSAC threshold and inlier distance, mosaic px
    # No fit with wrong points had more than 4 inliers (80 demo and 82 NAIP pairs).
    min_inliers: int = 10
    # Plain cosine of the masked pair's embeddings. RSLoc's 0.5 + 0.5·cos ≥ 0.92 means cos ≥ 0.84,
    # which would reject most true cross-date pairs with EfficientNet-Lite2: true pairs scored
    # 0.66–0.90 and wrong ones 0.57–0.87, so this threshold only guards against gross errors.
    min_similarity: float = 0.6
    max_scale_error: float = 1.35  # local scale after resizing within [1/x, x]
    max_anisotropy: float = 1.35  # ratio of the local singular values
    max_perspective: float = 0.1  # largest change of the projective divisor across the patch

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1 or not 0 < self.clique_ratio <= 1:
            raise ValueError(f"ratio and clique_ratio must lie in (0, 1]: {self}")
        if self.min_mac_size < 4 or self.min_inliers < 4 or self.cliques_tried < 1:
            raise ValueError(f"min_mac_size and min_inliers need ≥ 4, cliques_tried ≥ 1: {self}")
        if min(self.max_scale_error, self.max_anisotropy) < 1 or self.max_perspective < 0:
            raise ValueError(f"max_scale_error, max_anisotropy ≥ 1, max_perspective ≥ 0: {self}")
        if min(self.compat_tol_px, self.ransac_px, self.min_pair_px) <= 0:
            raise ValueError(f"compat_tol_px, ransac_px and min_pair_px must be > 0: {self}")


@dataclass
class Features:
    """SIFT keypoints of one image: positions (corner convention) and 128-d descriptors."""

    xy: np.ndarray  # float32 (N, 2)
    descriptors: np.ndarray  # float32 (N, 128), integral values 0..255

    def __len__(self) -> int:
        return len(self.xy)


@dataclass
class PatchMatch:
    """The verdict on one patch against one mosaic, with what led to it."""

    accepted: bool
    reason: Reason
    keypoints: int  # SIFT keypoints in the resized patch
    matches: int  # ratio-test correspondences after merging near-duplicates
    mac_size: int  # correspondences in the clique whose homography won
    inliers: int  # correspondences within ransac_px of the homography
    similarity: float | None  # cosine of the masked pair's embeddings, when an encoder was given
    homography: np.ndarray | None  # 3×3 float64: ORIGINAL patch px → mosaic px
    src_xy: np.ndarray  # float64 (inliers, 2): original patch px
    dst_xy: np.ndarray  # float64 (inliers, 2): mosaic px


def extract_features(rgb: np.ndarray, params: VerifyParams | None = None) -> Features:
    """SIFT on the grey image (deterministic); keypoint positions in the corner convention.

    Uses `params.max_features` and `params.contrast_threshold`: cache mosaics' features per
    tile and settings."""
    p = params or VerifyParams()
    _check_rgb(rgb, "image")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create(nfeatures=p.max_features, contrastThreshold=p.contrast_threshold)
    keypoints, desc = sift.detectAndCompute(grey, None)
    if not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    xy = np.array([k.pt for k in keypoints], np.float32) + 0.5
    return Features(xy, desc.astype(np.float32))


def match_patch(
    patch_rgb: np.ndarray,
    mosaic_rgb: np.ndarray,
    params: VerifyParams | None = None,
    mosaic_features: Features | None = None,
    encoder: Encoder | None = None,
) -> PatchMatch:
    """Verify `patch_rgb` against `mosaic_rgb` (same ground, any pixel sizes): MAC-filtered SIFT
    correspondences, a checked homography, and the embedding re-check when `encoder` is given."""
    p = params or VerifyParams()
    _check_rgb(patch_rgb, "patch")
    _check_rgb(mosaic_rgb, "mosaic")
    mh, mw = mosaic_rgb.shape[:2]
    ph, pw = patch_rgb.shape[:2]
    # SIFT runs on the patch resized to the mosaic's pixels (removing the known anisotropic
    # scale); geometry runs in a ground-isotropic frame, `to_ground` for each image.
    resized = cv2.resize(
        patch_rgb, (mw, mh), interpolation=cv2.INTER_AREA if pw * ph > mw * mh else cv2.INTER_LINEAR
    )
    unscale = np.array([pw / mw, ph / mh])
    to_ground = (np.array([mw / pw, mw / pw]), np.array([1.0, ph * mw / (pw * mh)]))
    mosaic = mosaic_features
    if mosaic is None:
        mosaic = extract_features(mosaic_rgb, p)
    feats = extract_features(resized, p)
    result = _Verdict(len(feats))
    if min(len(feats), len(mosaic)) < p.min_inliers:
        return result.reject(Reason.TOO_FEW_KEYPOINTS)

    src, dst = _correspondences(feats, mosaic, p)
    src *= unscale
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
    result.homography = h / h[2, 2]
    result.src_xy, result.dst_xy = src[keep], dst[keep]

    ground_h = np.diag([*to_ground[1], 1.0]) @ result.homography @ np.diag([*1 / to_ground[0], 1.0])
    defect = homography_check(ground_h, (mw, mw * ph / pw), p)
    if defect != Reason.OK:
        return result.reject(defect)
    if result.inliers < p.min_inliers:
        return result.reject(Reason.TOO_FEW_INLIERS)
    if encoder is not None:
        result.similarity = overlap_similarity(patch_rgb, mosaic_rgb, result.homography, encoder)
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
    patch_rgb: np.ndarray, mosaic_rgb: np.ndarray, homography: np.ndarray, encoder: Encoder
) -> float:
    """Cosine of the embeddings of the patch warped into the mosaic and the mosaic, both masked
    to the warped patch's footprint and cropped to its bounding box."""
    mh, mw = mosaic_rgb.shape[:2]
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    h_idx = np.linalg.inv(shift) @ homography @ shift  # pixel-index convention for OpenCV
    warped = cv2.warpPerspective(patch_rgb, h_idx, (mw, mh), flags=cv2.INTER_LINEAR)
    ones = np.full(patch_rgb.shape[:2], 255, np.uint8)
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
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(
        _root_sift(patch.descriptors), _root_sift(mosaic.descriptors), k=2
    )
    pairs = [
        (m.queryIdx, m.trainIdx, m.distance / n.distance)
        for m, n in (k for k in knn if len(k) == 2)
        if n.distance > 0 and m.distance < p.ratio * n.distance
    ]
    if not pairs:
        empty = np.zeros((0, 2), np.float64)
        return empty, empty
    qi, ti, ratio = (np.array(v) for v in zip(*pairs, strict=True))
    order = np.lexsort((qi, ratio))  # best ratio first; ties by keypoint index
    src = patch.xy[qi[order]].astype(np.float64)
    dst = mosaic.xy[ti[order]].astype(np.float64)
    keep = _spread(src, dst, p.min_pair_px)
    return src[keep], dst[keep]


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
