"""Evaluation: truth from a rotated georeference, error, tile success and the paper's Acc."""

import numpy as np
import pyarrow as pa
import pytest

from rsloc_assets.evaluation.metrics import (
    QueryEvidence,
    hypothesis_recall,
    score_query,
    stage_metrics,
    summarise,
    true_tile_ranks,
)
from rsloc_assets.evaluation.report import summary_line
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.geodesy import offset_lonlat
from rsloc_assets.grids import TileKey, get_grid
from rsloc_assets.records import HYPOTHESIS_SCHEMA, Hypothesis, Localization, Method

GRID = get_grid("ge")


def loc_at(lon, lat, method=Method.VERIFIED):
    return Localization("q", method, lon, lat, confidence=0.5)


def evidence(final, patches=None, candidates=None, tiles=None, accepted=None, hypotheses=()):
    patches = patches or pa.table(
        {"cx": pa.array([], pa.float64()), "cy": pa.array([], pa.float64())}
    )
    candidates = candidates or pa.table(
        {
            "patch": pa.array([], pa.int64()),
            "key": pa.array([], pa.string()),
            "rank": pa.array([], pa.int64()),
        }
    )
    tiles = tiles or HYPOTHESIS_SCHEMA.empty_table()
    stage2 = Localization("q", Method.CLIQUE)
    return QueryEvidence(
        final,
        stage2,
        stage2,
        patches,
        candidates,
        tiles,
        list(hypotheses),
        None,
        accepted or {},
        {},
    )


def test_score_success_and_acc(rotated_query):
    truth = read_truth(rotated_query)
    lon, lat = offset_lonlat(*truth.centre_lonlat, 300.0, 0.0)
    near = score_query(evidence(loc_at(float(lon), float(lat))), truth, GRID, 15)
    assert near.error_m == pytest.approx(300, rel=0.01)
    assert near.within_1_tile and near.acc
    lon, lat = offset_lonlat(*truth.centre_lonlat, 0.0, 2500.0)
    far = score_query(evidence(loc_at(float(lon), float(lat))), truth, GRID, 15)
    assert not far.within_1_tile and far.within_3_tiles
    lon, lat = offset_lonlat(*truth.centre_lonlat, 0.0, 9000.0)
    lost = score_query(evidence(loc_at(float(lon), float(lat))), truth, GRID, 15)
    assert not lost.acc and not lost.within_3_tiles
    missing = score_query(evidence(Localization("q", Method.NOT_LOCALIZED)), truth, GRID, 15)
    assert missing.error_m is None and not missing.acc
    s = summarise([near, far, lost, missing], total=5)
    assert (s.evaluated, s.within_1_tile, s.within_3_tiles, s.acc) == (4, 1, 2, 1)
    assert s.recall["verified@500"] == 0.25 and s.recall["verified@25"] == 0.0
    assert summary_line(s).startswith("1/4 evaluated queries within 1 tile (1 not evaluated); ")
    assert summary_line(s, "demo").startswith("demo: 1/4 evaluated")


def test_stage_metrics_score_each_stage_estimate(rotated_query):
    """Retrieval lands 2.5 km off, cliques 300 m, verification on the spot: three different rows."""
    truth = read_truth(rotated_query)
    far = offset_lonlat(*truth.centre_lonlat, 0.0, 2500.0)
    near = offset_lonlat(*truth.centre_lonlat, 300.0, 0.0)
    ev = evidence(loc_at(*truth.centre_lonlat))
    ev.retrieval = Localization("q", Method.RETRIEVAL_VOTE, float(far[0]), float(far[1]))
    ev.stage2 = Localization("q", Method.CLIQUE, float(near[0]), float(near[1]))
    score = score_query(ev, truth, GRID, 15)
    lost = score_query(evidence(Localization("q", Method.NOT_LOCALIZED)), truth, GRID, 15)
    rows = {row["stage"]: row for row in stage_metrics([score, lost])}
    assert [rows[s]["localized"] for s in ("retrieval", "cliques", "verified")] == [1, 1, 1]
    assert rows["retrieval"]["median_error_m"] == pytest.approx(2500, rel=0.01)
    assert rows["retrieval"]["within_1_tile"] == 0.0 and rows["retrieval"]["within_3_tiles"] == 0.5
    assert not score.retrieval_acc and score.cliques_acc and score.acc
    assert rows["cliques"]["within_1_tile"] == 0.5 and rows["cliques"]["R@1<100m"] == 0.0
    assert rows["verified"]["R@1<25m"] == 0.5 and rows["verified"]["p90_error_m"] < 1.0


