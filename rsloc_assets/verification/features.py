"""The per-tile cache of gallery mosaics' SIFT features: one file per tile, time, SIFT settings
and working size under the data folder's `work/features/`, so each mosaic is described once per
size it is matched at (`matching.working_size`: one per query ground resolution)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from rsloc_assets.gallery.reader import MOSAIC_PX, Gallery, TileRef
from rsloc_assets.grids import TileKey
from rsloc_assets.layout import write_atomic
from rsloc_assets.verification.matching import (
    Features,
    VerifyParams,
    extract_features,
    working_size,
)


def save_features(path: Path, features: Features) -> None:
    """Write features to an .npz file atomically (descriptors stored losslessly as uint8)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                xy=features.xy,
                descriptors=features.descriptors.astype(np.uint8),
                size=np.array(features.size, np.int64),
            )

    write_atomic(path, write)


def load_features(path: Path) -> Features:
    """Read features written by `save_features`; a damaged file is a one-line ValueError."""
    try:
        with np.load(path) as z:
            xy, desc, size = z["xy"], z["descriptors"], z["size"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"cannot read SIFT features from {path}: {err}") from err
    n = len(xy)
    if xy.shape != (n, 2) or desc.shape != (n, 128) or size.shape != (2,):
        raise ValueError(f"cannot read SIFT features from {path}: inconsistent array shapes")
    w, h = (int(v) for v in size)
    return Features(xy.astype(np.float32), desc.astype(np.float32), (w, h))


class FeatureCache:
    """SIFT features of mosaics under `root`, keyed by tile, time, the SIFT and CLAHE settings and
    the size SIFT ran at."""

    def __init__(self, root: Path, params: VerifyParams) -> None:
        name = f"sift_{params.max_features}_{params.contrast_threshold:g}"
        if params.clahe_clip > 0:
            name += f"_clahe_{params.clahe_clip:g}_{params.clahe_grid}"
        self.root = root / name
        self.params = params

    def path(self, ref: TileRef, size: tuple[int, int] = (MOSAIC_PX, MOSAIC_PX)) -> Path:
        """The file of `ref`'s mosaic features at `size` = (w, h). The time enters as a hash, so
        that any stored time names one short file inside `root`."""
        w, h = (int(v) for v in size)
        time_ = hashlib.sha256(ref.time.encode()).hexdigest()[:16]
        return self.root / f"{int(ref.z)}_{int(ref.col)}_{int(ref.row)}_{time_}_{w}x{h}.npz"

    def features(
        self, ref: TileRef, mosaic: np.ndarray, size: tuple[int, int] | None = None
    ) -> Features:
        """The cached features of `ref`'s mosaic at `size` (default the mosaic's own), extracted
        and stored on first use; a file holding another size is replaced."""
        size = (mosaic.shape[1], mosaic.shape[0]) if size is None else size
        path = self.path(ref, size)
        if path.exists():
            features = load_features(path)
            if features.size == tuple(size):
                return features
        features = extract_features(mosaic, self.params, size)
        save_features(path, features)
        return features

    def mosaics(
        self,
        gallery: Gallery,
        times: Mapping[str, str],
        keys: Iterable[str],
        patch_size: tuple[int, int] | None = None,
    ) -> dict[str, tuple[np.ndarray, Features]]:
        """Mosaic and features of each tile key at its time in `times` (the manifest's, see
        `key_times`); keys not there and unreadable tiles left out.

        Features are at the working size for patches of `patch_size` = (w, h), as `match_patch`
        uses them; at the mosaic's own size without one."""
        tiles = [TileKey.parse(k) for k in sorted(set(keys) & times.keys())]
        refs = [TileRef(t.z, t.col, t.row, times[t.key]) for t in tiles]
        out = {}
        for ref, mosaic in gallery.mosaics(refs):
            if mosaic is None:
                continue
            own = (mosaic.shape[1], mosaic.shape[0])
            if patch_size is None:
                size = own
            else:
                size = working_size(patch_size, own, self.params.patch_upsample)
            out[ref.key] = (mosaic, self.features(ref, mosaic, size))
        return out
