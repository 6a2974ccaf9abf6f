"""DINOv2 and DINOv2 + SALAD encoders that users bring as local directories (never downloaded).

Both give a global descriptor (``embed``) for retrieval and the patch tokens of one layer
(``tokens``, ``local_dim``) for local-feature aggregation such as VLAD.

A DINOv2 model directory is a Hugging Face ``Dinov2Model`` folder (``save_pretrained``):

    <dir>/config.json                      model_type "dinov2"
    <dir>/model.safetensors                or pytorch_model.bin
    <dir>/preprocessor_config.json         optional: image_mean / image_std (else ImageNet's)

A DINOv2 + SALAD model directory (written by ``save_salad_model``):

    <dir>/backbone/                        a DINOv2 model directory as above
    <dir>/salad.json                       the head's hyper-parameters, all integers:
                                           num_channels (= the backbone's hidden_size),
                                           num_clusters, cluster_dim, token_dim, hidden,
                                           sinkhorn_iters, and optionally input_size
                                           (the side the model runs at; else the backbone's
                                           image_size)
    <dir>/salad.pt                         SaladHead.state_dict(), read with weights_only=True

The reference SALAD release (serizba/salad, ``dino_salad.ckpt``) is one state dict for the whole
model. Its ``aggregator.*`` keys become a SaladHead with ``salad_head_from_reference``; its
``backbone.model.*`` keys are the torch-hub DINOv2 layout, which must first be converted to a
Hugging Face ``Dinov2Model`` (transformers' DINOv2 conversion script) to fill ``backbone/``.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from rsloc_assets.retrieval.encoders import (
    GEM_EPS,
    GEM_P,
    _TorchEncoder,
    image_normalisation,
)

if TYPE_CHECKING:
    from transformers import Dinov2Model

log = logging.getLogger(__name__)

# torchvision's ImageNet statistics, which DINOv2 was trained with (its preprocessor_config.json).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# SALAD defaults: Izquierdo & Civera, CVPR 2024, and their released DINOv2-B model.
SALAD_CLUSTERS = 64
SALAD_CLUSTER_DIM = 128
SALAD_TOKEN_DIM = 256
SALAD_HIDDEN = 512
SALAD_SINKHORN_ITERS = 3
SALAD_CONFIG = "salad.json"
SALAD_WEIGHTS = "salad.pt"
SALAD_BACKBONE = "backbone"
SALAD_KEYS = (
    "num_channels",
    "num_clusters",
    "cluster_dim",
    "token_dim",
    "hidden",
    "sinkhorn_iters",
)
KINDS = ("dinov2", "dinov2-salad")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _slug(path: Path) -> str:
    """A model directory's name as [a-z0-9-], safe for file and table names."""
    return re.sub(r"[^a-z0-9]+", "-", path.resolve().name.lower()).strip("-") or "local"


def _load_dinov2(model_dir: Path) -> Dinov2Model:
    """A Dinov2Model from a local folder, every failure a one-line error naming the folder."""
    from transformers import Dinov2Model  # imported here: transformers takes seconds to load

    if not model_dir.is_dir():
        raise FileNotFoundError(f"DINOv2 model directory not found: {model_dir}")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no config.json in DINOv2 model directory {model_dir}; "
            "save the model there with Dinov2Model.save_pretrained"
        )
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a JSON object: {_first_line(err)}") from err
    if model_type != "dinov2":
        raise ValueError(f"{config_file} describes model_type {model_type!r}, not 'dinov2'")
    try:
        model, info = Dinov2Model.from_pretrained(
            model_dir, local_files_only=True, output_loading_info=True
        )
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load DINOv2 weights from {model_dir}: {_first_line(err)}"
        ) from err
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"weights in {model_dir} do not fit its config.json: {_first_line(err)}"
        ) from err
    # from_pretrained fills missing weights randomly with only a warning; refuse instead.
    mismatched = [key[0] if isinstance(key, tuple) else key for key in info["mismatched_keys"]]
    missing = sorted(info["missing_keys"]) + sorted(mismatched)
    if missing:
        raise ValueError(
            f"weights in {model_dir} are not a Dinov2Model's: {len(missing)} missing or "
            f"mismatched (first {missing[0]!r}); convert them to the Hugging Face layout"
        )
    return model


def _input_size(requested: int | None, default: int, patch: int) -> int:
    """The side images are resized to: the request or default, rounded to whole patches."""
    size = default if requested is None else requested
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"input_size must be a positive integer, got {size!r}")
    rounded = max(patch, round(size / patch) * patch)
    if rounded != size:
        log.info(
            "input size %d rounded to %d, a multiple of the patch size %d", size, rounded, patch
        )
    return rounded


