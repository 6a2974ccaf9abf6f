"""Both Dagster CLIs drive the project: `dg` (check, launch) and `dagster asset materialize`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def env(small_layout, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    small_layout.manifest.unlink(missing_ok=True)
    return os.environ | {"DAGSTER_HOME": str(home), "RSLOC_DATA_DIR": str(small_layout.root)}


def _run(env, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_dg_checks_and_launches_the_definitions(env, small_layout):
    assert "loaded successfully" in _run(env, str(BIN / "dg"), "check", "defs").stdout
    _run(env, str(BIN / "dg"), "launch", "--assets", "gallery_tiles")
    assert small_layout.manifest.exists()


def test_dagster_asset_materialize_still_works(env, small_layout):
    _run(
        env,
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "rsloc_assets.defs",
        "--select",
        "gallery_tiles",
    )
    assert small_layout.manifest.exists()
