"""The evaluation report: Markdown tables, the per-query Parquet table, the map and the layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from rsloc_assets.evaluation.metrics import QueryScore, Summary
from rsloc_assets.layout import ReportFiles, write_atomic, write_table
from rsloc_assets.records import Localization
from rsloc_assets.verification.footprint import closed_ring


def summary_line(summary: Summary, label: str = "") -> str:
    """One line: queries within one tile of those evaluated, the ones without a truth to check
    (not evaluated, not failed), and the median error; `label` (e.g. "demo") leads it."""
    median = "n/a" if summary.median_error_m is None else f"{summary.median_error_m:.0f}"
    unchecked = summary.queries - summary.evaluated
    line = (
        f"{summary.within_1_tile}/{summary.evaluated} evaluated queries within 1 tile"
        + (f" ({unchecked} not evaluated)" if unchecked else "")
        + f"; median error {median} m"
    )
    return f"{label}: {line}" if label else line


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}" if v < 10 else f"{v:.0f}"
    return str(v)


def md_table(rows: Sequence[dict], cols: Sequence[str] | None = None) -> str:
    """A Markdown table of dict rows (all keys of the first row unless `cols` is given)."""
    if not rows:
        return "(none)"
    cols = list(cols or rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


SCORE_COLUMNS = (
    "query",
    "method",
    "error_m",
    "corner_error_m",
    "cliques_error_m",
    "retrieval_error_m",
    "within_1_tile",
    "acc",
    "hypothesis_rank",
    "verified_hypothesis",
    "support",
    "patches",
    "recall_at_10",
    "recall_at_k",
)


def markdown_table(scores: Sequence[QueryScore]) -> str:
    """Per-query Markdown table."""
    return md_table([asdict(s) for s in scores], SCORE_COLUMNS)


def stage_tables(summary: Summary) -> str:
    """Markdown: errors, success shares and Recall@1<r per stage, the patch funnel, stage times."""
    rows = summary.stages
    f = summary.funnel
    funnel_rows = [
        {
            "patches": f["patches"],
            "true tile in top-K": f["retrieval"],
            "support the best hypothesis": f["cliques"],
            "verified": f["verified"],
        }
    ]
    seconds = [{f"{k} s": v for k, v in summary.mean_seconds.items()}]
    hypotheses = [{f"Recall@{k[3:]}": v for k, v in summary.hypothesis_recall.items()}]
    return "\n\n".join(
        [
            "## Stages\n\n" + md_table(rows),
            "## Stage 2's ranked hypotheses: one within 1 tile among the first k\n\n"
            + md_table(hypotheses),
            "## Patch funnel (true tile or a neighbour)\n\n" + md_table(funnel_rows),
            "## Mean seconds per query and stage\n\n" + md_table(seconds),
        ]
    )


def write_report(
    files: ReportFiles,
    scores: Sequence[QueryScore],
    summary: Summary,
    skipped: dict[str, str],
    map_png: bytes,
) -> None:
    """Write the report's Markdown, per-query Parquet table and map."""
    write_table(files.table, pa.Table.from_pylist([asdict(s) for s in scores]))
    lines = [
        "# rsloc evaluation",
        "",
        summary_line(summary),
        "",
        f"- queries: {summary.queries}, evaluated: {summary.evaluated}",
        f"- within 1 tile: {summary.within_1_tile}, within 3 tiles: {summary.within_3_tiles}",
        f"- Acc (estimated tile overlaps true extent): {summary.acc}/{summary.evaluated}",
        f"- mean patch recall of the true tile in top-K: {_fmt(summary.mean_recall_at_k)}",
        f"- median corner error of verified footprints: {_fmt(summary.median_corner_error_m)} m",
        "",
        stage_tables(summary),
        "",
        "## Queries",
        "",
        markdown_table(scores),
        "",
    ]
    if skipped:
        lines += ["## Not evaluated", ""] + [f"- {q}: {why}" for q, why in sorted(skipped.items())]
    text = "\n".join(lines) + "\n"
    write_atomic(files.markdown, lambda tmp: Path(tmp).write_text(text))
    write_atomic(files.map, lambda tmp: Path(tmp).write_bytes(map_png))


def footprint_layer(estimates: dict[str, Localization], scores: Sequence[QueryScore]) -> dict:
    """One RFC 7946 FeatureCollection of every localized query's footprint (a closed ring), with
    its method, support, error estimate and, where evaluated, its error against the truth."""
    errors = {s.query: s.error_m for s in scores}
    features = []
    for name, loc in sorted(estimates.items()):
        if len(loc.corners_lonlat) < 3:
            continue
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [closed_ring(loc.corners_lonlat)]},
                "properties": {
                    "query": name,
                    "method": str(loc.method),
                    "support": loc.support,
                    "patches": loc.patches,
                    "confidence": round(loc.confidence, 3),
                    "error_estimate_m": None if loc.error_m is None else round(loc.error_m, 1),
                    "error_m": None if errors.get(name) is None else round(errors[name], 1),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
