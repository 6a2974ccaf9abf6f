"""Smoke tests of the extraction and embedding benchmarks on tiny inputs (no speed assertions)."""

import json
import re

import torch

from bench import embedding, extraction


def test_extraction_bench_decodes_each_tile_once(tmp_path, capsys):
    line = extraction.main(["--preset", "small", "--repeats", "1", "--results-dir", str(tmp_path)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == line
    figures = json.loads((tmp_path / "extraction.json").read_text())["figures"]
    assert figures["decodes"] == figures["tiles"] == figures["mosaics"]
    assert figures["naive_decodes"] > 5 * figures["tiles"]
    assert re.fullmatch(r"extraction: tiles=\d+ .* speedup=\d+\.\dx", line)


def test_embedding_bench_reports_pipeline_and_model_rates(tmp_path, capsys):
    line = embedding.main(["--batches", "4", "--limit", "8", "--results-dir", str(tmp_path)])
    if not torch.cuda.is_available():
        assert "embedding-gpu: skipped, no CUDA device" in capsys.readouterr().out
    best = json.loads((tmp_path / "embedding.json").read_text())["figures"]["best"]
    assert best["images"] == 8 and best["pipeline_images_per_s"] > 0
    pattern = r"embedding: encoder=effnetl2 device=cpu batch=4 precision=fp32 .* gallery_hours=\S+"
    assert re.fullmatch(pattern, line)
