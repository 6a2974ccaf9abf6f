"""The `rsloc` resource's settings: run config, the environment (`RSLOC_<FIELD>`) and the CLI."""

from pathlib import Path

import dagster as dg
import pytest

from rsloc_assets.cli import main
from rsloc_assets.defs import defs
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.layout import DATA_DIR_ENV
from rsloc_assets.retrieval.descriptors import Aggregation


def test_run_config_keeps_the_environments_data_folder(tmp_path: Path, monkeypatch):
    """Run config rebuilds the resource from config alone: a run that sets only `top_k` must still
    work in `RSLOC_DATA_DIR`, not in ./data."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "deployment"))
    seen = {}

    @dg.asset
    def probe(rsloc: RslocResource) -> None:
        seen["root"], seen["top_k"] = rsloc.layout().root, rsloc.top_k

    config = {"resources": {"rsloc": {"config": {"top_k": 500}}}}
    assert dg.materialize([probe], resources=defs.resources, run_config=config).success
    assert seen == {"root": tmp_path / "deployment", "top_k": 500}


def test_a_relative_data_folder_is_resolved_once(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert RslocResource().data_root() == tmp_path / "data"
    assert RslocResource(data_dir="elsewhere").layout().root == tmp_path / "elsewhere"


@pytest.mark.parametrize("value", ["", None])
def test_an_unset_environment_means_the_data_folder_here(tmp_path: Path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    if value is None:
        monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_DIR_ENV, value)
    assert RslocResource().data_root() == tmp_path / "data"


def test_every_field_is_described_and_set_from_the_environment(monkeypatch):
    for name, field in RslocResource.model_fields.items():
        assert field.description, name
    monkeypatch.setenv("RSLOC_TOP_K", "500")
    monkeypatch.setenv("RSLOC_ZOOM", "16")
    monkeypatch.setenv("RSLOC_ADAPT", "true")
    monkeypatch.setenv("RSLOC_CLIQUE_K", "null")
    monkeypatch.setenv("RSLOC_AGGREGATION", "gem")
    rsloc = RslocResource(zoom=15)  # what config says wins over the environment
    assert (rsloc.top_k, rsloc.zoom, rsloc.adapt, rsloc.clique_k) == (500, 15, True, None)
    assert rsloc.aggregation == Aggregation.GEM
    monkeypatch.setenv("RSLOC_TOP_K", "many")
    with pytest.raises(ValueError, match="top_k"):
        RslocResource()


def test_the_cli_reads_the_same_data_folder(tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "deployment" / "queries").mkdir(parents=True)
    (tmp_path / "deployment" / "queries" / "q7.png").write_bytes(b"")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "deployment"))
    main(["queries", "list"])
    assert capsys.readouterr().out.split() == ["q7"]
