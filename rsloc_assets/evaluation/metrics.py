"""Scores of each query's estimates against its truth, and their summary over all queries.

Metrics: centre error in metres, success within 1 and 3 tile sizes, the RSLoc paper's image-level
Acc (the estimate's tile overlaps the query's true extent), Recall@1<r, patch-level recall of the
true tile, the stage funnel and seconds per step.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from osgeo import ogr

from rsloc_assets.evaluation.truth import Truth
from rsloc_assets.geodesy import distance_m
from rsloc_assets.grids import TileGrid, TileKey, ground_size_m
from rsloc_assets.records import Hypothesis, Localization, Stage, Step


def _polygon(points: Sequence[tuple[float, float]]) -> ogr.Geometry:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in [*points, points[0]]:
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly


RADII_M = (25, 100, 500, 1200)


@dataclass
class QueryEvidence:
    """What the pipeline produced for one query, as evaluation reads it."""

    final: Localization
    stage2: Localization
    retrieval: Localization
    patches: pa.Table
    candidates: pa.Table
    hypothesis_tiles: pa.Table
    hypotheses: list[Hypothesis]
    verified_hypothesis: int | None
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
    hypothesis_rank: int
    verified_hypothesis: int
    seconds_patches: float
    seconds_candidates: float
    seconds_cliques: float
    seconds_verify: float


def patch_true_tiles(truth: Truth, patches: pa.Table, grid: TileGrid, zoom: int) -> list[TileKey]:
    """The gallery tile under each patch's true centre."""
    lon, lat = truth.pixel_to_lonlat(patches["cx"].to_numpy(), patches["cy"].to_numpy())
    return [grid.tile_at(float(x), float(y), zoom) for x, y in zip(lon, lat, strict=True)]


def _near(key: str, tile: TileKey) -> bool:
    """The tile `key` is the true tile or one of its 8 neighbours (its mosaic holds the truth)."""
    other = TileKey.parse(key)
    return abs(other.col - tile.col) <= 1 and abs(other.row - tile.row) <= 1


def true_tile_ranks(
    true_tiles: Sequence[TileKey], candidates: pa.Table, neighbours: bool = False
) -> np.ndarray:
    """Each patch's best candidate rank of its true tile (or, with `neighbours`, of the true tile
    or one of its 8 neighbours, whose mosaics hold the truth); -1 where none was retrieved."""
    best = np.full(len(true_tiles), -1, dtype=np.int64)
    for p, key, rank in zip(
        candidates["patch"].to_pylist(),
        candidates["key"].to_pylist(),
        candidates["rank"].to_pylist(),
        strict=True,
    ):
        hit = _near(key, true_tiles[p]) if neighbours else key == true_tiles[p].key
        if hit and (best[p] < 0 or rank < best[p]):
            best[p] = rank
    return best


def patch_recall(true_tiles: Sequence[TileKey], candidates: pa.Table) -> dict[str, float | None]:
    """Fraction of patches whose true centre tile is in their top 1, top 10 and all K candidates."""
    n = len(true_tiles)
    if n == 0:
        return {"recall_at_1": None, "recall_at_10": None, "recall_at_k": None}
    ranks = true_tile_ranks(true_tiles, candidates)
    found = ranks >= 0
    return {
        "recall_at_1": float(np.sum(found & (ranks < 1)) / n),
        "recall_at_10": float(np.sum(found & (ranks < 10)) / n),
        "recall_at_k": float(np.sum(found) / n),
    }


def funnel(
    true_tiles: Sequence[TileKey],
    candidates: pa.Table,
    hypothesis_tiles: pa.Table,
    accepted: dict[int, str],
) -> tuple[int, int, int]:
    """Patches whose true tile (or a neighbour) is in the top K, supports the best hypothesis,
    and was verified."""
    topk = set(np.flatnonzero(true_tile_ranks(true_tiles, candidates, neighbours=True) >= 0))
    first = pc.equal(hypothesis_tiles["hypothesis"], 0)
    best = hypothesis_tiles.filter(pc.and_(first, pc.is_valid(hypothesis_tiles["hit_key"])))
    kept = {
        p
        for p, key in zip(best["patch"].to_pylist(), best["hit_key"].to_pylist(), strict=True)
        if _near(key, true_tiles[p])
    }
    verified = {p for p, key in accepted.items() if _near(key, true_tiles[p])}
    return len(topk), len(kept & topk), len(verified)


