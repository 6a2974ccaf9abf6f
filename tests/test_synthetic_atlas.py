"""The atlas: many small worlds side by side, built world by world at two dates, resumable."""

import sqlite3
from pathlib import Path

import pytest

from rsloc_assets.synthetic.atlas import AtlasSpec, build_atlas, plan_atlas, stamp_path
from rsloc_assets.synthetic.landscape import Landscape

SPEC = AtlasSpec(tiles=60, seed=3, world_km=4.0, gsd_m=8.0, worlds_per_row=2)


def test_plan_lays_out_disjoint_worlds_until_the_tiles_are_reached():
    worlds = plan_atlas(SPEC)
    assert sum(w.tiles for w in worlds) >= SPEC.tiles > sum(w.tiles for w in worlds[:-1])
    for a in worlds:
        for b in worlds:
            if a.index < b.index:
                apart_cols = a.cols[1] < b.cols[0] or b.cols[1] < a.cols[0]
                apart_rows = a.rows[1] < b.rows[0] or b.rows[1] < a.rows[0]
                assert apart_cols or apart_rows, (a, b)
    assert len({w.spec.seed for w in worlds}) == len(worlds)
    assert plan_atlas(SPEC) == worlds  # deterministic in the seed


def test_build_writes_two_dates_per_tile_inside_the_boxes_and_resumes(tmp_path: Path):
    out = tmp_path / "atlas.sqlite"
    report = build_atlas(SPEC, out)
    worlds = plan_atlas(SPEC)
    assert report.built == [w.index for w in worlds] and report.tiles_written > 0
    with sqlite3.connect(out) as conn:
        rows = conn.execute("SELECT tile_column, tile_row, time_ FROM ge_tiles").fetchall()
    times: dict[tuple[int, int], set[str]] = {}
    for col, row, time_ in rows:
        times.setdefault((col, row), set()).add(time_)
    assert all(t == {"2021", "2023"} for t in times.values())
    for col, row in times:
        inside = [
            w for w in worlds if w.cols[0] <= col <= w.cols[1] and w.rows[0] <= row <= w.rows[1]
        ]
        assert len(inside) == 1
    expected = sum(w.tiles for w in worlds)
    assert 0.7 * expected <= len(times) <= 1.3 * expected

    again = build_atlas(SPEC, out)
    assert again.built == [] and again.tiles_written == 0
    assert stamp_path(out).is_file()
    with pytest.raises(ValueError, match="holds another atlas"):
        build_atlas(AtlasSpec(tiles=60, seed=4, world_km=4.0, gsd_m=8.0), out)


def test_landscapes_come_from_the_spec():
    only = AtlasSpec(tiles=40, world_km=4.0, gsd_m=8.0, landscapes=(Landscape.FOREST,))
    assert {w.spec.landscape for w in plan_atlas(only)} == {Landscape.FOREST}
