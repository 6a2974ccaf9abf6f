"""Evaluation's step on files under a `Layout`: score every verified query that has a
georeference to check, and write the report, its map and the footprints layer."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.compute as pc

from rsloc_assets.evaluation.metrics import (
    QueryEvidence,
    QueryScore,
    Summary,
    score_query,
    summarise,
)
from rsloc_assets.evaluation.overview import overview_png
from rsloc_assets.evaluation.report import footprint_layer, write_report
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.layout import Layout, ReportFiles, table_meta, write_json
from rsloc_assets.records import GalleryInfo, Stage, Step, Verification


@dataclass
class EvaluationResult:
    """Scores of the evaluated queries, the reasons others were not, and the report files."""

    scores: list[QueryScore]
    summary: Summary
    skipped: dict[str, str]
    files: ReportFiles
    map_png: bytes  # every footprint and truth over the gallery (also at `files.map`)


def read_evidence(
    layout: Layout, name: str, verification: Verification
) -> tuple[QueryEvidence, GalleryInfo]:
    """Every stage's output for one query, as evaluation needs it, and the gallery it ran on."""
    work = layout.query(name)
    patches, meta = work.patches()
    candidates = work.candidates()
    nodes = work.nodes()
    tiles, hypotheses = work.hypotheses()
    matches = work.matches().filter(pc.field("accepted"))
    if verification.hypothesis is not None:
        matches = matches.filter(pc.field("hypothesis") == verification.hypothesis)
    evidence = QueryEvidence(
        final=verification.estimate,
        stage2=work.localization(Stage.CLIQUES),
        retrieval=work.localization(Stage.RETRIEVAL),
        patches=patches,
        candidates=candidates,
        hypothesis_tiles=tiles,
        hypotheses=hypotheses,
        verified_hypothesis=verification.hypothesis,
        accepted=dict(zip(matches["patch"].to_pylist(), matches["key"].to_pylist(), strict=True)),
        seconds={
            Step.PATCHES: meta.seconds,
            Step.CANDIDATES: table_meta(candidates)["seconds"],
            Step.CLIQUES: table_meta(nodes)["ms"] / 1000,
            Step.VERIFY: verification.seconds,
        },
    )
    return evidence, meta.gallery


def evaluate(layout: Layout) -> EvaluationResult:
    """Score every query in `queries/` that has been verified and has a georeference to check;
    write the report and one layer of every localized query's footprint."""
    names = layout.query_names()
    scores, skipped, truths, estimates = [], {}, {}, {}
    for name in names:
        verification = layout.query(name).verification()
        if verification is None:
            skipped[name] = "not localized yet"
            continue
        estimates[name] = verification.estimate
        truth = read_truth(layout.query_file(name))
        if truth is None:
            skipped[name] = "no georeference to take the truth from"
            continue
        evidence, info = read_evidence(layout, name, verification)
        scores.append(score_query(evidence, truth, info.grid, info.zoom))
        truths[name] = truth
    summary = summarise(scores, len(names))
    map_png = overview_png(layout, estimates, truths)
    write_report(layout.report, scores, summary, skipped, map_png)
    write_json(layout.report.footprints, footprint_layer(estimates, scores))
    return EvaluationResult(scores, summary, skipped, layout.report, map_png)
