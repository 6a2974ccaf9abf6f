"""`bench.gallery_size` end to end at a small size: an atlas of a few small worlds, two nested
galleries, two queries through the whole asset graph, the projection and its check."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench import report
from bench.gallery_size import at_least, main, projected_recall, recall_at


def test_small_gallery_size_run(tmp_path: Path):
    line = main(
        [
            "--sizes=40,100",
            "--queries=2",
            "--query-px=480,540",
            "--world-km=6",
            "--gsd-m=8",
            f"--cache={tmp_path / 'cache'}",
            f"--shared={tmp_path / 'no-shared'}",
            f"--results-dir={tmp_path}",
        ]
    )
    assert re.fullmatch(
        r"gallery-size: tiles=\d+ retrieval=[01]\.\d\d cliques=[01]\.\d\d verified=[01]\.\d\d"
        r" projected_recall_at_k=[01]\.\d{3}",
        line,
    )
    figures = json.loads((tmp_path / "gallery_size.json").read_text())["figures"]
    sizes = sorted(figures["sizes"], key=lambda s: s["tiles"])
    assert [s["dataset"] for s in sizes] == ["synthetic", "synthetic"]
    assert sizes[0]["tiles"] < sizes[1]["tiles"] and sizes[1]["worlds"] > sizes[0]["worlds"]
    for size in sizes:
        assert [r["stage"] for r in size["stages"]] == ["retrieval", "cliques", "verified"]
        assert set(size["patch_recall"]) == {"at_1", "at_10", "at_100", "at_k"}
        assert size["queries"] == 2
        assert set(size["hypothesis_recall"]) == {"at_1", "at_5", "at_10"}
        assert all(0.0 <= v <= 1.0 for v in size["hypothesis_recall"].values())
    projection = figures["projection"]
    assert projection["target_tiles"] == 824_796
    assert projection["check"]["measured"]["tiles"] == sizes[1]["tiles"]
    assert 0.0 <= projection["synthetic"]["patch_recall_at_k"] <= 1.0
    text = report.write_report(tmp_path).read_text()
    assert "## Gallery size: accuracy against the number of tiles" in text
    assert f"### {sizes[1]['tiles']:,} tiles, synthetic queries" in text
    assert (tmp_path / "gallery_size.png").stat().st_size > 5_000


def test_projection_keeps_top_ranks_and_loses_deep_ones():
    ranks = np.array([0, 0, 5, 900, -1])
    assert recall_at(ranks, 10) == pytest.approx(0.6)
    # Ten times the tiles: rank 5 becomes ~55 (kept in the top 100), rank 900 ~9,000 (lost).
    assert projected_recall(ranks, 1_000, 10_000, 100) == pytest.approx(0.6, abs=0.01)
    assert projected_recall(ranks, 1_000, 1_000, 2_000) == pytest.approx(0.8, abs=0.01)


def test_at_least_is_the_poisson_binomial_tail():
    p = np.array([0.2, 0.9, 0.5, 0.7, 0.05])
    for need in range(7):
        brute = sum(
            np.prod([pi if b else 1 - pi for pi, b in zip(p, bits, strict=True)])
            for bits in itertools.product([0, 1], repeat=len(p))
            if sum(bits) >= need
        )
        assert at_least(p, need) == pytest.approx(brute, abs=1e-12)