def hypothesis_rank(hypotheses: Sequence[Hypothesis], truth: Truth, tile_m: float) -> int:
    """Rank of the first hypothesis whose centre is within one tile of the truth; -1: none."""
    for h in hypotheses:
        if distance_m(h.centre_lon, h.centre_lat, *truth.centre_lonlat) <= tile_m:
            return h.rank
    return -1


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
    tiles = patch_true_tiles(truth, ev.patches, grid, zoom)
    f_retrieval, f_cliques, f_verified = funnel(
        tiles, ev.candidates, ev.hypothesis_tiles, ev.accepted
    )
    return QueryScore(
        query=loc.query,
        method=str(loc.method),
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
        **patch_recall(tiles, ev.candidates),
        funnel_retrieval=f_retrieval,
        funnel_cliques=f_cliques,
        funnel_verified=f_verified,
        hypothesis_rank=hypothesis_rank(ev.hypotheses, truth, tile_m),
        verified_hypothesis=-1 if ev.verified_hypothesis is None else ev.verified_hypothesis,
        **{f"seconds_{k}": float(ev.seconds.get(k, 0.0)) for k in Step},
    )


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
    hypothesis_recall: dict[str, float | None]

    def _stage(self, stage: Stage) -> dict:
        return next(row for row in self.stages if row["stage"] == stage)

    @property
    def median_error_m(self) -> float | None:
        return self._stage(Stage.VERIFIED)["median_error_m"]

    @property
    def median_retrieval_error_m(self) -> float | None:
        return self._stage(Stage.RETRIEVAL)["median_error_m"]

    @property
    def median_cliques_error_m(self) -> float | None:
        return self._stage(Stage.CLIQUES)["median_error_m"]

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


def _stage_fields(s: QueryScore, stage: Stage) -> tuple[float | None, bool]:
    if stage == Stage.RETRIEVAL:
        return s.retrieval_error_m, s.retrieval_acc
    if stage == Stage.CLIQUES:
        return s.cliques_error_m, s.cliques_acc
    return s.error_m, s.acc


def stage_metrics(scores: Sequence[QueryScore]) -> list[dict]:
    """One row per stage estimate (retrieval vote, + cliques, + verification): queries localized,
    median and 90th-percentile centre error over those, then shares of all scored queries within
    1 and 3 tiles, with the paper's Acc, and Recall@1<r."""
    n = len(scores)
    rows = []
    for stage in Stage:
        fields = [(*_stage_fields(s, stage), s.tile_m) for s in scores]
        errors = [e for e, _, _ in fields]

        def share(hit: Sequence[bool]) -> float:
            return sum(hit) / n if n else 0.0

        rows.append(
            {
                "stage": stage.value,
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
            k.value: (statistics.fmean(getattr(s, f"seconds_{k}") for s in scores) if n else 0.0)
            for k in Step
        },
        stages=stage_metrics(scores),
        hypothesis_recall=hypothesis_recall(scores),
    )


HYPOTHESIS_RECALL_AT = (1, 5, 10)


def hypothesis_recall(scores: Sequence[QueryScore]) -> dict[str, float | None]:
    """Recall@k over stage 2's ranked hypotheses (as Statewide's Recall@k<r, r = one tile): the
    share of queries with a hypothesis within one tile of the truth among the first k."""
    ranks = [s.hypothesis_rank for s in scores]
    return {
        f"at_{k}": (sum(0 <= r < k for r in ranks) / len(ranks) if ranks else None)
        for k in HYPOTHESIS_RECALL_AT
    }