class Dinov2Encoder(_TorchEncoder):
    """DINOv2 from a local Hugging Face folder: CLS ⊕ GeM of the last layer's patch tokens.

    ``tokens`` returns the patch tokens of block ``layer`` (0-based like ``model.blocks[i]``,
    negative from the end; default the last) for local aggregation."""

    local_dim: int
    layer: int

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        precision: str = "fp16",
        layer: int | None = None,
        input_size: int | None = None,
    ) -> None:
        path = Path(model_dir)
        model = _load_dinov2(path)
        config = model.config
        mean, std = image_normalisation(path, IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(model, mean, std, device, precision)
        self.patch_size = int(config.patch_size)
        # Dinov2Config's image_size defaults to 224 when config.json leaves it out.
        self.input_size = _input_size(input_size, int(config.image_size), self.patch_size)
        blocks = int(config.num_hidden_layers)
        chosen = blocks - 1 if layer is None else layer
        if (
            isinstance(chosen, bool)
            or not isinstance(chosen, int)
            or not -blocks <= chosen < blocks
        ):
            raise ValueError(
                f"layer must be an integer in [{-blocks}, {blocks - 1}] for the "
                f"{blocks}-block model in {path}, got {layer!r}"
            )
        self.layer = chosen % blocks
        self.local_dim = int(config.hidden_size)
        self.dim = 2 * self.local_dim
        self.name = f"dinov2-{_slug(path)}{self._size_tag(int(config.image_size))}"
        log.info(
            "loaded DINOv2 from %s on %s (%d-d, %d px, tokens of block %d)",
            path,
            self.device,
            self.dim,
            self.input_size,
            self.layer,
        )

    def _size_tag(self, default: int) -> str:
        """Name suffix for a non-default input size: it changes the descriptors, hence the table."""
        base = _input_size(None, default, self.patch_size)
        return "" if self.input_size == base else f"-{self.input_size}px"

    @property
    def num_tokens(self) -> int:
        """Patch tokens per image: (input_size / patch_size)²."""
        return (self.input_size // self.patch_size) ** 2

    def _last_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS (N×C) and patch tokens (N×T×C) of the last layer, after the final LayerNorm."""
        hidden = self._module(pixel_values=pixels).last_hidden_state.float()
        return hidden[:, 0], hidden[:, 1:]

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        cls, patches = self._last_tokens(pixels)
        gem = patches.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=1).pow(1.0 / GEM_P)
        return torch.cat([F.normalize(cls, dim=1), F.normalize(gem, dim=1)], dim=1)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels → N×T×local_dim patch tokens of block ``layer``."""
        out = self._module(pixel_values=pixels, output_hidden_states=True)
        # hidden_states[0] is the embedding layer's output, [i + 1] block i's.
        return out.hidden_states[self.layer + 1][:, 1:]


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class SaladHead(nn.Module):
    """SALAD aggregation (Izquierdo & Civera, CVPR 2024): tokens softly assigned to clusters.

    Optimal transport (log-domain Sinkhorn) with a dustbin decides how much of each token goes
    to each cluster; the descriptor is L2(L2(global token) ⊕ L2(intra-normalised clusters)).
    Training-time dropout is left out: this head is for inference."""

    def __init__(
        self,
        num_channels: int,
        num_clusters: int = SALAD_CLUSTERS,
        cluster_dim: int = SALAD_CLUSTER_DIM,
        token_dim: int = SALAD_TOKEN_DIM,
        hidden: int = SALAD_HIDDEN,
        sinkhorn_iters: int = SALAD_SINKHORN_ITERS,
    ) -> None:
        super().__init__()
        if min(num_channels, num_clusters, cluster_dim, token_dim, hidden, sinkhorn_iters) < 1:
            raise ValueError("SALAD head sizes and sinkhorn_iters must all be at least 1")
        self.num_channels = num_channels
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.token_dim = token_dim
        self.hidden = hidden
        self.sinkhorn_iters = sinkhorn_iters
        self.local_features = _mlp(num_channels, hidden, cluster_dim)
        self.scores = _mlp(num_channels, hidden, num_clusters)
        self.global_token = _mlp(num_channels, hidden, token_dim)
        self.dustbin = nn.Parameter(torch.tensor(1.0))

    @property
    def dim(self) -> int:
        """Descriptor length: token_dim + num_clusters × cluster_dim."""
        return self.token_dim + self.num_clusters * self.cluster_dim

    def hyper_parameters(self) -> dict[str, int]:
        """What salad.json stores to rebuild this head."""
        return {key: int(getattr(self, key)) for key in SALAD_KEYS}

    def assignment(self, tokens: torch.Tensor) -> torch.Tensor:
        """N×T×C tokens → N×(K+1)×T transport plan; column t is token t's mass over the K
        clusters and the dustbin (last row), summing to 1."""
        n, t, _ = tokens.shape
        k = self.num_clusters
        if t <= k:
            raise ValueError(f"SALAD needs more tokens than clusters, got {t} tokens for {k}")
        scores = self.scores(tokens).transpose(1, 2)
        couplings = torch.cat([scores, self.dustbin.expand(n, 1, t)], dim=1)
        # Marginals over T + K: each token carries 1, each cluster receives 1, the dustbin T − K.
        log_total = math.log(t + k)
        log_rows = torch.full((k + 1,), -log_total, device=tokens.device, dtype=tokens.dtype)
        log_rows[k] = math.log(t - k) - log_total
        log_cols = torch.full((t,), -log_total, device=tokens.device, dtype=tokens.dtype)
        row_pot = torch.zeros(n, k + 1, device=tokens.device, dtype=tokens.dtype)
        col_pot = torch.zeros(n, t, device=tokens.device, dtype=tokens.dtype)
        for _ in range(self.sinkhorn_iters):
            row_pot = log_rows - torch.logsumexp(couplings + col_pot[:, None, :], dim=2)
            col_pot = log_cols - torch.logsumexp(couplings + row_pot[:, :, None], dim=1)
        return torch.exp(couplings + row_pot[:, :, None] + col_pot[:, None, :] + log_total)

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """N×T×C patch tokens and N×C CLS → N×dim unit-norm descriptors."""
        plan = self.assignment(tokens)[:, : self.num_clusters]
        local = self.local_features(tokens)
        # Channel-major flattening (cluster_dim × num_clusters), as the reference release.
        clusters = F.normalize(torch.einsum("nkt,ntd->ndk", plan, local), dim=1).flatten(1)
        scene = F.normalize(self.global_token(cls), dim=1)
        return F.normalize(torch.cat([scene, clusters], dim=1), dim=1)


def salad_head_from_reference(
    state_dict: dict[str, torch.Tensor], sinkhorn_iters: int = SALAD_SINKHORN_ITERS
) -> SaladHead:
    """A SaladHead from the reference SALAD aggregator's weights (``aggregator.*`` keys of
    ``dino_salad.ckpt``, prefix optional): 1×1 convolutions become linear layers."""
    prefix = "aggregator." if any(key.startswith("aggregator.") for key in state_dict) else ""
    # Reference module → ours: (Sequential, index of first and second layer).
    layers = {
        "token_features": ("global_token", 0, 2),
        "cluster_features": ("local_features", 0, 3),
        "score": ("scores", 0, 3),
    }
    converted: dict[str, torch.Tensor] = {}
    try:
        for ref, (ours, first, second) in layers.items():
            for ref_index, our_index in ((first, 0), (second, 2)):
                for part in ("weight", "bias"):
                    value = state_dict[f"{prefix}{ref}.{ref_index}.{part}"]
                    converted[f"{ours}.{our_index}.{part}"] = (
                        value.flatten(1) if value.ndim > 1 else value
                    )
        converted["dustbin"] = state_dict[f"{prefix}dust_bin"].reshape(())
    except KeyError as err:
        raise ValueError(f"not a reference SALAD aggregator state dict: no key {err}") from err
    head = SaladHead(
        num_channels=converted["scores.0.weight"].shape[1],
        num_clusters=converted["scores.2.weight"].shape[0],
        cluster_dim=converted["local_features.2.weight"].shape[0],
        token_dim=converted["global_token.2.weight"].shape[0],
        hidden=converted["scores.0.weight"].shape[0],
        sinkhorn_iters=sinkhorn_iters,
    )
    head.load_state_dict(converted)
    return head


def save_salad_model(
    model_dir: str | Path, backbone: Dinov2Model, head: SaladHead, input_size: int | None = None
) -> Path:
    """Write the DINOv2 + SALAD directory layout (backbone/, salad.json, salad.pt)."""
    path = Path(model_dir)
    if head.num_channels != backbone.config.hidden_size:
        raise ValueError(
            f"head expects {head.num_channels} channels, backbone has {backbone.config.hidden_size}"
        )
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(path / SALAD_BACKBONE)
    config: dict[str, int] = head.hyper_parameters()
    if input_size is not None:
        config["input_size"] = input_size
    (path / SALAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    torch.save(head.state_dict(), path / SALAD_WEIGHTS)
    return path


def _read_salad_config(config_file: Path) -> dict[str, int]:
    """salad.json's integers, checked: every key in SALAD_KEYS, optionally input_size."""
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no {SALAD_CONFIG} in SALAD model directory {config_file.parent}; "
            f"write it with save_salad_model (keys: {', '.join(SALAD_KEYS)})"
        )
    try:
        config = json.loads(config_file.read_text())
    except ValueError as err:
        raise ValueError(f"{config_file} is not valid JSON: {_first_line(err)}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    allowed = {*SALAD_KEYS, "input_size"}
    missing = [key for key in SALAD_KEYS if key not in config]
    if missing:
        raise ValueError(f"{config_file}: missing keys {missing}")
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{config_file}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    bad = [k for k, v in config.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"{config_file}: {', '.join(bad)} must be positive integers")
    return config


def _read_salad_weights(weights_file: Path, head: SaladHead) -> dict[str, torch.Tensor]:
    """salad.pt's state dict, checked against the head salad.json describes."""
    if not weights_file.is_file():
        raise FileNotFoundError(
            f"no {SALAD_WEIGHTS} in SALAD model directory {weights_file.parent}; "
            "save SaladHead.state_dict() there with torch.save"
        )
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(
            f"cannot read {weights_file} as a torch state dict ({type(err).__name__}); "
            "save SaladHead.state_dict() there with torch.save"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights_file} must hold a state dict of tensors")
    expected = {key: tuple(value.shape) for key, value in head.state_dict().items()}
    problems = {
        "missing": sorted(set(expected) - set(state)),
        "unexpected": sorted(set(state) - set(expected)),
        "wrong shape": sorted(
            k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k]
        ),
    }
    found = [f"{what} {keys[:3]}" for what, keys in problems.items() if keys]
    if found:
        raise ValueError(
            f"{weights_file} does not match {SALAD_CONFIG}: {'; '.join(found)}; re-save both "
            "with save_salad_model (reference SALAD weights: salad_head_from_reference first)"
        )
    return state


class SaladEncoder(Dinov2Encoder):
    """DINOv2 backbone + SALAD head from a local directory (layout in the module docstring)."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        precision: str = "fp16",
        layer: int | None = None,
        input_size: int | None = None,
    ) -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"SALAD model directory not found: {path}")
        config_file = path / SALAD_CONFIG
        config = _read_salad_config(config_file)
        default_size = config.pop("input_size", None)
        head = SaladHead(**config)
        state = _read_salad_weights(path / SALAD_WEIGHTS, head)
        backbone = path / SALAD_BACKBONE
        if not backbone.is_dir():
            raise FileNotFoundError(
                f"no {SALAD_BACKBONE}/ in SALAD model directory {path}; "
                "put the DINOv2 Hugging Face folder there"
            )
        size = default_size if input_size is None else input_size
        super().__init__(backbone, device, precision, layer, size)
        if head.num_channels != self.local_dim:
            raise ValueError(
                f"{config_file}: num_channels {head.num_channels} differs from the backbone's "
                f"hidden_size {self.local_dim}"
            )
        if self.num_tokens <= head.num_clusters:
            raise ValueError(
                f"{config_file}: {head.num_clusters} clusters need more than the "
                f"{self.num_tokens} tokens of a {self.input_size} px input; raise input_size"
            )
        head.load_state_dict(state)
        self._head = head.eval().to(self.device)
        self.dim = head.dim
        own_default = default_size or int(self._module.config.image_size)
        self.name = f"dinov2-salad-{_slug(path)}{self._size_tag(own_default)}"
        log.info("loaded SALAD head from %s (%d-d descriptors)", path, self.dim)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        cls, patches = self._last_tokens(pixels)
        # Sinkhorn's logsumexp stays in fp32 whatever the backbone's precision.
        with torch.autocast(device_type=torch.device(self.device).type, enabled=False):
            return self._head(patches, cls)


def load_local_encoder(
    kind: str,
    model_dir: str | Path,
    device: str = "auto",
    precision: str = "fp16",
    layer: int | None = None,
    input_size: int | None = None,
) -> Dinov2Encoder:
    """Build a user-supplied encoder from a local directory: "dinov2" or "dinov2-salad"."""
    if kind == "dinov2":
        return Dinov2Encoder(model_dir, device, precision, layer, input_size)
    if kind == "dinov2-salad":
        return SaladEncoder(model_dir, device, precision, layer, input_size)
    raise ValueError(f"unknown local encoder kind {kind!r}; choose one of {', '.join(KINDS)}")
