"""Helpers every benchmark shares: the machine it ran on, the commit, and its JSON result file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_ENV = "RSLOC_BENCH_RESULTS"


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
    out = results_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    record = {
        "name": name,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "figures": figures,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
