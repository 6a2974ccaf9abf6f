"""Gather the benchmark results (`bench/results/*.json`) into `REPORT.md` with PNG plots.

Only measured figures appear: a benchmark that has not run (or skipped for want of data or a GPU)
is listed as such. Run after the benchmarks; `make bench` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.common import results_dir
from rsloc_assets.evaluation.report import md_table

STAGE_LABELS = {
    "retrieval": "retrieval only",
    "cliques": "+ cliques",
    "verified": "+ verification (final)",
}
LOST_AT = {
    "retrieval": "retrieval (no patch's true tile in the top K)",
    "cliques": "stage 2 (no hypothesis within 1 tile)",
    "verified": "verification (a hypothesis was right, the footprint not)",
}
DATASETS = {
    "real_rsloc": "RSLoc France, same-source",
    "real_rsloc_rotated": "RSLoc France, same-source, any heading",
    "real_rsloc_baseline": "RSLoc France, same-source, baseline (whole-map GeM, north-up only)",
    "real_naip": "NAIP North Dakota, cross-date",
    "real_naip_rotated": "NAIP North Dakota, cross-date, any heading",
    "real_naip_rotated_baseline": (
        "NAIP North Dakota, cross-date, any heading, baseline (whole-map GeM, north-up only)"
    ),
}


def load_results(folder: Path) -> dict[str, dict]:
    """Every `<name>.json` record in `folder`, by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def provenance(record: dict) -> str:
    m = record["machine"]
    commit = record["commit"][:12] + ("+dirty" if record["commit"].endswith("+dirty") else "")
    return (
        f"*{record['date_utc'][:10]}, commit `{commit}`, {m['cpu']} "
        f"({m['cores']} cores, {m['memory_gib']} GiB)*"
    )


def _save(fig: plt.Figure, path: Path) -> None:
    """Write `fig` to `path` as a PNG and release it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _missing(title: str, why: str) -> list[str]:
    return [f"## {title}", "", f"Not measured: {why}.", ""]


def _mean_recall(figures: dict, key: str) -> str:
    values = [q[key] for q in figures["per_query"] if q[key] is not None]
    return _fmt(sum(values) / len(values) if values else None)


def _repo_relative(text: str) -> str:
    """`text` with this checkout's absolute path removed (results name folders inside it)."""
    return text.replace(f"{Path(__file__).resolve().parents[1]}/", "")


def descriptors_section(results: dict[str, dict]) -> list[str]:
    """Patch recall of the true tile per descriptor option (`bench.descriptors`)."""
    present = {k: v for k, v in results.items() if k.startswith("descriptors")}
    if not present:
        return _missing("Descriptor options", "`bench.descriptors` has not run")
    lines = ["## Stage 1: descriptor options", ""]
    for record in present.values():
        for run in record["figures"]["runs"]:
            projected = "projected_near_at_k" in run["options"][0]
            lines += [
                f"### {_repo_relative(run['source'])}"
                + (f", seed {run['seed']}" if run["seed"] is not None else ""),
                "",
                provenance(record),
                "",
                f"{run['gallery_tiles']} gallery tiles, {run['queries']} queries "
                f"({_repo_relative(run['queries_made'])}), {run['patches']} patches; exact = the "
                "true tile, near = it or one of its 8 neighbours"
                + (
                    "; near_at_k = near in the top K (the resource's top_k, 2,000), "
                    "projected_near_at_k = that recall projected to 824,796 tiles (method in "
                    "the gallery-size projection below)."
                    if projected
                    else "."
                ),
                "",
                md_table(run["options"]),
                "",
            ]
    return lines


