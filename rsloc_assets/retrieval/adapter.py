"""Self-supervised adaptation of an encoder's local features to the user's gallery, no labels.

A residual MLP on every local feature (feature-map cell or patch token) is trained with a
symmetric InfoNCE loss on GeM-pooled views: two views of one tile are positives (the tile at two
of the gallery's `time_` values when it has several, else two photometric and geometric
augmentations of one mosaic); the other tiles of the batch are negatives, except the tile's own
neighbours, whose mosaics overlap it. The frozen encoder runs once per view, before training,
and its local features are cached, so training epochs cost only the small MLP.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.layout import write_atomic
from rsloc_assets.retrieval.descriptors import LocalEncoder, pool_tokens
from rsloc_assets.retrieval.encoders import resize_square

log = logging.getLogger(__name__)

HOLD_OUT = 0.1  # share of the sampled tiles kept out of training to measure view recall
MAX_VIEWS = 8  # views cached per tile in small galleries (more add little but cost a forward)


@dataclass(frozen=True)
class AdapterParams:
    """Training settings. The frozen forward passes dominate on a CPU: EfficientNet-Lite2 runs
    ~14 images/s on this project's 2-core machine (bench/results/embedding.json), so the default
    budget of 6,000 views costs ~7 minutes whatever the gallery's size."""

    view_budget: int = 6000  # frozen forward passes: tiles sampled × views per tile
    views: int = 2  # views per tile when the gallery is large enough to sample budget/views
    epochs: int = 20
    batch_size: int = 128
    hidden: int = 256
    temperature: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 1e-4
    neighbour_tiles: int = 1  # tiles this close (grid cells, either axis) are not negatives
    grid: int = 0  # pooling the loss trains: 0 whole-map GeM, else the grid aggregation's
    seed: int = 0

    def __post_init__(self) -> None:
        if self.view_budget < 4 or self.views < 2 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"view_budget ≥ 4, views ≥ 2, epochs ≥ 1, batch_size ≥ 2: {self}")
        if self.temperature <= 0 or self.lr <= 0 or self.hidden < 1:
            raise ValueError(f"temperature, lr and hidden must be positive: {self}")


class TokenAdapter(torch.nn.Module):
    """t + MLP(t) on every local feature; the last layer starts at zero, so an untrained
    adapter is the identity and training starts from the frozen encoder's descriptor."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim)
        )
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mlp(tokens)


@dataclass
class Adapter:
    """A trained adapter: the encoder it adapts, its settings, weights and training record."""

    base: str
    local_dim: int
    params: AdapterParams
    state: dict[str, torch.Tensor]
    record: dict = field(default_factory=dict)
    device: str = "cpu"
    _module: TokenAdapter | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        """A digest of the adapter's definition and weights."""
        header = {"base": self.base, "local_dim": self.local_dim, "params": asdict(self.params)}
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for name in sorted(self.state):
            h.update(name.encode())
            h.update(self.state[name].detach().cpu().float().numpy().tobytes())
        return h.hexdigest()[:12]

    def module(self) -> TokenAdapter:
        if self._module is None:
            module = TokenAdapter(self.local_dim, self.params.hidden)
            module.load_state_dict(self.state)
            self._module = module.eval().to(self.device)
        return self._module

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """Adapt N×T×C local features (float32 in, float32 out)."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).to(self.device)
            return self.module()(x).cpu().numpy()

    def save(self, path: Path) -> None:
        """Write weights and header to one file atomically (loadable with weights_only)."""
        header = json.dumps(
            {
                "base": self.base,
                "local_dim": self.local_dim,
                "params": asdict(self.params),
                "record": self.record,
            }
        )
        buffer = io.BytesIO()
        torch.save({"header": header, "state": self.state}, buffer)
        write_atomic(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Adapter:
        """Read an adapter written by `save`; a damaged file is a one-line ValueError."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            header = json.loads(blob["header"])
            params = AdapterParams(**header["params"])
            return cls(
                header["base"], header["local_dim"], params, blob["state"], header["record"], device
            )
        except (
            OSError,
            KeyError,
            ValueError,
            TypeError,
            RuntimeError,
            pickle.UnpicklingError,
        ) as err:
            raise ValueError(f"cannot read adapter {path}: {err}") from err


