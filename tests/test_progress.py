"""Progress of long work: done / total, rate and ETA, on the terminal and in the Dagster run log."""

import logging
import re
from pathlib import Path

import dagster as dg
import yaml

from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.progress import Progress, duration
from tests.gallery_runs import refresh_gallery

INSTANCE_YAML = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"
LINE = re.compile(r"\d[\d,]*/[\d,]+ \w+ \(\d+%\), [\d.]+ (\w+/s|s each), ETA (\d+:\d\d:\d\d|\?)")


def test_a_line_at_the_start_then_at_most_every_interval_then_at_the_end(caplog):
    progress = Progress("embedding", 1000, "mosaics", every_s=3600)
    with caplog.at_level(logging.INFO, logger="rsloc_assets.progress"):
        for _ in range(10):
            progress.advance(100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("embedding: 100/1,000 mosaics (10%), ")
    assert lines[1].startswith("embedding: 1,000/1,000 mosaics (100%), ")
    assert lines[1].endswith("ETA 0:00:00") and all(LINE.search(line) for line in lines)


def test_the_eta_follows_the_rate():
    progress = Progress("x", 100, started=0.0)
    progress.done = 25
    assert progress.line(now=50.0) == "x: 25/100 tiles (25%), 2.0 s each, ETA 0:02:30"
    progress.done = 75
    assert progress.line(now=50.0) == "x: 75/100 tiles (75%), 1.5 tiles/s, ETA 0:00:17"
    assert duration(3725) == "1:02:05" and duration(None) == "?"


def test_the_projects_instance_puts_progress_in_the_run_log(small_layout):
    """With `dagster_home/dagster.yaml`'s log settings, embedding the gallery logs its progress."""
    python_logs = yaml.safe_load(INSTANCE_YAML.read_text())["python_logs"]
    rsloc = RslocResource(data_dir=str(small_layout.root))
    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        run = refresh_gallery(rsloc, instance)
        messages = [e.message for r in run.results for e in instance.all_logs(r.run_id)]
    embedding = [m for m in messages if "embedding " in m and LINE.search(m)]
    assert embedding and "(100%)" in embedding[-1], messages[-20:]
