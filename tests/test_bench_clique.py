"""Smoke test of the clique benchmark on small hit sets: its final line, checks and JSON file."""

import json
import re
from pathlib import Path

import pytest

from bench.clique import main

FINAL_LINE = re.compile(
    r"clique: nodes=(\d+) edges=(\d+) native_ms=\d+\.\d igraph_ms=\d+\.\d "
    r"speedup=\d+\.\dx planted_found=(yes|no)"
)


@pytest.mark.parametrize(("patches", "candidates"), [(10, 50), (16, 1000)])
def test_bench_clique_small(
    patches: int,
    candidates: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    args = ["--patches", str(patches), "--candidates", str(candidates), "--repeats", "1"]
    line = main([*args, "--results-dir", str(tmp_path)])

    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == line
    match = FINAL_LINE.fullmatch(line)
    assert match, line
    assert int(match[1]) == patches * candidates
    assert int(match[2]) > 0
    assert match[3] == "yes"
    assert any("same_cliques=yes" in row for row in out)
    record = json.loads((tmp_path / "clique.json").read_text())
    figures = record["figures"]
    assert figures["same_cliques"] is True
    assert all(figures["same"].values()), figures["same"]
    assert figures["planted"]["found"] is True
    assert len(figures["edge_budget_sweep"]) == 14
    assert {"cpu", "cores", "python"} <= record["machine"].keys()
    assert record["commit"] and record["date_utc"]
