"""Helpers the benchmarks share: the paper's gallery and query figures, the gallery's tile block,
a wall-clock timer, each result file with the machine it ran on and the commit, and a query's
work folder read back without timings (to compare two runs)."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq

from rsloc_assets.grids import GeoGrid
from rsloc_assets.layout import write_atomic

# The paper's gallery is 824,796 z15 tiles of France. The benchmarks lay it out as a block of
# RSLoc's geographic ("ge") grid of exactly that many tiles, 1091 × 756 (≈ 920 × 923 km), centred
# on the tile at 2.5°E 46.5°N; tiles are numbered row-major in the block.
ZOOM = 15  # the paper's gallery level
GALLERY_CENTRE = (2.5, 46.5)  # lon, lat of the block's centre tile (mid-France)
GALLERY_COLS, GALLERY_ROWS = 1091, 756  # 1091 × 756 = 824,796
GALLERY_TILES = GALLERY_COLS * GALLERY_ROWS  # 824,796 tiles, the size of the paper's z15 gallery
# The paper's queries: 100 patches per query image, each searched for its top 2,000 tiles.
PATCHES_PER_QUERY = 100
CANDIDATES_PER_PATCH = 2000

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data
RESULTS_ENV = "RSLOC_BENCH_RESULTS"

T = TypeVar("T")


def show_progress() -> None:
    """Print the progress lines of long steps (`rsloc_assets.progress`) as a benchmark runs."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("rsloc_assets.progress").setLevel(logging.INFO)


def gallery_origin() -> tuple[int, int]:
    """Column and row of the gallery block's top-left tile."""
    centre = GeoGrid().tile_at(*GALLERY_CENTRE, ZOOM)
    return centre.col - GALLERY_COLS // 2, centre.row - GALLERY_ROWS // 2


def gallery_index(col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Row-major index in the gallery block of the tiles at (col, row)."""
    col0, row0 = gallery_origin()
    return (row - row0) * GALLERY_COLS + (col - col0)


def gallery_tile(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of the tiles at row-major `index` in the gallery block."""
    col0, row0 = gallery_origin()
    return col0 + index % GALLERY_COLS, row0 + index // GALLERY_COLS


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn`'s result and its wall time in milliseconds (time.perf_counter)."""
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1e3


def timed_rounds(fns: Sequence[Callable[[], Any]], repeats: int) -> list[tuple[Any, list[float]]]:
    """Run each of `fns` in turn, `repeats` rounds (interleaved, so machine noise hits them
    alike); per fn, its last result and its wall times in milliseconds."""
    results: list[Any] = [None] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            results[k], ms = timed(fn)
            times[k].append(ms)
    return list(zip(results, times, strict=True))


def machine_info() -> dict:
    """CPU model, core count, memory, Python version and platform of this machine."""
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str:
    """The checked-out commit, "+dirty" when the tree has changes; "unknown" outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def results_dir(override: Path | None = None) -> Path:
    """Where results go: `override`, else $RSLOC_BENCH_RESULTS, else bench/results/."""
    return Path(override or os.environ.get(RESULTS_ENV) or RESULTS_DIR)


def write_result(name: str, figures: dict, out_dir: Path | None = None) -> Path:
    """Write `<out_dir>/<name>.json` with the machine, UTC date, commit and `figures`."""
    path = results_dir(out_dir) / f"{name}.json"
    record = {
        "name": name,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "figures": figures,
    }
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


TIMING = {"seconds", "ms"}  # the keys and columns two runs of one query may differ in


def _untimed(value):
    """`value` with every timing key removed, at any depth."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def snapshot(folder: Path) -> dict[str, object]:
    """Every file of a query's work folder, read back without its timings."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = (table.schema.metadata or {}).get(b"rsloc")
            rows = table.drop_columns([c for c in table.column_names if c in TIMING])
            out[path.name] = (rows.to_pylist(), _untimed(json.loads(meta)) if meta else None)
        else:
            out[path.name] = _untimed(json.loads(path.read_text()))
    return out
