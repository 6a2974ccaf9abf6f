"""Verification's plan: under each hypothesis, every patch's predicted tile, supported first."""

import pyarrow as pa

from rsloc_assets.records import HYPOTHESIS_SCHEMA
from rsloc_assets.verification.steps import verification_plan


def test_verification_plan_puts_supported_patches_first():
    tiles = pa.Table.from_pylist(
        [
            {"hypothesis": 0, "patch": 0, "key": "15/1/1", "hit_key": None, "hit_rank": -1},
            {
                "hypothesis": 0,
                "patch": 1,
                "key": "15/2/2",
                "hit_key": "15/2/3",
                "hit_rank": 4,
                "hit_score": 0.5,
            },
            {
                "hypothesis": 0,
                "patch": 2,
                "key": "15/3/3",
                "hit_key": "15/3/3",
                "hit_rank": 0,
                "hit_score": 0.9,
            },
            {"hypothesis": 1, "patch": 0, "key": "15/9/9", "hit_key": None, "hit_rank": -1},
        ],
        schema=HYPOTHESIS_SCHEMA,
    )
    plan = verification_plan(tiles, 0)
    assert list(plan) == [2, 1, 0]
    assert plan[2] == [{"key": "15/3/3", "hit_rank": 0}]
    assert plan[1] == [{"key": "15/2/2", "hit_rank": -1}, {"key": "15/2/3", "hit_rank": 4}]
    assert plan[0] == [{"key": "15/1/1", "hit_rank": -1}]
    assert list(verification_plan(tiles, 1)) == [0]
