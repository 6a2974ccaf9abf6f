"""The per-tile cache of gallery mosaics' SIFT features: one file per tile, time and SIFT
settings under the data folder's `work/features/`, so each mosaic is described once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.grids import TileKey
from rsloc_assets.layout import write_atomic
from rsloc_assets.verification.matching import Features, VerifyParams, extract_features


def save_features(path: Path, features: Features) -> None:
    """Write features to an .npz file atomically (descriptors stored losslessly as uint8)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, xy=features.xy, descriptors=features.descriptors.astype(np.uint8))

    write_atomic(path, write)


def load_features(path: Path) -> Features:
    """Read features written by `save_features`; a damaged file is a one-line ValueError."""
    try:
        with np.load(path) as z:
            xy, desc = z["xy"], z["descriptors"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"cannot read SIFT features from {path}: {err}") from err
    n = len(xy)
    if xy.shape != (n, 2) or desc.shape != (n, 128):
        raise ValueError(f"cannot read SIFT features from {path}: inconsistent array shapes")
    return Features(xy.astype(np.float32), desc.astype(np.float32))


class FeatureCache:
    """SIFT features of mosaics under `root`, keyed by tile, time and the SIFT settings."""

    def __init__(self, root: Path, params: VerifyParams) -> None:
        self.root = root / f"sift_{params.max_features}_{params.contrast_threshold:g}"
        self.params = params

    def path(self, ref: TileRef) -> Path:
        return self.root / f"{ref.z}_{ref.col}_{ref.row}_{ref.time or 'none'}.npz"

    def features(self, ref: TileRef, mosaic: np.ndarray) -> Features:
        """The cached features of `ref`'s mosaic, extracted and stored on first use."""
        path = self.path(ref)
        if path.exists():
            return load_features(path)
        features = extract_features(mosaic, self.params)
        save_features(path, features)
        return features

    def mosaics(
        self, gallery: Gallery, manifest: pa.Table, keys: set[str]
    ) -> dict[str, tuple[np.ndarray, Features]]:
        """Mosaic and features of each tile key at its manifest time; unreadable tiles left out."""
        times = dict(zip(manifest["key"].to_pylist(), manifest["time"].to_pylist(), strict=True))
        tiles = [TileKey.parse(k) for k in sorted(keys)]
        refs = [TileRef(t.z, t.col, t.row, times[t.key]) for t in tiles]
        return {
            ref.key: (mosaic, self.features(ref, mosaic))
            for ref, mosaic in gallery.mosaics(refs)
            if mosaic is not None
        }
