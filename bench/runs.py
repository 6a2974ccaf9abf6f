"""Forty queries through `dg launch` two ways on one data folder, in one session: one run per
query (every query pays Dagster's and the encoder's start-up) and one run for all of them (what a
backfill or `make demo` runs now): wall seconds, seconds per query, peak RSS, same estimates."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import snapshot, write_result
from rsloc_assets.layout import Layout
from rsloc_assets.synthetic.demo import PRESETS, init_demo
from rsloc_assets.synthetic.queries import write_queries

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = REPO / "bench" / ".cache" / "runs"
QUERIES = 40
QUERY_SEED = 40  # not the demo's: these queries tune nothing


def launch(env: dict[str, str], *args: str) -> tuple[float, int]:
    """Run `dg launch ARGS` to its end: its wall seconds and its peak RSS in bytes."""
    # The run's log goes to a file: a pipe nobody reads while waiting would fill and stall it.
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            [str(BIN / "dg"), "launch", *args], cwd=REPO, env=env, stdout=log, stderr=log
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"dg launch {' '.join(args)} failed: {log.read()[-2000:]!r}")
    return seconds, usage.ru_maxrss * 1024


def prepare(root: Path, n: int) -> tuple[Layout, dict[str, str]]:
    """The small demo world with `n` queries of its size in place of its own, embedded, the
    queries registered on a Dagster instance of its own; the environment that runs there."""
    layout = Layout(root / "data")
    init_demo(layout, "small")
    setup = PRESETS["small"]
    names = [f"b{i:03d}" for i in range(n)]
    if layout.query_names() != names:
        for path in layout.queries.iterdir():
            path.unlink()
        write_queries(setup.world, layout.queries, n, QUERY_SEED, setup.query_size_m, prefix="b")
    home = root / "dagster_home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {"DAGSTER_HOME": str(home), "RSLOC_DATA_DIR": str(layout.root)}
    env.pop("RSLOC_QUERIES_PER_RUN", None)
    env.pop("RSLOC_BLOCKS_PER_RUN", None)
    launch(env, "--job", "refresh_gallery")
    blocks = subprocess.run(
        [str(BIN / "rsloc"), "gallery", "blocks"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    launch(env, "--job", "embed_gallery", "--partition-range", blocks.stdout.strip())
    launch(env, "--assets", "tile_index")
    subprocess.run(
        [str(BIN / "rsloc"), "queries", "register", "--root", str(layout.root)], env=env, check=True
    )
    return layout, env


def cold(layout: Layout) -> None:
    """Forget every query's work and the mosaic SIFT cache, so each way starts alike."""
    shutil.rmtree(layout.work / "queries", ignore_errors=True)
    shutil.rmtree(layout.features, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--cache", type=Path, default=CACHE, help="world and instance folder")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    layout, env = prepare(args.cache, args.queries)
    names = layout.query_names()

    cold(layout)
    walls, peaks = [], []
    for i, name in enumerate(names):
        seconds, peak = launch(env, "--job", "localize_query", "--partition", name)
        walls.append(seconds)
        peaks.append(peak)
        print(f"one run per query: {i + 1}/{len(names)} {seconds:.1f} s", flush=True)
    per_query = {name: snapshot(layout.query(name).folder) for name in names}

    cold(layout)
    one_s, one_peak = launch(
        env, "--job", "localize_query", "--partition-range", f"{names[0]}...{names[-1]}"
    )
    identical = {name: snapshot(layout.query(name).folder) for name in names} == per_query
    each_s = sum(walls)
    figures = {
        "queries": len(names),
        "query_size_m": list(PRESETS["small"].query_size_m),
        "world": f"small demo preset ({layout.read_manifest(['key']).num_rows} tiles at z15)",
        "one_run_per_query": {
            "wall_s": round(each_s, 1),
            "s_per_query": round(each_s / len(names), 2),
            "peak_rss_gib": round(max(peaks) / 2**30, 2),
        },
        "one_run": {
            "wall_s": round(one_s, 1),
            "s_per_query": round(one_s / len(names), 2),
            "peak_rss_gib": round(one_peak / 2**30, 2),
        },
        "speedup": round(each_s / one_s, 2),
        "start_up_saved_s_per_query": round((each_s - one_s) / len(names), 2),
        "same_estimates": identical,
        "method": "dg launch subprocesses on one data folder and one Dagster instance, run one"
        " way after the other; query work and the mosaic SIFT cache removed before each way;"
        " peak RSS from wait4 (the largest single run)",
    }
    path = write_result("runs", figures, args.out)
    print(f"{path}: {figures}")
    return figures


if __name__ == "__main__":
    main()
