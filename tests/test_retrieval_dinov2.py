"""DINOv2 and DINOv2 + SALAD encoders run for real on tiny random models saved by the tests."""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from rsloc_assets.retrieval.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dinov2Encoder,
    SaladHead,
    load_local_encoder,
    salad_head_from_reference,
    save_salad_model,
)
from rsloc_assets.retrieval.encoders import resize_square

HIDDEN = 32
SIDE = 56  # 4×4 patches of 14 px
PATCHES = (SIDE // 14) ** 2


def tiny_dinov2(seed: int = 0) -> Dinov2Model:
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIDE,
        patch_size=14,
    )
    return Dinov2Model(config).eval()


def tiny_head(seed: int = 1, **overrides: int) -> SaladHead:
    torch.manual_seed(seed)
    sizes = {"num_clusters": 4, "cluster_dim": 8, "token_dim": 16, "hidden": 24} | overrides
    return SaladHead(HIDDEN, **sizes).eval()


def images(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def pixels(batch: np.ndarray, side: int = SIDE) -> torch.Tensor:
    """The test's own preprocessing: area resize, ImageNet normalisation."""
    resized = np.stack([resize_square(image, side) for image in batch])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def backbone() -> Dinov2Model:
    return tiny_dinov2()


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory, backbone: Dinov2Model) -> Path:
    path = tmp_path_factory.mktemp("models") / "Tiny DINOv2_v1"
    backbone.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def salad_dir(tmp_path_factory: pytest.TempPathFactory, backbone: Dinov2Model) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-salad"
    return save_salad_model(path, backbone, tiny_head())


@pytest.fixture(scope="module")
def encoder(dinov2_dir: Path) -> Dinov2Encoder:
    return load_local_encoder("dinov2", dinov2_dir, device="cpu")


def test_dinov2_embed_is_unit_norm_deterministic_and_named(encoder: Dinov2Encoder) -> None:
    batch = images(3)
    vectors = encoder.embed(np.concatenate([batch, batch[:1]]))
    assert encoder.name == "dinov2-tiny-dinov2-v1"
    assert re.fullmatch(r"[a-z0-9-]+", encoder.name)
    assert (encoder.dim, encoder.local_dim, encoder.input_size) == (2 * HIDDEN, HIDDEN, SIDE)
    assert vectors.shape == (4, 2 * HIDDEN)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[3])
    assert not np.allclose(vectors[0], vectors[1])
    # CLS and GeM halves are each L2-normalised before the whole is.
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :HIDDEN], axis=1), 0.5**0.5, atol=1e-5)
    assert encoder.embed(images(0)).shape == (0, 2 * HIDDEN)


def test_dinov2_embed_is_cls_and_gem_of_the_last_layer(
    encoder: Dinov2Encoder, backbone: Dinov2Model
) -> None:
    batch = images(2, seed=3)
    with torch.inference_mode():
        hidden = backbone(pixel_values=pixels(batch)).last_hidden_state
    cls = torch.nn.functional.normalize(hidden[:, 0], dim=1)
    gem = hidden[:, 1:].clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3)
    expected = torch.cat([cls, torch.nn.functional.normalize(gem, dim=1)], dim=1) / 2**0.5
    np.testing.assert_allclose(encoder.embed(batch), expected.numpy(), atol=1e-5)


def test_tokens_are_the_chosen_blocks_patch_tokens(
    encoder: Dinov2Encoder, dinov2_dir: Path, backbone: Dinov2Model
) -> None:
    batch = images(2, seed=5)
    with torch.inference_mode():
        states = backbone(pixel_values=pixels(batch), output_hidden_states=True).hidden_states
    last = encoder.tokens(batch)
    assert encoder.layer == 1
    assert last.shape == (2, PATCHES, HIDDEN)
    assert last.dtype == np.float32
    np.testing.assert_allclose(last, states[2][:, 1:].numpy(), atol=1e-5)
    first = load_local_encoder("dinov2", dinov2_dir, device="cpu", layer=-2)
    assert first.layer == 0
    assert first.name == encoder.name
    np.testing.assert_allclose(first.tokens(batch), states[1][:, 1:].numpy(), atol=1e-5)
    assert not np.allclose(first.tokens(batch), last, atol=1e-2)
    with pytest.raises(ValueError, match="at least one image"):
        encoder.tokens(images(0))


def test_input_size_rounds_to_patches_and_names_the_table(
    dinov2_dir: Path, encoder: Dinov2Encoder
) -> None:
    bigger = load_local_encoder("dinov2", dinov2_dir, device="cpu", input_size=80)
    assert bigger.input_size == 84
    assert bigger.name == encoder.name + "-84px"
    assert bigger.tokens(images(1)).shape == (1, 36, HIDDEN)
    same = load_local_encoder("dinov2", dinov2_dir, device="cpu", input_size=60)
    assert (same.input_size, same.name) == (SIDE, encoder.name)