def augment(mosaic: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Another look at the same ground, at `size` px: a small turn and scale change, then a
    season's colours, haze, blur and sensor noise."""
    image = resize_square(mosaic, size).astype(np.float32) / 255.0
    angle, scale = rng.uniform(-20.0, 20.0), rng.uniform(0.9, 1.1)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    image = cv2.warpAffine(image, turn, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-15.0, 15.0)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0.0, 1.0)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    image = (image - 0.5) * rng.uniform(0.7, 1.3) + 0.5
    image *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    haze = rng.uniform(0.0, 0.35)
    image = image * (1 - haze) + haze * rng.uniform(0.75, 0.95, size=3).astype(np.float32)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.5))
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape).astype(np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class TrainingViews:
    """Cached local features of the sampled tiles: tokens (tiles × views × T × C, float16), the
    tiles' grid positions, and whether positives are other dates or augmentations."""

    tokens: np.ndarray
    cols: np.ndarray
    rows: np.ndarray
    multi_date: bool
    seconds: float


def _sample(manifest: pa.Table, params: AdapterParams) -> tuple[list[int], int]:
    """Indices of the tiles to train on and the views per tile, within the view budget."""
    n = manifest.num_rows
    tiles = min(n, params.view_budget // params.views)
    views = max(params.views, min(MAX_VIEWS, params.view_budget // max(tiles, 1)))
    rng = np.random.default_rng(params.seed)
    return sorted(rng.choice(n, tiles, replace=False).tolist()), views


def _view_refs(
    refs: list[TileRef], times: dict[str, list[str]], views: int
) -> Iterator[list[TileRef]]:
    """Per view, the tiles at the time that view shows (cycling through each tile's times)."""
    for v in range(views):
        yield [
            TileRef(r.z, r.col, r.row, times[r.key][v % len(times[r.key])]) if times[r.key] else r
            for r in refs
        ]


def cache_views(
    gallery: Gallery,
    manifest: pa.Table,
    encoder: LocalEncoder,
    params: AdapterParams,
    batch_size: int = 32,
) -> TrainingViews:
    """Run the frozen encoder once on every view of the sampled tiles and keep its local
    features. Positives come from other dates when most sampled tiles have several."""
    start = time.perf_counter()
    picked, views = _sample(manifest, params)
    rows = manifest.take(picked).to_pylist()
    refs = [TileRef(r["level"], r["col"], r["row"], r["time"]) for r in rows]
    times = {k: t for z in sorted({r.z for r in refs}) for k, t in gallery.tile_times(z).items()}
    own = {r.key: sorted(set(times.get(r.key, [r.time]))) for r in refs}
    multi_date = sum(len(t) > 1 for t in own.values()) > len(refs) / 2
    if not multi_date:
        own = {r.key: [r.time] for r in refs}
    index = {r.key: i for i, r in enumerate(refs)}
    rng = np.random.default_rng(params.seed + 1)
    cache: np.ndarray | None = None
    for v, view_refs in enumerate(_view_refs(refs, own, views)):
        images: list[np.ndarray] = []
        slots: list[int] = []
        for ref, mosaic in gallery.mosaics(view_refs):
            if mosaic is None:
                continue
            slots.append(index[ref.key])
            images.append(augment(mosaic, encoder.input_size, rng))
            if len(images) == batch_size:
                cache = _store(cache, encoder, images, slots, v, len(refs), views)
                images, slots = [], []
        if images:
            cache = _store(cache, encoder, images, slots, v, len(refs), views)
        log.info("adapter: cached view %d/%d of %d tiles", v + 1, views, len(refs))
    if cache is None:
        raise ValueError("no readable gallery mosaic to adapt the encoder on")
    cols = np.array([r.col for r in refs])
    grid_rows = np.array([r.row for r in refs])
    return TrainingViews(cache, cols, grid_rows, multi_date, time.perf_counter() - start)


def _store(
    cache: np.ndarray | None,
    encoder: LocalEncoder,
    images: list[np.ndarray],
    slots: list[int],
    view: int,
    tiles: int,
    views: int,
) -> np.ndarray:
    tokens = encoder.tokens(np.stack(images)).astype(np.float16)
    if cache is None:
        cache = np.zeros((tiles, views, *tokens.shape[1:]), dtype=np.float16)
    cache[slots, view] = tokens
    return cache


def _negatives_mask(cols: torch.Tensor, rows: torch.Tensor, reach: int) -> torch.Tensor:
    """True where two different tiles of a batch are neighbours (not to be used as negatives)."""
    near = ((cols[:, None] - cols[None]).abs() <= reach) & (
        (rows[:, None] - rows[None]).abs() <= reach
    )
    return near & ~torch.eye(len(cols), dtype=torch.bool, device=cols.device)


def view_recall(
    module: TokenAdapter, tokens: torch.Tensor, device: str, grid: int = 0, chunk: int = 256
) -> float:
    """Share of held-out tiles whose view 1 retrieves its own view 0 first among all view 0s."""

    def describe(view: int) -> torch.Tensor:
        parts = [
            pool_tokens(module(tokens[i : i + chunk, view].float().to(device)), grid)
            for i in range(0, len(tokens), chunk)
        ]
        return torch.cat(parts)

    with torch.inference_mode():
        a, b = describe(0), describe(1)
    best = (b @ a.T).argmax(dim=1).cpu()
    return float((best == torch.arange(len(tokens))).float().mean())


def train_adapter(
    views: TrainingViews, base: str, params: AdapterParams, device: str = "cpu"
) -> Adapter:
    """Train the adapter on cached views; held-out tiles measure view recall before and after."""
    start = time.perf_counter()
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    n, v, _, dim = views.tokens.shape
    order = rng.permutation(n)
    held = order[: max(2, math.ceil(HOLD_OUT * n))] if n >= 20 else order[:0]
    train = np.setdiff1d(order, held)
    tokens = torch.from_numpy(views.tokens)
    cols, rows = torch.from_numpy(views.cols), torch.from_numpy(views.rows)
    module = TokenAdapter(dim, params.hidden).to(device)
    optimiser = torch.optim.AdamW(
        module.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    before = view_recall(module, tokens[held], device, params.grid) if len(held) else None
    losses = []
    for epoch in range(params.epochs):
        module.train()
        total, batches = 0.0, 0
        shuffled = rng.permutation(train)
        for i in range(0, len(shuffled), params.batch_size):
            idx = torch.from_numpy(shuffled[i : i + params.batch_size])
            if len(idx) < 2:
                continue
            pair = torch.from_numpy(np.stack([rng.choice(v, 2, replace=False) for _ in idx]))
            a = pool_tokens(module(tokens[idx, pair[:, 0]].float().to(device)), params.grid)
            b = pool_tokens(module(tokens[idx, pair[:, 1]].float().to(device)), params.grid)
            logits = a @ b.T / params.temperature
            mask = _negatives_mask(cols[idx], rows[idx], params.neighbour_tiles).to(device)
            logits = logits.masked_fill(mask, float("-inf"))
            target = torch.arange(len(idx), device=device)
            loss = (
                torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)
            ) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
        log.info("adapter epoch %d/%d: loss %.4f", epoch + 1, params.epochs, losses[-1])
    module.eval()
    after = view_recall(module, tokens[held], device, params.grid) if len(held) else None
    record = {
        "tiles": int(n),
        "views_per_tile": int(v),
        "positives": "other dates" if views.multi_date else "augmentations",
        "held_out_tiles": len(held),
        "view_recall_at_1_before": before,
        "view_recall_at_1_after": after,
        "loss_first_epoch": losses[0],
        "loss_last_epoch": losses[-1],
        "cache_seconds": round(views.seconds, 1),
        "train_seconds": round(time.perf_counter() - start, 1),
        "device": device,
    }
    state = {k: t.detach().cpu() for k, t in module.state_dict().items()}
    return Adapter(base, dim, params, state, record, device)
