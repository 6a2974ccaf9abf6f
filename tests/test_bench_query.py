"""Smoke test of the one-query benchmark on a small crop and table (no speed assertions): both
sides (the baseline here is this commit, exported) run every stage and agree; it skips without
../shared's RSLoc imagery."""

import json
import subprocess

import pytest

from bench import query
from bench.common import SHARED_DATA


@pytest.mark.skipif(
    not (SHARED_DATA / "rsloc" / query.QUERY_TIFF).exists(),
    reason=f"no RSLoc query imagery under {SHARED_DATA / 'rsloc'}",
)
def test_query_bench_runs_both_sides_and_they_agree(tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=query.REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    args = ["--rows", "20000", "--gallery-tiffs", "1", "--crop", "1280", "--repeats", "1"]
    args += ["--cache", str(tmp_path / "cache"), "--results-dir", str(tmp_path), "--baseline", head]
    line = query.main(args)
    figures = json.loads((tmp_path / "query.json").read_text())["figures"]
    assert line.startswith("query: tiles=20000 ")
    assert figures["baseline"]["commit"] == head[:12]
    for seconds in (figures["seconds"], figures["baseline"]["seconds"]):
        assert set(seconds) == {*query.STAGES, "total"} and min(seconds.values()) > 0
    assert figures["same_candidates"] is True
    for side in (figures["new"], figures["baseline_side"]):
        assert side["patches"] > 1 and side["scale_candidates"] > 0
        assert side["verified"]["method"] == "verified"
        assert side["verified"]["centre_error_m"] < 50
