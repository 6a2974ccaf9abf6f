"""Global descriptors fitted on the gallery itself, without labels: GeM or VLAD over an encoder's
local features, then optional PCA-whitening.

A `DescriptorModel` is the fitted artefact (VLAD vocabulary, whitening); its `version` hashes
everything that defines it, and the described encoder's name carries that version, so a refit
writes a new LanceDB table and nothing embedded by an older model is ever searched.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rsloc_assets.layout import write_atomic
from rsloc_assets.retrieval.encoders import GEM_EPS, GEM_P, Encoder

log = logging.getLogger(__name__)

KMEANS_ITERATIONS = 25  # spherical k-means on ≤ 200k tokens: assignments settle by ~15
KMEANS_SAMPLE = 200_000  # tokens the vocabulary is fitted on (AnyLoc fits on ~1M at 32 words)
WHITEN_SHRINK = 0.1  # eigenvalues regularised by this share of their mean before λ^-½


class Aggregation(StrEnum):
    """How an image's local features become one vector."""

    GEM = "gem"  # generalised mean (p = 3) over the encoder's feature map
    GRID = "grid"  # GeM per cell of a grid × grid split of the feature map, concatenated
    VLAD = "vlad"  # hard-assignment VLAD over a vocabulary fitted on the gallery (AnyLoc)


