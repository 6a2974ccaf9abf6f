"""Landscape kinds: each builds deterministically, each is measurably the country it claims to be,
the default is the farmland, and a bad kind is a one-line error."""

import dataclasses
import json

import numpy as np
import pytest

from rsloc_assets.synthetic.landscape import (
    BARE,
    BUILT,
    FIELD,
    FOREST,
    GRASS,
    HEDGE,
    PROFILES,
    SAND,
    WATER,
    Landscape,
    World,
    WorldSpec,
    build_world,
)


def spec(kind: Landscape, seed: int = 7) -> WorldSpec:
    return WorldSpec(width_m=4000.0, height_m=4000.0, gsd_m=8.0, seed=seed, landscape=kind)


@pytest.fixture(scope="module")
def worlds() -> dict[Landscape, World]:
    return {kind: build_world(spec(kind)) for kind in Landscape}


def share(land: World, *classes: int) -> float:
    return float(np.isin(land.cover, classes).mean())


def mean_field_ha(land: World) -> float:
    """Mean area of the parcels that show as fields, in hectares."""
    labels = land.field_id[land.cover == FIELD]
    return labels.size / len(np.unique(labels)) * land.spec.gsd_m**2 / 1e4


def test_every_kind_has_a_profile_and_builds_deterministically(worlds: dict[Landscape, World]):
    assert set(PROFILES) == set(Landscape)
    for kind, land in worlds.items():
        again = build_world(spec(kind))
        for name, arr in vars(land).items():
            if isinstance(arr, np.ndarray):
                assert np.array_equal(arr, getattr(again, name)), (kind, name)
        assert (land.height is None) == (PROFILES[kind].relief_m == 0), kind
        other = build_world(spec(kind, seed=8))
        assert np.mean(other.cover != land.cover) > 0.1, kind


def test_kinds_differ_measurably_from_the_farmland(worlds: dict[Landscape, World]):
    farm = worlds[Landscape.FARMLAND]
    assert 0.1 < share(farm, FOREST) < 0.3 and share(farm, FIELD) > 0.6
    assert share(farm, GRASS, BARE, SAND) == 0 and farm.height is None

    assert share(worlds[Landscape.FOREST], FOREST) > max(0.65, 3 * share(farm, FOREST))
    desert = worlds[Landscape.DESERT]
    assert share(desert, FIELD, FOREST) < 0.06 and share(desert, SAND, BARE) > 0.8
    assert share(desert, WATER) == 0
    steppe = worlds[Landscape.STEPPE]
    assert share(steppe, GRASS) > 0.4 and share(steppe, FOREST) < 0.03
    assert share(worlds[Landscape.LAKES], WATER) > max(0.06, 3 * share(farm, WATER))
    suburbs = worlds[Landscape.SUBURBS]
    assert share(suburbs, BUILT) > 5 * share(farm, BUILT)
    assert np.mean(suburbs.roof > 0) > 4 * np.mean(farm.roof > 0)
    assert mean_field_ha(worlds[Landscape.PRAIRIE]) > 4 * mean_field_ha(farm)
    bocage = worlds[Landscape.BOCAGE]
    assert mean_field_ha(bocage) < mean_field_ha(farm) / 2
    assert share(bocage, HEDGE) > 2 * share(farm, HEDGE)
    hills = worlds[Landscape.HILLS]
    assert hills.height is not None and hills.height.std() > 50


def test_default_is_the_farmland_and_specs_round_trip_through_json():
    plain = WorldSpec(width_m=4000.0, height_m=4000.0, gsd_m=8.0)
    assert plain.landscape is Landscape.FARMLAND and plain == spec(Landscape.FARMLAND)
    doc = json.loads(json.dumps(dataclasses.asdict(spec(Landscape.DESERT))))
    assert doc["landscape"] == "desert"
    back = WorldSpec(**doc)
    assert back.landscape is Landscape.DESERT and back == spec(Landscape.DESERT)


def test_unknown_landscape_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown landscape 'tundra': expected one of") as err:
        WorldSpec(width_m=4000.0, height_m=4000.0, landscape="tundra")
    assert "\n" not in str(err.value) and "farmland" in str(err.value)
