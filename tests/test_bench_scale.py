"""Smoke test of the gallery-scale search benchmark on a tiny table (no speed assertions)."""

import json
import re
from pathlib import Path

import pytest

from bench.scale import SWEEPS, main

FINAL_LINE = re.compile(
    r"scale: rows=3000 dims=64 k=50 index=ivf_flat nprobes=20 refine=None build_s=\d+\.\d "
    r"index_s=\d+\.\d "
    r"ann_ms=\d+\.\d exact_ms=\d+\.\d ann_over_exact=\d+\.\d\dx recall@50=(\d\.\d{3})"
)


def test_bench_scale_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["--rows", "3000", "--dims", "64", "--queries", "2", "--k", "50"]
    line = main([*args, "--results-dir", str(tmp_path), "--workdir", str(tmp_path)])

    assert capsys.readouterr().out.strip().splitlines()[-1] == line
    match = FINAL_LINE.fullmatch(line)
    assert match, line
    figures = json.loads((tmp_path / "scale.json").read_text())["figures"]
    assert list(tmp_path.iterdir()) == [tmp_path / "scale.json"]  # LanceDB data cleaned up
    (run,) = figures["runs"]
    assert run["rows"] == 3000 and run["dim"] == 64 and len(run["exact_ms"]["runs"]) == 2
    flat, sq, pq = run["indexes"]
    assert [i["kind"] for i in run["indexes"]] == ["ivf_flat", "ivf_sq", "ivf_pq"]
    assert pq["index"]["sub_vectors"] == 4
    for index in (flat, sq, pq):
        assert index["table"]["build_s"] > 0 and index["index"]["table_with_index_mb"] > 0
        assert len(index["ann"]) == len(SWEEPS[index["kind"]])
        assert all(0 <= a["recall@50"] <= 1 for a in index["ann"])
    default = flat["ann"][0]
    assert (default["nprobes"], default["refine_factor"]) == (20, None)
    assert float(match.group(1)) == pytest.approx(default["recall@50"], abs=1e-3)
    assert default["recall@50"] > 0.5  # exact scores in the probed partitions find most of top-k
    assert sq["ann"][0]["recall@50"] > 0.5
    assert pq["ann"][0]["refine_factor"] == 10 and pq["ann"][0]["recall@50"] > 0.5
