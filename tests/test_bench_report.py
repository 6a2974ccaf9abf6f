"""The report gathers whatever results exist and says plainly which benchmarks have not run."""

import shutil

from bench import report
from bench.common import RESULTS_DIR


def test_report_from_committed_results(tmp_path):
    for name in ("clique", "extraction", "embedding", "runs"):
        shutil.copy(RESULTS_DIR / f"{name}.json", tmp_path)
    text = report.write_report(tmp_path).read_text()
    assert "## Spatio-geographic cliques (stage 2)" in text
    assert "Not measured: `bench.scale` has not run." in text
    assert "## Gallery extraction" in text and "GPU: not measured" in text
    assert "## Queries per run" in text and "| one run for all |" in text
    assert (tmp_path / "clique_budget.png").stat().st_size > 5_000
    assert (tmp_path / "embedding.png").stat().st_size > 5_000


def test_empty_results_folder_lists_every_benchmark_as_not_run(tmp_path):
    text = report.write_report(tmp_path).read_text()
    assert text.count("Not measured") == 8
    assert "Not measured: `bench.runs` has not run." in text
    assert "Not measured: `bench.query` has not run." in text
    assert "Not measured: `bench.descriptors` has not run." in text
    assert "Not measured: `bench.gallery_size` has not run." in text
    assert not list(tmp_path.glob("*.png"))
