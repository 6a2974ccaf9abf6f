"""The demo: a procedurally generated world, its gallery, queries of it on another date, and a
summary of how well they were localized."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from rsloc_assets.evaluation.metrics import QueryScore, summarise
from rsloc_assets.evaluation.report import summary_line
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.layout import Layout
from rsloc_assets.synthetic.landscape import WorldSpec
from rsloc_assets.synthetic.queries import write_queries, write_world

log = logging.getLogger(__name__)

DEMO_GRID, DEMO_ZOOM = "ge", 15
GALLERY_TIME, QUERY_SEASON = "2023", "autumn"


@dataclass(frozen=True)
class DemoSetup:
    """What a demo world consists of; stamped beside it so re-running the same setup is a no-op."""

    world: WorldSpec
    queries: int
    query_seed: int
    query_size_m: tuple[float, float]


PRESETS = {
    "demo": DemoSetup(WorldSpec.demo(), queries=8, query_seed=11, query_size_m=(6000, 7000)),
    "small": DemoSetup(WorldSpec.small(), queries=4, query_seed=5, query_size_m=(4500, 5500)),
}


def init_demo(layout: Layout, preset: str = "demo") -> list[Path]:
    """Write the world GeoTIFF, build its gallery with the builder and render the query images.

    Idempotent: nothing is redone when the stamp beside the world matches this setup.
    """
    setup = PRESETS[preset]
    world_dir = layout.world
    stamp = world_dir / "setup.json"
    wanted = json.dumps(asdict(setup), sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted and layout.gallery.exists():
        log.info("demo world already in place under %s", world_dir)
        return sorted(layout.queries.glob("*.tif"))
    world_dir.mkdir(parents=True, exist_ok=True)
    world_tif = write_world(setup.world, world_dir / "world_summer.tif", season="summer")
    layout.gallery.unlink(missing_ok=True)
    report = build_gallery(
        [world_tif], layout.gallery, grid=DEMO_GRID, zoom=DEMO_ZOOM, time=GALLERY_TIME
    )
    log.info("gallery: %d tiles in %s", report.written, layout.gallery)
    truths = write_queries(
        setup.world,
        layout.queries,
        n=setup.queries,
        seed=setup.query_seed,
        size_m=setup.query_size_m,
        season=QUERY_SEASON,
    )
    stamp.write_text(wanted)
    return [t.path for t in truths]


def summary_lines(layout: Layout) -> list[str]:
    """Per query: final method, patches agreeing, error of each stage's estimate, footprint corner
    error and success; then the closing line (the final estimate's)."""
    table = layout.report.table
    if not table.exists():
        raise FileNotFoundError(f"no evaluation yet at {table}: materialize `evaluation` first")
    rows = pq.read_table(table).to_pylist()
    scores = [QueryScore(**row) for row in rows]
    summary = summarise(scores, len(layout.query_names()))

    def metres(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f}"

    head = ("query", "method", "agreeing", "retrieval m", "cliques m", "final m", "corners m")
    lines = ["{:<8} {:<15} {:>8} {:>11} {:>9} {:>8} {:>9}  success".format(*head)]
    for s in scores:
        lines.append(
            f"{s.query:<8} {s.method:<15} {f'{s.support}/{s.patches}':>8} "
            f"{metres(s.retrieval_error_m):>11} {metres(s.cliques_error_m):>9} "
            f"{metres(s.error_m):>8} {metres(s.corner_error_m):>9}  "
            f"{'yes' if s.within_1_tile else 'no'}"
        )
    lines.append(summary_line(summary, "demo"))
    return lines
