"""The `rsloc` resource's settings: the deployment's data folder holds whatever run config says."""

from pathlib import Path

import dagster as dg
import pytest

from rsloc_assets.defs import defs
from rsloc_assets.defs.resources import DATA_DIR_ENV, RslocResource


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