def real_section(results: dict[str, dict], out: Path) -> list[str]:
    """Accuracy per stage and seconds per query on the real-data galleries, with two plots."""
    present = {k: results[k] for k in DATASETS if k in results}
    if not present:
        return _missing("Real imagery", "`../shared/data` was absent when `bench.real` ran")
    lines = ["## Real imagery: accuracy per stage", ""]
    for name, record in present.items():
        f = record["figures"]
        g = f["gallery"]
        lines += [
            f"### {DATASETS[name]}",
            "",
            provenance(record),
            "",
            f"- Gallery: {', '.join(g['inputs'][:3])}{' …' if len(g['inputs']) > 3 else ''} → "
            f"{g['grid']} z{g['zoom']}, {g['tiles']} tiles (built in {g['build_s']:.1f} s, "
            f"embedded with {f['encoder']} in {g['embed_s']:.0f} s).",
            f"- Queries: {f['queries']} {f['queries_made']}.",
            f"- A random gallery tile lands within one tile of the truth with probability "
            f"{f['chance_within_1_tile']:.3f}.",
            "",
            md_table(
                [{**row, "stage": STAGE_LABELS[row["stage"]]} for row in f["stages"]],
            ),
            "",
            "Shares are of all queries; errors are over the queries a stage localized.",
            "",
            "Patch funnel (true tile or a neighbour): "
            + " → ".join(f"{k} {v}" for k, v in f["funnel"].items()),
            "",
            f"Mean patch recall of the true tile: {_mean_recall(f, 'recall_at_1')} at rank 1, "
            f"{_mean_recall(f, 'recall_at_10')} in the top 10; "
            f"{sum(q['method'] == 'verified' for q in f['per_query'])} of {f['queries']} verified.",
            "",
        ]
    lines += [
        "![centre error CDF per stage](real_errors.png)",
        "",
        "## End to end: seconds per query image",
        "",
        md_table(
            [
                {
                    "dataset": DATASETS[name],
                    **{f"{k} s": v for k, v in r["figures"]["seconds_per_query"].items()},
                    "wall s (Dagster run)": r["figures"]["wall_s_per_query"],
                }
                for name, r in present.items()
            ]
        ),
        "",
        "![seconds per stage](real_seconds.png)",
        "",
    ]
    _plot_errors(present, out / "real_errors.png")
    _plot_seconds(present, out / "real_seconds.png")
    return lines


def _plot_errors(present: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4), squeeze=False)
    keys = {"retrieval": "retrieval_error_m", "cliques": "cliques_error_m", "verified": "error_m"}
    for ax, (name, record) in zip(axes[0], present.items(), strict=True):
        rows = record["figures"]["per_query"]
        for stage, key in keys.items():
            errors = np.sort([r[key] if r[key] is not None else np.inf for r in rows])
            share = np.arange(1, len(errors) + 1) / max(len(errors), 1)
            ax.step(np.clip(errors, 0.1, None), share, where="post", label=STAGE_LABELS[stage])
        ax.set_xscale("log")
        ax.set_xlabel("centre error (m)")
        ax.set_ylabel("share of queries")
        ax.set_title(DATASETS[name])
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    _save(fig, path)


