"""Both Dagster CLIs drive the project: `dg` (check, launch) and `dagster asset materialize`."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import snapshot

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


def test_queries_run_many_per_run_and_side_by_side_as_in_sequence(env, small_layout):
    """`make demo`'s way: every registered query in one `dg launch --partition-range` run; then
    two such runs at once over halves of the queries, against one LanceDB table and one data
    folder, leave the files the one run left."""
    env = env | {"RSLOC_QUERY_HEADINGS": "1", "RSLOC_TOP_K": "100"}
    layout = small_layout
    rsloc = str(BIN / "rsloc")
    missing = subprocess.run([rsloc, "queries", "range"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "rsloc queries register" in missing.stderr
    _run(env, str(BIN / "dg"), "launch", "--job", "refresh_gallery")
    blocks = _run(env, rsloc, "gallery", "blocks").stdout.strip()
    assert re.fullmatch(r"z15-s32-\d+-\d+\.\.\.z15-s32-\d+-\d+", blocks), blocks
    _run(env, str(BIN / "dg"), "launch", "--job", "embed_gallery", "--partition-range", blocks)
    _run(env, str(BIN / "dg"), "launch", "--assets", "tile_index")
    _run(env, rsloc, "queries", "register", "--root", str(layout.root))
    names = layout.query_names()
    span = _run(env, rsloc, "queries", "range").stdout.strip()
    assert span == f"{names[0]}...{names[-1]}"
    launch = [str(BIN / "dg"), "launch", "--job", "localize_query", "--partition-range"]
    _run(env, *launch, span)
    alone = {name: snapshot(layout.query(name).folder) for name in names}
    half = len(names) // 2
    halves = [names[:half], names[half:]]
    runs = [
        subprocess.Popen(
            [*launch, f"{h[0]}...{h[-1]}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in halves
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    assert {name: snapshot(layout.query(name).folder) for name in names} == alone
