"""Descriptors fitted on the gallery: GeM, VLAD vocabulary and aggregation, PCA-whitening, and
the versioned model a described encoder embeds with."""

import numpy as np
import pytest

from rsloc_assets.retrieval.descriptors import (
    Aggregation,
    DescribedEncoder,
    DescriptorModel,
    DescriptorSpec,
    fit_vocabulary,
    fit_whitening,
    gem,
    grid_gem,
    l2,
    vlad,
)


def clustered_tokens(rng, centres, n=400):
    """Tokens around unit `centres`, each picked at random, with a little noise."""
    pick = rng.integers(len(centres), size=n)
    return l2(centres[pick] + 0.05 * rng.normal(size=(n, centres.shape[1]))), pick


def test_gem_of_tokens_is_the_default_encoders_embedding(effnet):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(2, 300, 300, 3), dtype=np.uint8)
    tokens = effnet.tokens(images)
    assert tokens.shape == (2, 81, effnet.local_dim)
    np.testing.assert_allclose(l2(gem(tokens)), effnet.embed(images), atol=1e-5)


def test_vocabulary_finds_the_clusters():
    rng = np.random.default_rng(1)
    centres = l2(rng.normal(size=(4, 16)))
    tokens, _ = clustered_tokens(rng, centres)
    words = fit_vocabulary(tokens[None], 4, seed=0)
    nearest = np.argmax(centres @ words.T, axis=1)
    assert sorted(nearest) == [0, 1, 2, 3]
    assert np.all((centres @ words.T).max(axis=1) > 0.99)


def test_vocabulary_needs_enough_features():
    with pytest.raises(ValueError, match="cannot fit a 8-word vocabulary"):
        fit_vocabulary(np.ones((1, 5, 3), np.float32), 8)


def test_vlad_is_unit_norm_order_free_and_zero_for_unused_words():
    rng = np.random.default_rng(2)
    words = l2(rng.normal(size=(3, 8))).astype(np.float32)
    tokens = rng.normal(size=(2, 10, 8)).astype(np.float32)
    v = vlad(tokens, words)
    assert v.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vlad(tokens[:, ::-1], words), v, atol=1e-6)
    near_two = l2(words[:2] + 0.1 * rng.normal(size=(2, 8)))[None]
    blocks = vlad(near_two.astype(np.float32), words).reshape(3, 8)
    assert np.all(blocks[2] == 0) and np.linalg.norm(blocks[:2], axis=1).min() > 0.5


def test_whitening_decorrelates_and_keeps_the_leading_directions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 12)) * np.linspace(5, 0.5, 12)
    mean, projection = fit_whitening(x, 6)
    y = (x - mean) @ projection
    cov = np.cov(y.T)
    off = cov - np.diag(np.diag(cov))
    assert projection.shape == (12, 6)
    assert np.abs(off).max() < 0.05 * np.diag(cov).min()
    # The kept directions are the 6 largest-variance axes.
    assert np.all(np.abs(projection[6:]).max(axis=1) < 0.1 * np.abs(projection[:6]).max())
    with pytest.raises(ValueError, match="needs more than 12 samples"):
        fit_whitening(x[:12], 12)


def test_model_round_trip_and_version(tmp_path):
    rng = np.random.default_rng(4)
    spec = DescriptorSpec(Aggregation.VLAD, 4, whitening_dim=3)
    model = DescriptorModel(
        "enc", spec, None, l2(rng.normal(size=(4, 8))).astype(np.float32), samples=10
    )
    model.mean, model.projection = fit_whitening(rng.normal(size=(20, 32)), 3)
    model.save(tmp_path / "m.npz")
    back = DescriptorModel.load(tmp_path / "m.npz")
    assert back.version == model.version and back.spec == spec
    tokens = rng.normal(size=(2, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(
        back.whiten(back.aggregate(tokens)), model.whiten(model.aggregate(tokens))
    )
    back.centroids = back.centroids[::-1].copy()
    assert back.version != model.version
    assert model.tag().startswith("vlad4-w3-") and model.version in model.tag()
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read descriptor model"):
        DescriptorModel.load(tmp_path / "bad.npz")


def test_described_encoder_is_named_by_its_model_and_checks_it(effnet):
    rng = np.random.default_rng(5)
    spec = DescriptorSpec(Aggregation.VLAD, 4)
    tokens = effnet.tokens(rng.integers(0, 255, size=(4, 64, 64, 3), dtype=np.uint8))
    model = DescriptorModel(effnet.name, spec, None, fit_vocabulary(tokens, 4))
    described = DescribedEncoder(effnet, model)
    assert described.name == f"effnetl2-vlad4-{model.version}"
    assert described.dim == 4 * effnet.local_dim
    out = described.embed(rng.integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8))
    assert out.shape == (2, described.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="was fitted for encoder 'other'"):
        DescribedEncoder(effnet, DescriptorModel("other", spec, None, model.centroids))


def test_grid_gem_keeps_where_things_are():
    rng = np.random.default_rng(6)
    tokens = rng.random(size=(1, 81, 4)).astype(np.float32)
    flipped = tokens.reshape(1, 9, 9, 4)[:, ::-1].reshape(1, 81, 4)
    g, f = grid_gem(tokens, 3), grid_gem(flipped, 3)
    assert g.shape == (1, 36)
    np.testing.assert_allclose(np.linalg.norm(g), 1, atol=1e-6)
    # Whole-map GeM cannot tell a map from its mirror image; the grid can.
    np.testing.assert_allclose(gem(tokens), gem(flipped), atol=1e-6)
    assert float((g @ f.T)[0, 0]) < 0.999
    # The top-left cell is GeM of the top-left 3×3 tokens.
    cell = tokens.reshape(9, 9, 4)[:3, :3].reshape(1, 9, 4)
    np.testing.assert_allclose(g[0, :4] * 3, l2(gem(cell))[0], atol=1e-5)
    with pytest.raises(ValueError, match="square map"):
        grid_gem(tokens[:, :80], 3)


def test_an_unfitted_grid_descriptor_needs_no_version(effnet):
    model = DescriptorModel(effnet.name, DescriptorSpec(Aggregation.GRID, grid=3))
    assert not model.identity and not model.fitted and model.tag() == "grid3"
    described = DescribedEncoder(effnet, model)
    assert described.name == "effnetl2-grid3" and described.dim == 9 * effnet.local_dim