def test_corner_error_of_an_exact_footprint_is_zero(rotated_query):
    truth = read_truth(rotated_query)
    exact = Localization(
        "q", Method.VERIFIED, *truth.centre_lonlat, corners_lonlat=truth.corners_lonlat
    )
    score = score_query(evidence(exact), truth, GRID, 15)
    assert score.error_m == pytest.approx(0, abs=1e-6)
    assert score.corner_error_m == pytest.approx(0, abs=1e-6)


def test_patch_recall_and_funnel_count_the_true_tile(rotated_query):
    truth = read_truth(rotated_query)
    patches = pa.table({"cx": [200.0, 100.0], "cy": [150.0, 50.0]})
    lon, lat = truth.pixel_to_lonlat(np.array([200.0]), np.array([150.0]))
    true = GRID.tile_at(float(lon[0]), float(lat[0]), 15)
    beside = f"15/{true.col + 1}/{true.row}"
    cands = pa.table({"patch": [0, 0, 1], "key": ["15/0/0", true.key, "15/1/1"], "rank": [0, 1, 0]})
    tiles = pa.Table.from_pylist(
        [
            {"hypothesis": 0, "patch": 0, "key": true.key, "hit_key": beside, "hit_rank": 1},
            {"hypothesis": 0, "patch": 1, "key": "15/1/1", "hit_key": None, "hit_rank": -1},
            {"hypothesis": 1, "patch": 1, "key": "15/1/1", "hit_key": "15/1/1", "hit_rank": 0},
        ],
        schema=HYPOTHESIS_SCHEMA,
    )
    ev = evidence(loc_at(*truth.centre_lonlat), patches, cands, tiles, accepted={0: true.key})
    score = score_query(ev, truth, GRID, 15)
    assert (score.recall_at_1, score.recall_at_10, score.recall_at_k) == (0.0, 0.5, 0.5)
    assert (score.funnel_retrieval, score.funnel_cliques, score.funnel_verified) == (1, 1, 1)


def test_true_tile_ranks_with_and_without_neighbours():
    true = [TileKey(15, 10, 10), TileKey(15, 50, 50), TileKey(15, 90, 90)]
    cands = pa.table(
        {
            "patch": [0, 0, 0, 1, 1, 2],
            "key": ["15/11/10", "15/10/10", "15/0/0", "15/0/0", "15/49/51", "15/92/90"],
            "rank": [0, 1, 2, 0, 1, 0],
        }
    )
    assert true_tile_ranks(true, cands).tolist() == [1, -1, -1]
    assert true_tile_ranks(true, cands, neighbours=True).tolist() == [0, 1, -1]


def test_hypothesis_rank_and_recall_over_ranked_hypotheses(rotated_query):
    truth = read_truth(rotated_query)

    def at(rank, east_m):
        lon, lat = offset_lonlat(*truth.centre_lonlat, east_m, 0.0)
        return Hypothesis(rank, Method.CLIQUE, float(lon), float(lat), 0.0, 5, 4.0, 300.0)

    found_third = [at(0, 40_000.0), at(1, 9_000.0), at(2, 200.0)]
    hit = score_query(
        evidence(loc_at(*truth.centre_lonlat), hypotheses=found_third), truth, GRID, 15
    )
    miss = score_query(
        evidence(loc_at(*truth.centre_lonlat), hypotheses=found_third[:2]), truth, GRID, 15
    )
    first = score_query(
        evidence(loc_at(*truth.centre_lonlat), hypotheses=[at(0, 100.0)]), truth, GRID, 15
    )
    assert (hit.hypothesis_rank, miss.hypothesis_rank, first.hypothesis_rank) == (2, -1, 0)
    assert hypothesis_recall([hit, miss, first]) == {"at_1": 1 / 3, "at_5": 2 / 3, "at_10": 2 / 3}
    assert hypothesis_recall([]) == {"at_1": None, "at_5": None, "at_10": None}
