"""Smoke test of the runs benchmark on 2 queries (no speed assertions): both ways run through
`dg launch` and leave the same estimates."""

import json

from bench import runs


def test_runs_bench_compares_one_run_per_query_with_one_run(tmp_path):
    figures = runs.main(["--queries", "2", "--cache", str(tmp_path / "w"), "--out", str(tmp_path)])
    assert figures == json.loads((tmp_path / "runs.json").read_text())["figures"]
    assert figures["queries"] == 2 and figures["same_estimates"] is True
    for way in ("one_run_per_query", "one_run"):
        assert figures[way]["wall_s"] > 0 and 0.1 < figures[way]["peak_rss_gib"] < 8