class LocalEncoder(Encoder, Protocol):
    """An encoder that also exposes its local features (feature-map cells or patch tokens)."""

    local_dim: int

    def tokens(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×3 RGB uint8 images → float32 N×T×local_dim local features, not normalised."""
        ...


@dataclass(frozen=True)
class DescriptorSpec:
    """What the user asks for: the aggregation, its vocabulary size, the whitened dimension
    (0: none) and how many gallery tiles the fit samples."""

    aggregation: Aggregation = Aggregation.GEM
    vlad_clusters: int = 32  # AnyLoc's vocabulary size for map-tile retrieval
    grid: int = 3  # one cell per tile of a 3×3 mosaic
    whitening_dim: int = 0
    sample_tiles: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.aggregation not in set(Aggregation):
            choices = ", ".join(Aggregation)
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose from {choices}")
        if (
            min(self.vlad_clusters, self.sample_tiles) < 2
            or self.grid < 1
            or self.whitening_dim < 0
        ):
            raise ValueError(
                f"vlad_clusters ≥ 2, grid ≥ 1, whitening_dim ≥ 0, sample_tiles ≥ 2 needed: {self}"
            )

    @property
    def needs_fit(self) -> bool:
        """Whether anything is fitted: a VLAD vocabulary or a whitening."""
        return self.aggregation == Aggregation.VLAD or self.whitening_dim > 0


def gem(tokens: np.ndarray) -> np.ndarray:
    """GeM (p = 3) over the token axis of N×T×C features: N×C, not normalised."""
    clamped = np.maximum(tokens, GEM_EPS, dtype=np.float32)
    return np.power(np.mean(clamped**GEM_P, axis=1), 1.0 / GEM_P)


def pool_tokens(tokens: torch.Tensor, grid: int = 0) -> torch.Tensor:
    """L2-normalised GeM (p = 3) of N×T×C tokens: over the whole map (grid 0), or in each cell of
    a grid × grid split of the square token map, each cell L2-normalised, concatenated row-major.
    The one pooling both embedding (`grid_gem`) and adapter training use."""
    n, t, c = tokens.shape

    def pooled(x: torch.Tensor) -> torch.Tensor:
        g = x.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=1).pow(1.0 / GEM_P)
        return torch.nn.functional.normalize(g, dim=1)

    if not grid:
        return pooled(tokens)
    side = math.isqrt(t)
    if side * side != t or side < grid:
        raise ValueError(f"{t} local features do not form a square map of at least {grid}×{grid}")
    cells = tokens.reshape(n, side, side, c)
    edges = np.linspace(0, side, grid + 1).round().astype(int).tolist()
    parts = [
        pooled(cells[:, y0:y1, x0:x1].reshape(n, -1, c))
        for y0, y1 in itertools.pairwise(edges)
        for x0, x1 in itertools.pairwise(edges)
    ]
    return torch.nn.functional.normalize(torch.cat(parts, dim=1), dim=1)


def grid_gem(tokens: np.ndarray, grid: int) -> np.ndarray:
    """GeM of each cell of a grid × grid split of N×T×C tokens laid out on a square map,
    each cell L2-normalised, concatenated in row-major order and L2-normalised: N×(grid²·C).

    Unlike GeM over the whole map it keeps where things are, so the mosaic one tile away, which
    shares 6 of 9 tiles, no longer looks alike (NAIP cross-date patch recall@1 of the true tile
    0.17 → 0.55 at grid 3: bench/results/descriptors*.json)."""
    with torch.inference_mode():
        return pool_tokens(torch.from_numpy(np.ascontiguousarray(tokens, np.float32)), grid).numpy()


def l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def fit_vocabulary(tokens: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means (k-means++ seeding) of unit-normalised tokens: clusters×C centroids."""
    rng = np.random.default_rng(seed)
    x = l2(tokens.reshape(-1, tokens.shape[-1]).astype(np.float32))
    if len(x) > KMEANS_SAMPLE:
        x = x[rng.choice(len(x), KMEANS_SAMPLE, replace=False)]
    if len(x) < clusters:
        raise ValueError(f"{len(x)} local features cannot fit a {clusters}-word vocabulary")
    centroids = [x[rng.integers(len(x))]]
    nearest = 1.0 - x @ centroids[0]
    for _ in range(clusters - 1):
        weights = np.maximum(nearest, 0.0) ** 2
        pick = rng.choice(len(x), p=weights / weights.sum()) if weights.sum() > 0 else 0
        centroids.append(x[pick])
        nearest = np.minimum(nearest, 1.0 - x @ x[pick])
    c = np.stack(centroids)
    for _ in range(KMEANS_ITERATIONS):
        assign = np.argmax(x @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = x[rng.choice(len(x), int(empty.sum()), replace=False)]
        c = l2(sums)
    return c.astype(np.float32)


def vlad(tokens: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Hard-assignment VLAD of N×T×C tokens: residuals to the nearest word summed per word,
    power- (signed √) then intra-normalised, flattened and L2-normalised: N×(K·C)."""
    n, _, c = tokens.shape
    x = l2(tokens.astype(np.float32))
    assign = np.argmax(x @ centroids.T, axis=2)  # N×T
    out = np.zeros((n, len(centroids), c), dtype=np.float32)
    for k in range(len(centroids)):
        mask = (assign == k)[..., None]
        out[:, k] = ((x - centroids[k]) * mask).sum(axis=1)
    out = np.sign(out) * np.sqrt(np.abs(out))
    return l2(l2(out, axis=2).reshape(n, -1))


def fit_whitening(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening (mean, D×dim projection) learned on N×D unit vectors; dim ≤ N − 1.

    Eigenvalues are shrunk towards their mean (`WHITEN_SHRINK`) so the smallest kept
    components, estimated from few samples, are not blown up."""
    x = np.asarray(vectors, dtype=np.float64)
    if dim >= len(x):
        raise ValueError(
            f"whitening to {dim} dimensions needs more than {dim} samples, got {len(x)}"
        )
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    eig = s**2 / max(len(x) - 1, 1)
    kept = eig[:dim] + WHITEN_SHRINK * eig[:dim].mean()
    projection = vt[:dim].T / np.sqrt(kept)
    return mean.astype(np.float32), projection.astype(np.float32)


@dataclass
class DescriptorModel:
    """A fitted descriptor: which encoder (and adapter) it was fitted for, the spec, the
    vocabulary and the whitening it holds, and how many samples it saw."""

    base: str
    spec: DescriptorSpec
    adapter: str | None = None
    centroids: np.ndarray | None = None
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None
    samples: int = 0

    @property
    def version(self) -> str:
        """A digest of everything that changes the vectors this model produces."""
        h = hashlib.sha256(json.dumps(self._header(), sort_keys=True).encode())
        for array in (self.centroids, self.mean, self.projection):
            if array is not None:
                h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return h.hexdigest()[:12]

    @property
    def identity(self) -> bool:
        """GeM with no whitening and no adapter: the encoder's own embedding, nothing fitted."""
        spec = self.spec
        return spec.aggregation == Aggregation.GEM and not spec.needs_fit and self.adapter is None

    @property
    def fitted(self) -> bool:
        """Whether the model holds anything learned from a gallery (vocabulary, whitening,
        adapter); unfitted models are the same everywhere and need no version in their name."""
        return self.centroids is not None or self.projection is not None or bool(self.adapter)

    def tag(self) -> str:
        """Short, table-safe description, e.g. "grid3" or "vlad32-w256-3f2a9c1b40de"."""
        spec = self.spec
        parts = [
            {
                Aggregation.GEM: "gem",
                Aggregation.GRID: f"grid{spec.grid}",
                Aggregation.VLAD: f"vlad{spec.vlad_clusters}",
            }[spec.aggregation]
        ]
        if self.projection is not None:
            parts.append(f"w{self.projection.shape[1]}")
        if self.adapter:
            parts.append("a")
        return "-".join([*parts, self.version] if self.fitted else parts)

    def dim(self, base_dim: int, local_dim: int | None) -> int:
        """Output dimension for an encoder of `base_dim` (global) and `local_dim` (tokens)."""
        if self.projection is not None:
            return int(self.projection.shape[1])
        if self.spec.aggregation == Aggregation.VLAD:
            return int(self.spec.vlad_clusters * (local_dim or 0))
        if self.spec.aggregation == Aggregation.GRID:
            return int(self.spec.grid**2 * (local_dim or 0))
        return local_dim if self.adapter and local_dim else base_dim

    def aggregate(self, tokens: np.ndarray) -> np.ndarray:
        """N×T×C local features → N×D unit rows (before whitening)."""
        if self.spec.aggregation == Aggregation.VLAD:
            if self.centroids is None:
                raise ValueError("a VLAD descriptor model needs its fitted vocabulary")
            return vlad(tokens, self.centroids)
        if self.spec.aggregation == Aggregation.GRID:
            return grid_gem(tokens, self.spec.grid)
        return l2(gem(tokens))

    def whiten(self, vectors: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised rows (unchanged when the model has no whitening)."""
        if self.projection is None or self.mean is None:
            return vectors
        return l2((vectors - self.mean) @ self.projection).astype(np.float32)

    def _header(self) -> dict:
        spec = asdict(self.spec) | {"aggregation": str(self.spec.aggregation)}
        return {"base": self.base, "spec": spec, "adapter": self.adapter, "samples": self.samples}

    def save(self, path: Path) -> None:
        """Write the model to one .npz file atomically (header as JSON inside)."""
        arrays = {
            name: array
            for name, array in (
                ("centroids", self.centroids),
                ("mean", self.mean),
                ("projection", self.projection),
            )
            if array is not None
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, header=np.array(json.dumps(self._header())), **arrays)

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> DescriptorModel:
        """Read a model written by `save`; a damaged file is a one-line ValueError."""
        try:
            with np.load(path) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in ("centroids", "mean", "projection") if k in z.files}
            spec = header["spec"] | {"aggregation": Aggregation(header["spec"]["aggregation"])}
            return cls(
                header["base"],
                DescriptorSpec(**spec),
                header["adapter"],
                samples=header["samples"],
                **arrays,
            )
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"cannot read descriptor model {path}: {err}") from err


class TokenTransform(Protocol):
    """A trained map of local features to local features (the gallery adapter)."""

    version: str

    def __call__(self, tokens: np.ndarray) -> np.ndarray: ...


class DescribedEncoder:
    """A base encoder whose embedding is a fitted descriptor of its (adapted) local features.

    Its name carries the descriptor's version, so its LanceDB table is its own."""

    def __init__(
        self, base: LocalEncoder, model: DescriptorModel, adapter: TokenTransform | None = None
    ) -> None:
        if model.base != base.name or model.adapter != (adapter and adapter.version):
            raise ValueError(
                f"descriptor model {model.version} was fitted for encoder {model.base!r} with "
                f"adapter {model.adapter}, not {base.name!r} with {adapter and adapter.version}"
            )
        self.base, self.model, self.adapter = base, model, adapter
        self.name = f"{base.name}-{model.tag()}"
        self.dim = model.dim(base.dim, getattr(base, "local_dim", None))
        self.input_size = base.input_size
        self.device = base.device

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed N×H×W×3 RGB uint8 images into float32 N×dim unit-norm rows."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.model.spec.aggregation == Aggregation.GEM and self.adapter is None:
            vectors = self.base.embed(images)
        else:
            tokens = self.base.tokens(images)
            if self.adapter is not None:
                tokens = self.adapter(tokens)
            vectors = self.model.aggregate(tokens)
        return self.model.whiten(vectors).astype(np.float32)
