"""Evaluation against ground truth read from the query's own georeference.

Metrics: centre error in metres, success within 1 and 3 tile sizes, the RSLoc paper's image-level
Acc (the estimate's tile overlaps the query's true extent) and patch-level recall of the true tile.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from osgeo import gdal, ogr, osr

from rsloc_assets.geodesy import distance_m
from rsloc_assets.grids import TileGrid, TileKey, ground_size_m
from rsloc_assets.localize import Localization

gdal.UseExceptions()


@dataclass(frozen=True)
class Truth:
    """Where a query really is: its corners (TL, TR, BR, BL) and centre in lon/lat."""

    corners_lonlat: list[tuple[float, float]]
    centre_lonlat: tuple[float, float]
    geotransform: tuple[float, ...]
    wkt: str

    def pixel_to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of query pixel coordinates (x right, y down) under the true georeference."""
        gt = self.geotransform
        ex = gt[0] + x * gt[1] + y * gt[2]
        ny = gt[3] + x * gt[4] + y * gt[5]
        return _to_lonlat(self.wkt, ex, ny)


def _to_lonlat(wkt: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = osr.SpatialReference(wkt=wkt)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    pts = osr.CoordinateTransformation(src, dst).TransformPoints(
        np.stack([np.ravel(x), np.ravel(y)], axis=1).astype(float).tolist()
    )
    arr = np.asarray(pts, dtype=np.float64).reshape(np.size(x), 3)
    return arr[:, 0].reshape(np.shape(x)), arr[:, 1].reshape(np.shape(x))


def read_truth(path: str | Path) -> Truth | None:
    """The true footprint from a query file's georeference; None when it has none."""
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        return None
    w, h = ds.RasterXSize, ds.RasterYSize
    truth = Truth([], (0.0, 0.0), tuple(gt), wkt)
    lon, lat = truth.pixel_to_lonlat(np.array([0, w, w, 0, w / 2]), np.array([0, 0, h, h, h / 2]))
    corners = [(float(lon[i]), float(lat[i])) for i in range(4)]
    return Truth(corners, (float(lon[4]), float(lat[4])), tuple(gt), wkt)


def _polygon(points: Sequence[tuple[float, float]]) -> ogr.Geometry:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in [*points, points[0]]:
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly


RADII_M = (25, 100, 500, 1200)
STAGES = ("retrieval", "cliques", "verified")


@dataclass
class QueryEvidence:
    """What the pipeline produced for one query, as evaluation reads it."""

    final: Localization
    stage2: Localization
    retrieval: Localization
    patches: pa.Table
    candidates: pa.Table
    nodes: pa.Table
    accepted: dict[int, str]
    seconds: dict[str, float]


@dataclass
class QueryScore:
    """One query's evaluation row (errors in metres; funnel counts in patches)."""

    query: str
    method: str
    error_m: float | None
    corner_error_m: float | None
    tile_m: float
    within_1_tile: bool
    within_3_tiles: bool
    acc: bool
    retrieval_error_m: float | None
    cliques_error_m: float | None
    retrieval_acc: bool
    cliques_acc: bool
    patches: int
    support: int
    confidence: float
    recall_at_1: float | None
    recall_at_10: float | None
    recall_at_k: float | None
    funnel_retrieval: int
    funnel_cliques: int
    funnel_verified: int
    seconds_patches: float
    seconds_candidates: float
    seconds_cliques: float
    seconds_verify: float


def _true_tiles(truth: Truth, patches: pa.Table, grid: TileGrid, zoom: int) -> list[TileKey]:
    lon, lat = truth.pixel_to_lonlat(patches["cx"].to_numpy(), patches["cy"].to_numpy())
    return [grid.tile_at(float(x), float(y), zoom) for x, y in zip(lon, lat, strict=True)]


def patch_recall(true_tiles: Sequence[TileKey], candidates: pa.Table) -> dict[str, float | None]:
    """Fraction of patches whose true centre tile is in their top 1, top 10 and all K candidates."""
    n = len(true_tiles)
    if n == 0:
        return {"recall_at_1": None, "recall_at_10": None, "recall_at_k": None}
    true_keys = [t.key for t in true_tiles]
    missing = np.iinfo(np.int64).max
    best_rank = np.full(n, missing)
    for p, key, rank in zip(
        candidates["query"].to_pylist(),
        candidates["key"].to_pylist(),
        candidates["rank"].to_pylist(),
        strict=True,
    ):
        if key == true_keys[p]:
            best_rank[p] = min(best_rank[p], rank)
    return {
        "recall_at_1": float(np.sum(best_rank < 1) / n),
        "recall_at_10": float(np.sum(best_rank < 10) / n),
        "recall_at_k": float(np.sum(best_rank < missing) / n),
    }


def _near(key: str, tile: TileKey) -> bool:
    """The tile `key` is the true tile or one of its 8 neighbours (its mosaic holds the truth)."""
    other = TileKey.parse(key)
    return abs(other.col - tile.col) <= 1 and abs(other.row - tile.row) <= 1


def funnel(
    true_tiles: Sequence[TileKey], candidates: pa.Table, nodes: pa.Table, accepted: dict[int, str]
) -> tuple[int, int, int]:
    """Patches whose true tile (or a neighbour) is in the top K, in clique group 0, verified."""
    topk = {
        p
        for p, key in zip(
            candidates["query"].to_pylist(), candidates["key"].to_pylist(), strict=True
        )
        if _near(key, true_tiles[p])
    }
    group0 = nodes.filter(pc.equal(nodes["group"], 0))
    kept = {
        p
        for p, key in zip(group0["query"].to_pylist(), group0["key"].to_pylist(), strict=True)
        if _near(key, true_tiles[p])
    }
    verified = {p for p, key in accepted.items() if _near(key, true_tiles[p])}
    return len(topk), len(kept & topk), len(verified)


def _error(loc: Localization, truth: Truth) -> float | None:
    if loc.centre_lon is None or loc.centre_lat is None:
        return None
    return float(distance_m(loc.centre_lon, loc.centre_lat, *truth.centre_lonlat))


def _acc(loc: Localization, truth: Truth, grid: TileGrid, zoom: int) -> bool:
    """The paper's Acc: the tile holding the estimated centre overlaps the query's true extent."""
    if loc.centre_lon is None or loc.centre_lat is None:
        return False
    b = grid.bounds(grid.tile_at(loc.centre_lon, loc.centre_lat, zoom))
    tile = _polygon([(b.west, b.north), (b.east, b.north), (b.east, b.south), (b.west, b.south)])
    return bool(tile.Intersects(_polygon(truth.corners_lonlat)))


def score_query(ev: QueryEvidence, truth: Truth, grid: TileGrid, zoom: int) -> QueryScore:
    """Score one query's final, stage-2 and retrieval-only estimates against its truth.

    Tile size = √(width·height) of the true tile on the ground. Corner error = mean distance of
    the four estimated footprint corners to the true ones.
    """
    loc = ev.final
    tlon, tlat = truth.centre_lonlat
    tile_m = math.sqrt(math.prod(ground_size_m(grid, grid.tile_at(tlon, tlat, zoom))))
    error, corners = _error(loc, truth), None
    if error is not None and len(loc.corners_lonlat) == 4:
        e, t = np.array(loc.corners_lonlat), np.array(truth.corners_lonlat)
        corners = float(np.mean(distance_m(e[:, 0], e[:, 1], t[:, 0], t[:, 1])))
    true_tiles = _true_tiles(truth, ev.patches, grid, zoom)
    f_retrieval, f_cliques, f_verified = funnel(true_tiles, ev.candidates, ev.nodes, ev.accepted)
    return QueryScore(
        query=loc.query,
        method=loc.method,
        error_m=error,
        corner_error_m=corners,
        tile_m=tile_m,
        within_1_tile=error is not None and error <= tile_m,
        within_3_tiles=error is not None and error <= 3 * tile_m,
        acc=_acc(loc, truth, grid, zoom),
        retrieval_error_m=_error(ev.retrieval, truth),
        cliques_error_m=_error(ev.stage2, truth),
        retrieval_acc=_acc(ev.retrieval, truth, grid, zoom),
        cliques_acc=_acc(ev.stage2, truth, grid, zoom),
        patches=ev.patches.num_rows,
        support=loc.support,
        confidence=loc.confidence,
        **patch_recall(true_tiles, ev.candidates),
        funnel_retrieval=f_retrieval,
        funnel_cliques=f_cliques,
        funnel_verified=f_verified,
        **{f"seconds_{k}": float(ev.seconds.get(k, 0.0)) for k in STAGE_TIMES},
    )


STAGE_TIMES = ("patches", "candidates", "cliques", "verify")


@dataclass
class Summary:
    """All queries together; `stages` holds one `stage_metrics` row per stage estimate, and the
    per-stage medians and Recall@1<r below are read from it."""

    queries: int
    evaluated: int
    within_1_tile: int
    within_3_tiles: int
    acc: int
    median_corner_error_m: float | None
    mean_recall_at_k: float | None
    funnel: dict[str, int]
    mean_seconds: dict[str, float]
    stages: list[dict]

    def _stage(self, stage: str) -> dict:
        return next(row for row in self.stages if row["stage"] == stage)

    @property
    def median_error_m(self) -> float | None:
        return self._stage("verified")["median_error_m"]

    @property
    def median_retrieval_error_m(self) -> float | None:
        return self._stage("retrieval")["median_error_m"]

    @property
    def median_cliques_error_m(self) -> float | None:
        return self._stage("cliques")["median_error_m"]

    @property
    def recall(self) -> dict[str, float]:
        """'stage@r' → share of evaluated queries whose estimate of that stage is within r m."""
        return {f"{row['stage']}@{r}": row[f"R@1<{r}m"] for row in self.stages for r in RADII_M}


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _p90(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.percentile(kept, 90)) if kept else None


def _stage_fields(s: QueryScore, stage: str) -> tuple[float | None, bool]:
    if stage == "retrieval":
        return s.retrieval_error_m, s.retrieval_acc
    if stage == "cliques":
        return s.cliques_error_m, s.cliques_acc
    return s.error_m, s.acc


def stage_metrics(scores: Sequence[QueryScore]) -> list[dict]:
    """One row per stage estimate (retrieval vote, + cliques, + verification): queries localized,
    median and 90th-percentile centre error over those, then shares of all scored queries within
    1 and 3 tiles, with the paper's Acc, and Recall@1<r."""
    n = len(scores)
    rows = []
    for stage in STAGES:
        fields = [(*_stage_fields(s, stage), s.tile_m) for s in scores]
        errors = [e for e, _, _ in fields]

        def share(hit: Sequence[bool]) -> float:
            return sum(hit) / n if n else 0.0

        rows.append(
            {
                "stage": stage,
                "localized": sum(e is not None for e in errors),
                "median_error_m": _median(errors),
                "p90_error_m": _p90(errors),
                "within_1_tile": share([e is not None and e <= t for e, _, t in fields]),
                "within_3_tiles": share([e is not None and e <= 3 * t for e, _, t in fields]),
                "acc": share([a for _, a, _ in fields]),
                **{f"R@1<{r}m": share([e is not None and e <= r for e in errors]) for r in RADII_M},
            }
        )
    return rows


def summarise(scores: Sequence[QueryScore], total: int) -> Summary:
    """Counts, medians, Recall@1<r per stage, the stage funnel and mean stage times."""
    n = len(scores)
    recalls = [s.recall_at_k for s in scores if s.recall_at_k is not None]
    return Summary(
        queries=total,
        evaluated=n,
        within_1_tile=sum(s.within_1_tile for s in scores),
        within_3_tiles=sum(s.within_3_tiles for s in scores),
        acc=sum(s.acc for s in scores),
        median_corner_error_m=_median([s.corner_error_m for s in scores]),
        mean_recall_at_k=statistics.fmean(recalls) if recalls else None,
        funnel={
            "patches": sum(s.patches for s in scores),
            "retrieval": sum(s.funnel_retrieval for s in scores),
            "cliques": sum(s.funnel_cliques for s in scores),
            "verified": sum(s.funnel_verified for s in scores),
        },
        mean_seconds={
            k: (statistics.fmean(getattr(s, f"seconds_{k}") for s in scores) if n else 0.0)
            for k in STAGE_TIMES
        },
        stages=stage_metrics(scores),
    )


def summary_line(summary: Summary) -> str:
    """The demo's closing line."""
    median = "n/a" if summary.median_error_m is None else f"{summary.median_error_m:.0f}"
    return (
        f"demo: {summary.within_1_tile}/{summary.queries} queries within 1 tile; "
        f"median error {median} m"
    )


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
            "kept by cliques": f["cliques"],
            "verified": f["verified"],
        }
    ]
    seconds = [{f"{k} s": v for k, v in summary.mean_seconds.items()}]
    return "\n\n".join(
        [
            "## Stages\n\n" + md_table(rows),
            "## Patch funnel (true tile or a neighbour)\n\n" + md_table(funnel_rows),
            "## Mean seconds per query and stage\n\n" + md_table(seconds),
        ]
    )