def _plot_seconds(present: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    stages = ("patches", "candidates", "cliques", "verify")
    for i, record in enumerate(present.values()):
        left = 0.0
        for j, stage in enumerate(stages):
            value = record["figures"]["seconds_per_query"][stage]
            ax.barh(i, value, left=left, color=f"C{j}", label=stage if i == 0 else None)
            left += value
    ax.set_yticks(range(len(present)), [DATASETS[n] for n in present])
    ax.set_xlabel("mean seconds per query image")
    ax.legend(loc="lower right")
    _save(fig, path)


GALLERY_SIZE_STAGE_COLUMNS = (
    "stage",
    "within_1_tile",
    "acc",
    "median_error_m",
    "p90_error_m",
    "R@1<25m",
    "R@1<100m",
    "R@1<500m",
)


def gallery_size_section(results: dict[str, dict], out: Path) -> list[str]:
    """Accuracy per stage against gallery size, the 824,796-tile projection and its check."""
    record = results.get("gallery_size")
    if record is None:
        return _missing("Gallery size", "`bench.gallery_size` has not run")
    f = record["figures"]
    atlas, q = f["atlas"], f["queries"]
    lines = [
        "## Gallery size: accuracy against the number of tiles",
        "",
        provenance(record),
        "",
        f"- Atlas: {atlas['worlds']} synthetic worlds of {atlas['world_km']:g} km at "
        f"{atlas['gsd_m']:g} m/px ({', '.join(atlas['landscapes'])}), each tile at "
        f"{len(atlas['dates'])} dates ({', '.join(s for _, s in atlas['dates'])}); nested "
        "galleries are its first worlds.",
        f"- Queries: {q['synthetic']} {q['season']} crops of {q['side_px'][0]}–{q['side_px'][1]} "
        f"px drawn from worlds {q['worlds']}, the same for every gallery size.",
        "",
    ]
    for row in sorted(f["sizes"], key=lambda r: (r["dataset"], r["tiles"])):
        recall = ", ".join(f"@{k[3:]} {_fmt(v)}" for k, v in row["patch_recall"].items())
        seconds = ", ".join(f"{k} {v:.1f}" for k, v in row["seconds_per_query"].items())
        hypotheses = ", ".join(f"@{k[3:]} {_fmt(v)}" for k, v in row["hypothesis_recall"].items())
        lost = "; ".join(f"{q['query']} at {LOST_AT[q['stage']]}" for q in row["lost"]) or "none"
        lines += [
            f"### {row['tiles']:,} tiles, {row['dataset']} queries",
            "",
            f"Patch recall of the true tile or a neighbour: {recall}. "
            f"Stage 2's ranked hypotheses, one within 1 tile among the first k: {hypotheses}. "
            f"Seconds per query: {seconds}. Not within 1 tile after verification, and the stage "
            f"that lost the true place: {lost}.",
            "",
            md_table(
                [{**r, "stage": STAGE_LABELS[r["stage"]]} for r in row["stages"]],
                GALLERY_SIZE_STAGE_COLUMNS,
            ),
            "",
        ]
    proj = f["projection"]
    target = proj["synthetic"]
    lines += [
        f"### Projection to {proj['target_tiles']:,} tiles",
        "",
        proj["method"],
        "",
        f"From {target['from_tiles']:,} tiles: patch recall@K {_fmt(target['patch_recall_at_k'])};"
        " within 1 tile "
        + ", ".join(f"{STAGE_LABELS[k]} {_fmt(v)}" for k, v in target["within_1_tile"].items())
        + ".",
        "",
    ]
    if "check" in proj:
        pred, meas = proj["check"]["predicted"], proj["check"]["measured"]
        lines += [
            f"Check: projected from {pred['from_tiles']:,} to {pred['tiles']:,} tiles against "
            "what that gallery measured:",
            "",
            md_table(
                [
                    {
                        "figure": "patch recall@K",
                        "projected": pred["patch_recall_at_k"],
                        "measured": meas["patch_recall_at_k"],
                    },
                    *(
                        {
                            "figure": f"within 1 tile, {STAGE_LABELS[k]}",
                            "projected": v,
                            "measured": meas["within_1_tile"][k],
                        }
                        for k, v in pred["within_1_tile"].items()
                    ),
                ]
            ),
            "",
        ]
    lines += ["![within one tile per stage against gallery size](gallery_size.png)", ""]
    _plot_gallery_size(f["sizes"], target, out / "gallery_size.png")
    return lines


def _plot_gallery_size(sizes: list[dict], projected: dict, path: Path) -> None:
    """Within one tile per stage against gallery size, measured, and the synthetic queries'
    projection from the largest gallery (dotted, open markers)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    largest = max((s for s in sizes if s["dataset"] == "synthetic"), key=lambda s: s["tiles"])
    for j, stage in enumerate(STAGE_LABELS):
        share = projected["within_1_tile"].get(stage)
        if share is None:
            continue
        start = next(x for x in largest["stages"] if x["stage"] == stage)["within_1_tile"]
        ax.plot(
            [largest["tiles"], projected["tiles"]],
            [start, share],
            ":",
            marker="o",
            markerfacecolor="none",
            color=f"C{j}",
            label=f"{STAGE_LABELS[stage]} (projected)",
        )
    for dataset in sorted({s["dataset"] for s in sizes}):
        rows = sorted((s for s in sizes if s["dataset"] == dataset), key=lambda s: s["tiles"])
        tiles = [r["tiles"] for r in rows]
        for j, stage in enumerate(STAGE_LABELS):
            share = [
                next(x for x in r["stages"] if x["stage"] == stage)["within_1_tile"] for r in rows
            ]
            style = "-o" if dataset == "synthetic" else "--s"
            ax.plot(tiles, share, style, color=f"C{j}", label=f"{STAGE_LABELS[stage]} ({dataset})")
    ax.set_xscale("log")
    ax.set_xlabel("gallery tiles")
    ax.set_ylabel("share of queries within one tile")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    _save(fig, path)


def scale_section(results: dict[str, dict], out: Path) -> list[str]:
    """Vector search at the paper's gallery size: LanceDB against exact torch search."""
    if "scale" not in results:
        return _missing("Gallery scale", "`bench.scale` has not run")
    record = results["scale"]
    f = record["figures"]
    runs = f["runs"]
    k = f["k"]
    rows = [
        {
            "dim": run["dim"],
            "index": index["kind"],
            "table build s": index["table"]["build_s"],
            "index build s": index["index"]["build_s"],
            "nprobes": ann["nprobes"],
            "refine": ann["refine_factor"] or "–",
            "ANN ms/image": ann["ms"]["mean"],
            "exact ms/image": run["exact_ms"]["mean"],
            "ANN/exact": ann["ann_over_exact"],
            f"recall@{k}": ann[f"recall@{k}"],
        }
        for run in runs
        for index in run["indexes"]
        for ann in index["ann"]
    ]
    lines = [
        "## Gallery scale: vector search",
        "",
        provenance(record),
        "",
        f"{f['rows']:,} synthetic tiles per vector size; a query image is "
        f"{f['patches_per_query_image']} patches searched for their top {k} in one call; "
        f"{f['query_images']} query images per path after a warm-up; timing: {f['timing']}. "
        f"Vector model: `{f['model']['tile']}` (details in `scale.json`). Peak memory "
        f"{f['peak_rss_mb'] / 1024:.1f} GiB.",
        "",
        md_table(rows),
        "",
        "ANN/exact below 1 means LanceDB is faster than the exact batched matrix product in "
        "torch over the same vectors held in memory; recall is against that exact search.",
        "",
        "![latency and recall](scale.png)",
        "",
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, run in enumerate(runs):
        for index, marker in zip(run["indexes"], "os^", strict=False):
            anns = sorted(index["ann"], key=lambda a: a["ms"]["mean"])
            ax.plot(
                [a["ms"]["mean"] for a in anns],
                [a[f"recall@{k}"] for a in anns],
                marker=marker,
                color=f"C{i}",
                label=f"LanceDB {index['kind']}, {run['dim']}-d",
            )
        exact = f"exact torch, {run['dim']}-d"
        ax.axvline(run["exact_ms"]["mean"], color=f"C{i}", ls="--", label=exact)
    ax.set_xscale("log")
    ax.set_xlabel("ms per query image")
    ax.set_ylabel(f"recall@{k} against exact")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out / "scale.png")
    return lines


def clique_section(results: dict[str, dict], out: Path) -> list[str]:
    """Stage 2: the C engine against python-igraph on the same graph, and the edge budget."""
    if "clique" not in results:
        return _missing("Spatio-geographic cliques", "`bench.clique` has not run")
    record = results["clique"]
    f = record["figures"]
    lines = [
        "## Spatio-geographic cliques (stage 2)",
        "",
        provenance(record),
        "",
        md_table(
            [
                {
                    "nodes": f["nodes"],
                    "edges": f["edges"],
                    "native ms": f["native_ms"]["best"],
                    "igraph ms": f["igraph_ms"]["best"],
                    "speedup": f["speedup"],
                    "same cliques": f["same_cliques"],
                    "planted found": f["planted"]["found"],
                }
            ]
        ),
        "",
        f"{f['hits']['patches']} patches × {f['hits']['candidates_per_patch']} candidates over "
        f"a {f['hits']['gallery_tiles']:,}-tile grid; timing: {f['timing']}.",
        "",
        "![edge budget](clique_budget.png)",
        "",
    ]
    sweep = f["edge_budget_sweep"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = [s["max_edges_per_node"] for s in sweep]
    ax.plot(x, [s["recall"] for s in sweep], "o-", label="planted location recall")
    ax.plot(x, [s["best_group_true_fraction"] for s in sweep], "s--", label="best group purity")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("edges kept per node")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "clique_budget.png")
    return lines


def extraction_section(results: dict[str, dict]) -> list[str]:
    """Mosaics per second from SQLite, decode once against nine times."""
    if "extraction" not in results:
        return _missing("Gallery extraction", "`bench.extraction` has not run")
    record = results["extraction"]
    f = record["figures"]
    return [
        "## Gallery extraction",
        "",
        provenance(record),
        "",
        md_table(
            [
                {
                    "tiles": f["tiles"],
                    "rsloc tiles/s": f["tiles_per_s"],
                    "decodes": f["decodes"],
                    "9× decode tiles/s": f["naive_tiles_per_s"],
                    "9× decodes": f["naive_decodes"],
                    "speedup": f["speedup"],
                }
            ]
        ),
        "",
    ]


def embedding_section(results: dict[str, dict], out: Path) -> list[str]:
    """Images per second through the decoding pipeline and the model alone, CPU and GPU."""
    lines = ["## Embedding throughput", ""]
    runs = []
    for name, label in (("embedding", "CPU"), ("embedding_gpu", "GPU")):
        if name not in results:
            lines += [f"{label}: not measured (no {label} run recorded).", ""]
            continue
        record = results[name]
        device = record["figures"].get("device_name", record["machine"]["cpu"])
        lines += [f"### {label}: {device}", "", provenance(record), ""]
        cols = [
            "encoder",
            "precision",
            "batch",
            "pipeline_images_per_s",
            "model_images_per_s",
            "pipeline_over_model",
            "hours_for_824796_tiles",
            *(["gpu_util_mean_pct"] if label == "GPU" else []),
        ]
        rows = [{c: r.get(c) for c in cols} for r in record["figures"]["runs"]]
        lines += [md_table(rows), ""]
        runs += [(label, r) for r in rows]
    if runs:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = [f"{lab} {r['encoder']} {r['precision']} b{r['batch']}" for lab, r in runs]
        y = np.arange(len(runs))
        ax.barh(y - 0.2, [r["pipeline_images_per_s"] for _, r in runs], 0.4, label="pipeline")
        ax.barh(y + 0.2, [r["model_images_per_s"] for _, r in runs], 0.4, label="model alone")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("images per second")
        ax.legend()
        _save(fig, out / "embedding.png")
        lines += ["![embedding throughput](embedding.png)", ""]
    return lines


def runs_section(results: dict[str, dict]) -> list[str]:
    """Many queries through `dg launch`: one run per query against one run for all."""
    if "runs" not in results:
        return _missing("Queries per run", "`bench.runs` has not run")
    record = results["runs"]
    f = record["figures"]
    ways = (("one run per query", "one_run_per_query"), ("one run for all", "one_run"))
    return [
        "## Queries per run",
        "",
        provenance(record),
        "",
        f"{f['queries']} queries of the {f['world']}, {f['query_size_m'][0]}–"
        f"{f['query_size_m'][1]} m on the ground: {f['method']}.",
        "",
        md_table(
            [
                {
                    "way": label,
                    "wall s": f[key]["wall_s"],
                    "s per query": f[key]["s_per_query"],
                    "peak RSS GiB": f[key]["peak_rss_gib"],
                }
                for label, key in ways
            ]
        ),
        "",
        f"Speed-up {f['speedup']}×, {f['start_up_saved_s_per_query']} s saved per query; same "
        f"estimates both ways: {'yes' if f['same_estimates'] else 'no'}.",
        "",
    ]


def query_section(results: dict[str, dict]) -> list[str]:
    """One 2,560² query at 824,796 tiles, stage by stage: this code against the baseline's."""
    if "query" not in results:
        return _missing("One query at gallery scale", "`bench.query` has not run")
    record = results["query"]
    f = record["figures"]
    new, old = f["new"], f["baseline_side"]
    rows = [
        {
            "stage": stage,
            "budget s": f["budgets_s"].get(stage, "–"),
            "s": f["seconds"][stage],
            "baseline s": f["baseline"]["seconds"][stage],
            "baseline / new": f"{f['baseline_over_new'][stage]:.2f}×",
        }
        for stage in f["seconds"]
    ]

    b, views = new["search_breakdown_s"], old["patches"] * old["headings"]

    def error(side: dict, key: str) -> str:
        value = side[key]["best_hypothesis_error_m" if key == "cliques" else "centre_error_m"]
        return "–" if value is None else f"{value:.0f} m"

    return [
        "## One query at gallery scale",
        "",
        provenance(record),
        "",
        f"Query {f['query']}: {new['patches']} patches, {new['headings']} headings tried; "
        f"{new.get('views_embedded', views)} views embedded (baseline {views}). patches and "
        f"verify on the real RSLoc gallery; search and cliques on {f['tiles']:,} synthetic tiles "
        f"of {f['dim_searched']} dims with the query's true tiles planted. Baseline: commit "
        f"`{f['baseline']['commit']}`. {f['timing']}.",
        "",
        md_table(rows),
        "",
        f"Same candidates at scale both sides: {'yes' if f['same_candidates'] else 'no'}. "
        f"Best clique hypothesis from the true centre: {error(new, 'cliques')} (baseline "
        f"{error(old, 'cliques')}); verified centre: {error(new, 'verified')} (baseline "
        f"{error(old, 'verified')}). Verification again with the mosaics' features cached: "
        f"{new['verify_cached_s']:.1f} s (baseline {old['verify_cached_s']:.1f} s); patches at "
        f"one heading (a query known to face north, no vote): "
        f"{new.get('patches_one_heading_s', float('nan')):.2f} s (baseline "
        f"{old.get('patches_one_heading_s', float('nan')):.2f} s); encoder load "
        f"{new['encoder_load_s']:.1f} s; peak RSS of the side's process "
        f"{new.get('peak_rss_mb', float('nan')) / 1024:.2f} GiB (baseline "
        f"{old.get('peak_rss_mb', float('nan')) / 1024:.2f} GiB).",
        "",
        f"Where search time goes at scale (single `TileStore.search` calls, this code): "
        f"the process's first search {b.get('first_search', float('nan')):.2f} s (it opens the "
        f"index), then {views} views' top 1 over 1 IVF partition {b['views_top1_nprobes1']:.2f} "
        f"s, over 20 {b['views_top1_nprobes20']:.2f} s; one heading's {new['patches']} views' "
        f"top 2,000 {b['one_heading_top_k']:.2f} s; all {views} views' top 2,000 "
        f"{b['views_top_k']:.2f} s.",
        "",
    ]


def write_report(folder: Path) -> Path:
    """Write `REPORT.md` and its plots into `folder` from the JSON results there."""
    results = load_results(folder)
    lines = [
        "# rsloc benchmark report",
        "",
        "Written by `python -m bench.report` from the JSON results beside it; every figure was "
        "measured by the benchmark named in its section (`make bench` runs them all).",
        "",
        *real_section(results, folder),
        *descriptors_section(results),
        *gallery_size_section(results, folder),
        *scale_section(results, folder),
        *clique_section(results, folder),
        *extraction_section(results),
        *embedding_section(results, folder),
        *runs_section(results),
        *query_section(results),
    ]
    path = folder / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    path = write_report(results_dir(args.results_dir))
    line = f"report: {path}"
    print(line)
    return line


if __name__ == "__main__":
    main()