def test_preprocessor_config_sets_the_normalisation(
    tmp_path: Path, dinov2_dir: Path, encoder: Dinov2Encoder
) -> None:
    path = shutil.copytree(dinov2_dir, tmp_path / "Tiny DINOv2_v1")
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (path / "preprocessor_config.json").write_text(json.dumps(stats))
    other = load_local_encoder("dinov2", path, device="cpu")
    batch = images(1)
    assert other.name == encoder.name
    assert not np.allclose(other.embed(batch), encoder.embed(batch), atol=1e-3)


def test_salad_head_descriptor_is_unit_norm_with_intra_normalised_clusters() -> None:
    head = tiny_head()
    torch.manual_seed(2)
    tokens, cls = torch.randn(3, PATCHES, HIDDEN), torch.randn(3, HIDDEN)
    with torch.inference_mode():
        out = head(tokens, cls)
    assert head.dim == 16 + 4 * 8
    assert out.shape == (3, head.dim)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # Global token and each cluster (channel-major layout) carry the same share: 1/√(1+K).
    share = 1 / (1 + head.num_clusters) ** 0.5
    np.testing.assert_allclose(out[:, :16].norm(dim=1).numpy(), share, atol=1e-5)
    clusters = out[:, 16:].reshape(3, head.cluster_dim, head.num_clusters)
    np.testing.assert_allclose(clusters.norm(dim=1).numpy(), share, atol=1e-5)