def write_report(
    out_dir: Path,
    scores: Sequence[QueryScore],
    summary: Summary,
    skipped: dict[str, str],
    locs: dict[str, Localization],
    truths: dict[str, Truth],
) -> dict[str, Path]:
    """Write evaluation.md, evaluation.parquet and map.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "evaluation.md",
        "table": out_dir / "evaluation.parquet",
        "map": out_dir / "map.png",
    }
    pq.write_table(pa.Table.from_pylist([asdict(s) for s in scores]), paths["table"])
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
    paths["markdown"].write_text("\n".join(lines) + "\n")
    plot_map(paths["map"], locs, truths)
    return paths


def plot_map(path: Path, locs: dict[str, Localization], truths: dict[str, Truth]) -> None:
    """PNG map: true footprints (outlines) and estimated centres (crosses) joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    for name, truth in truths.items():
        xs, ys = zip(*[*truth.corners_lonlat, truth.corners_lonlat[0]], strict=True)
        ax.plot(xs, ys, color="tab:green", lw=1)
        ax.annotate(name, truth.centre_lonlat, fontsize=7, color="tab:green")
        loc = locs.get(name)
        if loc is not None and loc.centre_lon is not None:
            ax.plot(loc.centre_lon, loc.centre_lat, "x", color="tab:red")
            ax.plot(
                [truth.centre_lonlat[0], loc.centre_lon],
                [truth.centre_lonlat[1], loc.centre_lat],
                color="tab:red",
                lw=0.6,
            )
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("true footprints (green) and estimated centres (red)")
    ax.set_aspect(
        1 / math.cos(math.radians(np.mean([t.centre_lonlat[1] for t in truths.values()])))
        if truths
        else "auto"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
