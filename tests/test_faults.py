"""Fault injection: each step killed with SIGKILL at a random point, then re-run, leaves exactly
what an uninterrupted run leaves (timings aside; gallery vectors to float rounding, since the
re-run embeds in other batches). `make test-faults` runs this suite alone."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.common import snapshot
from rsloc_assets.gallery.manifest import write_manifest
from rsloc_assets.layout import Layout
from tests.fault_steps import STEPS, resource, warm

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]
QUERY_STEPS = ["patches", "candidates", "cliques", "localize", "verify"]


def kill_during(root: Path, step: str, name: str, delay_s: float) -> bool:
    """Run `step` in a child and SIGKILL it `delay_s` into its work; whether it was killed."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_steps", str(root), step, name],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready", child.stderr.read()[-2000:]
    time.sleep(delay_s)
    killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    return killed


@pytest.fixture(scope="module")
def embedded(small_demo, tmp_path_factory) -> Path:
    """The small demo world with its manifest written, nothing embedded yet."""
    root = tmp_path_factory.mktemp("faults") / "base"
    shutil.copytree(small_demo, root)
    write_manifest(Layout(root), None, None)
    return root


def _store_rows(root: Path):
    rsloc = resource(str(root))
    layout = rsloc.layout()
    store = rsloc.store(rsloc.load_encoder(), layout.gallery_info())
    table = store.to_arrow(["key", "time", "vector"]).sort_by("key")
    return table, store.duplicate_keys()


def test_a_killed_gallery_refresh_rerun_equals_an_uninterrupted_one(embedded, tmp_path):
    reference, faulted = tmp_path / "reference", tmp_path / "faulted"
    shutil.copytree(embedded, reference)
    shutil.copytree(embedded, faulted)
    rsloc = resource(str(reference))
    warm(rsloc)
    start = time.perf_counter()
    STEPS["embed"](rsloc, "")
    took = time.perf_counter() - start
    rng = np.random.default_rng(7)
    assert kill_during(faulted, "embed", "", float(rng.uniform(0.2, 0.8)) * took)
    STEPS["embed"](resource(str(faulted)), "")
    want, want_dups = _store_rows(reference)
    got, got_dups = _store_rows(faulted)
    assert want_dups == got_dups == []
    assert got["key"].to_pylist() == want["key"].to_pylist()
    assert got["time"].to_pylist() == want["time"].to_pylist()
    vectors = [np.stack(t["vector"].to_numpy(zero_copy_only=False)) for t in (want, got)]
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)


def test_each_query_step_killed_then_rerun_equals_an_uninterrupted_run(embedded, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(embedded, base)
    STEPS["embed"](resource(str(base)), "")
    reference, faulted = tmp_path / "reference", tmp_path / "faulted"
    shutil.copytree(base, reference)
    shutil.copytree(base, faulted)
    name = Layout(base).query_names()[0]
    rsloc = resource(str(reference))
    warm(rsloc)
    took = {}
    for step in QUERY_STEPS:
        start = time.perf_counter()
        STEPS[step](rsloc, name)
        took[step] = time.perf_counter() - start
    rng = np.random.default_rng(11)
    again = resource(str(faulted))
    warm(again)
    killed = {}
    for step in QUERY_STEPS:
        killed[step] = kill_during(faulted, step, name, float(rng.uniform(0.0, 1.0)) * took[step])
        STEPS[step](again, name)
    assert sum(killed.values()) >= 3, killed  # most kills land before the step is done
    want = snapshot(Layout(reference).query(name).folder)
    got = snapshot(Layout(faulted).query(name).folder)
    assert got.keys() == want.keys()
    for file in want:
        assert got[file] == want[file], file
