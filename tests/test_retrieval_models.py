"""Gallery-fitted models under `models/`: fits are versioned files with a pointer to the current
one, and the encoder the pipeline uses must match the settings asked for."""

import pytest

from rsloc_assets.cli import main
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.retrieval.adapter import AdapterParams
from rsloc_assets.retrieval.descriptors import Aggregation, DescribedEncoder, DescriptorSpec
from rsloc_assets.retrieval.models import (
    adapt_gallery,
    current_adapter,
    described_encoder,
    fit_descriptor,
)

VLAD_W8 = DescriptorSpec(Aggregation.VLAD, 4, whitening_dim=8, sample_tiles=16)


@pytest.fixture(scope="module")
def layout(small_layout):
    write_manifest(small_layout, None, None)
    return small_layout


def test_plain_gem_is_the_base_encoder_and_needs_no_fit(layout, effnet):
    assert described_encoder(layout, effnet, DescriptorSpec(), adapt=False) is effnet


def test_a_fitted_descriptor_is_versioned_and_must_match_the_settings(layout, effnet):
    with pytest.raises(LookupError, match="materialize descriptor_model"):
        described_encoder(layout, effnet, VLAD_W8, adapt=False)
    fit = fit_descriptor(layout, effnet, VLAD_W8, None)
    assert fit.path.exists() and fit.tiles == 16 and fit.note == ""
    encoder = described_encoder(layout, effnet, VLAD_W8, adapt=False)
    assert isinstance(encoder, DescribedEncoder)
    assert encoder.dim == 8 and encoder.name == f"effnetl2-vlad4-w8-{fit.model.version}"
    other = DescriptorSpec(Aggregation.VLAD, 4, whitening_dim=6, sample_tiles=16)
    with pytest.raises(LookupError, match="not the settings asked for") as err:
        described_encoder(layout, effnet, other, adapt=False)
    assert "\n" not in str(err.value)
    refit = fit_descriptor(layout, effnet, other, None)
    assert refit.model.version != fit.model.version and fit.path.exists()
    assert described_encoder(layout, effnet, other, adapt=False).dim == 6


def test_whitening_is_capped_by_the_sample(layout, effnet):
    spec = DescriptorSpec(Aggregation.GEM, whitening_dim=64, sample_tiles=10)
    fit = fit_descriptor(layout, effnet, spec, None)
    assert fit.model.projection.shape == (effnet.dim, 9)
    assert "capped at 9" in fit.note


def test_adaptation_off_records_no_adapter(layout, effnet):
    with pytest.raises(LookupError, match="materialize gallery_adapter"):
        current_adapter(layout, effnet.name)
    assert adapt_gallery(layout, effnet, None).adapter is None
    assert current_adapter(layout, effnet.name) is None
    with pytest.raises(LookupError, match="trained none"):
        described_encoder(layout, effnet, DescriptorSpec(), adapt=True)


def test_an_adapted_descriptor_names_its_adapter(layout, effnet):
    params = AdapterParams(view_budget=16, views=2, epochs=1, batch_size=8, hidden=16)
    adapter = adapt_gallery(layout, effnet, params).adapter
    assert current_adapter(layout, effnet.name).version == adapter.version
    with pytest.raises(LookupError, match="not the settings asked for"):
        described_encoder(layout, effnet, VLAD_W8, adapt=True)
    fit = fit_descriptor(layout, effnet, VLAD_W8, adapter)
    encoder = described_encoder(layout, effnet, VLAD_W8, adapt=True)
    assert encoder.adapter.version == adapter.version == fit.model.adapter
    assert "-a-" in encoder.name


def test_the_cli_trains_the_adapter_the_pipeline_then_uses(layout, effnet, capsys):
    args = ["-q", "gallery", "adapt", "--root", str(layout.root), "--device", "cpu"]
    assert main([*args, "--epochs", "1", "--view-budget", "8"]) == 0
    out = capsys.readouterr().out
    version = current_adapter(layout, effnet.name).version
    assert out.startswith(f"adapter {version} for effnetl2 written to ")
    assert "positives augmentations" in out
    assert main(["-q", "gallery", "adapt", "--root", str(layout.root / "nowhere")]) == 2
    assert "materialize gallery_tiles first" in capsys.readouterr().err


def test_a_pointer_naming_a_path_outside_models_is_refused(layout, effnet):
    fit_descriptor(layout, effnet, VLAD_W8, None)
    pointer = layout.models / "descriptor.json"
    pointer.write_text(pointer.read_text().replace('"file": "', '"file": "../../'))
    with pytest.raises(ValueError, match="not a file in"):
        described_encoder(layout, effnet, VLAD_W8, adapt=False)
    fit_descriptor(layout, effnet, VLAD_W8, None)