def test_sinkhorn_plan_has_the_transport_marginals() -> None:
    torch.manual_seed(4)
    tokens = torch.randn(2, PATCHES, HIDDEN) * 3
    with torch.inference_mode():
        short = tiny_head().assignment(tokens)
        converged = tiny_head(sinkhorn_iters=200).assignment(tokens)
    assert short.shape == (2, 4 + 1, PATCHES)
    assert bool((short >= 0).all())
    # Every token's mass over clusters + dustbin is 1 after any number of iterations...
    np.testing.assert_allclose(short.sum(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(converged.sum(dim=1).numpy(), 1.0, atol=1e-5)
    # ...and at convergence each cluster receives 1, the dustbin the other T − K.
    rows = converged.sum(dim=2).numpy()
    np.testing.assert_allclose(rows[:, :4], 1.0, atol=1e-3)
    np.testing.assert_allclose(rows[:, 4], PATCHES - 4, atol=1e-3)
    with pytest.raises(ValueError, match="more tokens than clusters"):
        tiny_head(num_clusters=PATCHES).assignment(tokens)


def test_reference_salad_weights_convert_to_the_same_head() -> None:
    head = tiny_head(seed=7)
    reference = {"aggregator.dust_bin": head.dustbin.detach().clone()}
    for ours, ref in (("global_token", "token_features"), ("local_features", "cluster_features")):
        second = 2 if ref == "token_features" else 3
        for our_index, ref_index in ((0, 0), (2, second)):
            weight = getattr(head, ours)[our_index].weight.detach()
            conv = weight if ref == "token_features" else weight[:, :, None, None]
            reference[f"aggregator.{ref}.{ref_index}.weight"] = conv.clone()
            bias = getattr(head, ours)[our_index].bias.detach().clone()
            reference[f"aggregator.{ref}.{ref_index}.bias"] = bias
    for our_index, ref_index in ((0, 0), (2, 3)):
        layer = head.scores[our_index]
        reference[f"aggregator.score.{ref_index}.weight"] = layer.weight.detach()[:, :, None, None]
        reference[f"aggregator.score.{ref_index}.bias"] = layer.bias.detach()
    converted = salad_head_from_reference(reference).eval()
    assert converted.hyper_parameters() == head.hyper_parameters()
    tokens, cls = torch.randn(2, PATCHES, HIDDEN), torch.randn(2, HIDDEN)
    with torch.inference_mode():
        torch.testing.assert_close(converted(tokens, cls), head(tokens, cls))
    del reference["aggregator.score.3.bias"]
    with pytest.raises(ValueError, match=r"score\.3\.bias"):
        salad_head_from_reference(reference)


def test_salad_directory_round_trip(salad_dir: Path, backbone: Dinov2Model) -> None:
    salad = load_local_encoder("dinov2-salad", salad_dir, device="cpu", layer=0)
    batch = images(3, seed=9)
    with torch.inference_mode():
        hidden = backbone(pixel_values=pixels(batch)).last_hidden_state
        expected = tiny_head()(hidden[:, 1:], hidden[:, 0]).numpy()
    vectors = salad.embed(batch)
    assert salad.name == "dinov2-salad-tiny-salad"
    assert (salad.dim, salad.local_dim, salad.layer) == (16 + 4 * 8, HIDDEN, 0)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert salad.tokens(batch).shape == (3, PATCHES, HIDDEN)


def test_salad_json_input_size_is_the_directorys_default(tmp_path: Path, salad_dir: Path) -> None:
    path = shutil.copytree(salad_dir, tmp_path / "tiny-salad")
    config = json.loads((path / "salad.json").read_text()) | {"input_size": 84}
    (path / "salad.json").write_text(json.dumps(config))
    salad = load_local_encoder("dinov2-salad", path, device="cpu")
    assert (salad.input_size, salad.name) == (84, "dinov2-salad-tiny-salad")
    assert salad.embed(images(1)).shape == (1, salad.dim)


def _edit_json(file: Path, **changes: object) -> None:
    file.write_text(json.dumps(json.loads(file.read_text()) | changes))


def _head_for_wider_backbone(path: Path) -> None:
    head = SaladHead(2 * HIDDEN, num_clusters=4, cluster_dim=8, token_dim=16, hidden=24)
    torch.save(head.state_dict(), path / "salad.pt")
    (path / "salad.json").write_text(json.dumps(head.hyper_parameters()))


def _too_many_clusters(path: Path) -> None:
    torch.save(tiny_head(num_clusters=PATCHES).state_dict(), path / "salad.pt")
    _edit_json(path / "salad.json", num_clusters=PATCHES)


def _drop_a_weight(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    del weights["layernorm.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


DINOV2_BREAKAGES: dict[str, tuple[Callable[[Path], object], type[Exception], str]] = {
    "no directory": (lambda p: shutil.rmtree(p), FileNotFoundError, "not found"),
    "no config.json": (lambda p: (p / "config.json").unlink(), FileNotFoundError, "config.json"),
    "not dinov2": (lambda p: _edit_json(p / "config.json", model_type="vit"), ValueError, "vit"),
    "no weights": (lambda p: (p / "model.safetensors").unlink(), FileNotFoundError, "weights"),
    "missing weight": (_drop_a_weight, ValueError, "layernorm.weight"),
}


@pytest.mark.parametrize("breakage", DINOV2_BREAKAGES)
def test_broken_dinov2_directory_is_a_one_line_error(
    breakage: str, tmp_path: Path, dinov2_dir: Path
) -> None:
    path = shutil.copytree(dinov2_dir, tmp_path / "dinov2")
    damage, error, words = DINOV2_BREAKAGES[breakage]
    damage(path)
    with pytest.raises(error) as caught:
        load_local_encoder("dinov2", path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert words in message


SALAD_BREAKAGES: dict[str, tuple[Callable[[Path], object], type[Exception], str]] = {
    "no directory": (lambda p: shutil.rmtree(p), FileNotFoundError, "not found"),
    "no salad.json": (lambda p: (p / "salad.json").unlink(), FileNotFoundError, "salad.json"),
    "salad.json not json": (lambda p: (p / "salad.json").write_text("{"), ValueError, "JSON"),
    "salad.json key missing": (
        lambda p: (p / "salad.json").write_text('{"num_channels": 32}'),
        ValueError,
        "num_clusters",
    ),
    "salad.json wrong channels": (_head_for_wider_backbone, ValueError, "num_channels"),
    "too many clusters": (_too_many_clusters, ValueError, "clusters"),
    "no salad.pt": (lambda p: (p / "salad.pt").unlink(), FileNotFoundError, "salad.pt"),
    "salad.pt not torch": (lambda p: (p / "salad.pt").write_bytes(b"x" * 64), ValueError, "read"),
    "salad.pt wrong shapes": (
        lambda p: _edit_json(p / "salad.json", cluster_dim=9),
        ValueError,
        "wrong shape",
    ),
    "salad.pt wrong keys": (
        lambda p: torch.save({"dust_bin": torch.tensor(1.0)}, p / "salad.pt"),
        ValueError,
        "unexpected ['dust_bin']",
    ),
    "no backbone": (lambda p: shutil.rmtree(p / "backbone"), FileNotFoundError, "backbone"),
    "backbone not dinov2": (
        lambda p: _edit_json(p / "backbone" / "config.json", model_type="vit"),
        ValueError,
        "vit",
    ),
}


@pytest.mark.parametrize("breakage", SALAD_BREAKAGES)
def test_broken_salad_directory_is_a_one_line_error(
    breakage: str, tmp_path: Path, salad_dir: Path
) -> None:
    path = shutil.copytree(salad_dir, tmp_path / "salad")
    damage, error, words = SALAD_BREAKAGES[breakage]
    damage(path)
    with pytest.raises(error) as caught:
        load_local_encoder("dinov2-salad", path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert words in message


@pytest.mark.parametrize(
    ("kind", "options", "words"),
    [
        ("dinov2", {"layer": 2}, "layer"),
        ("resnet", {}, "unknown"),
        ("dinov2", {"input_size": 0}, "input_size"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    dinov2_dir: Path, kind: str, options: dict[str, int], words: str
) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        load_local_encoder(kind, dinov2_dir, device="cpu", **options)
    assert "\n" not in str(caught.value)
