"""Ranked location hypotheses from stage 2's cliques: each kept clique (and the retrieval vote)
seeds a rigid fit of the patches' offsets to their candidates' tiles, the fit is refined on every
candidate that agrees with it, and the places are ranked by how much better than chance their
supporting candidates are.

A clique only says that its hits' ground distances match their patches' pixel distances, which a
mirrored or a chained set of hits can also satisfy; the rigid fit (a rotation and a shift, no
reflection, scale fixed by the ground resolution) keeps only hits that agree on one placement of
the whole image, and refining it on all candidates counts patches the clique missed. On the
30,913-tile gallery of `make bench-gallery-size` (64 queries, replayed on its candidates) this put
the true place first for 63 queries where the best clique group's vote did for 61; ranking by
evidence rather than by supporting patches took NAIP cross-date (`bench-real`, 99 tiles) from 12
to 17 of 18.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rsloc_assets.cliques.vote import best_per_patch
from rsloc_assets.geodesy import distance_m, metres_per_degree, offset_lonlat
from rsloc_assets.grids import TileGrid
from rsloc_assets.records import HYPOTHESIS_SCHEMA, Hypothesis, Method

# A seed is scored on the nodes within this many times the farthest a supporting node can lie
# from its fit's centre (image half-diagonal + support radius): refits move the centre less.
# 80,000 candidates over 824,796 tiles (bench-query): 257 seeds ranked in 1.99 s on all nodes,
# 0.29 s on their neighbourhoods (same hypotheses).
REACH = 3.0


@dataclass(frozen=True)
class HypothesisParams:
    """How seeds become ranked hypotheses; lengths in gallery tile sizes."""

    # A hit is a tile centre, up to ~0.7 tile from its patch's true centre: one tile is the
    # quantisation of the grid plus a little drift from rotation and scale.
    support_tiles: float = 1.0
    merge_tiles: float = 1.5  # places closer than the clique tolerance are one place
    refits: int = 2  # refits on the agreeing hits (the support settles after one or two)
    max_hypotheses: int = 10

    def __post_init__(self) -> None:
        if self.support_tiles <= 0 or self.merge_tiles < 0 or self.max_hypotheses < 1:
            raise ValueError(f"support_tiles > 0, merge_tiles ≥ 0, max_hypotheses ≥ 1: {self}")


@dataclass(frozen=True)
class Seed:
    """Hits (row indices into the nodes) that propose one place, and where they came from."""

    hits: np.ndarray
    source: Method


@dataclass(frozen=True)
class _Fit:
    rotation: float  # radians, counter-clockwise from the image's axes to east/north
    shift: np.ndarray  # the image centre in the local frame, metres
    support: np.ndarray  # one agreeing hit per patch, row indices into the nodes
    residual_m: float


def rigid_fit(src: np.ndarray, dst: np.ndarray, theta0: float = 0.0) -> tuple[float, np.ndarray]:
    """Least-squares rotation θ and shift t with dst ≈ R(θ)·src + t, no reflection or scale
    (2-D Kabsch); a single pair fixes no rotation, so it gives θ = `theta0`."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    if len(src) < 2:
        return theta0, md - _rotate(ms, theta0)
    h = (src - ms).T @ (dst - md)
    theta = math.atan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1])
    return theta, md - _rotate(ms, theta)


def _rotate(xy: np.ndarray, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return xy @ np.array([[c, s], [-s, c]])


def _local(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    m_lon, m_lat = metres_per_degree(lat0)
    return np.stack([(lon - lon0) * m_lon, (lat - lat0) * m_lat], axis=1)


def _patch_medians(patch: np.ndarray, score: np.ndarray, n_patches: int) -> np.ndarray:
    """The median similarity of each patch's candidates (0 for a patch with none)."""
    out = np.zeros(n_patches, dtype=np.float64)
    if not len(patch):
        return out
    order = np.lexsort((score, patch))
    bounds = np.flatnonzero(np.r_[True, patch[order][1:] != patch[order][:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        out[patch[order[lo]]] = float(np.median(score[order[lo:hi]]))
    return out


class _Nearby:
    """The nodes near a place, found through their latitude order without a pass over them all.

    A fit whose image centre lies `shift` metres from the place can only be supported by nodes
    within |shift| + the image's half-diagonal + the support radius of it; `rows` holds every
    node within `reach` of the place, so a fit is scored on them alone while that bound stays
    inside `reach`, and on all nodes otherwise: the support is the one all nodes give.
    """

    def __init__(self, lon: np.ndarray, lat: np.ndarray, offsets: np.ndarray, radius_m: float):
        self.lon, self.lat = lon, lat
        self.by_lat = np.argsort(lat, kind="stable")
        self.sorted_lat = lat[self.by_lat]
        self.bound_m = float(np.hypot(offsets[:, 0], offsets[:, 1]).max(initial=0.0)) + radius_m
        self.reach_m = REACH * self.bound_m

    def rows(self, lon0: float, lat0: float, seed: np.ndarray) -> np.ndarray:
        """Sorted indices of the nodes within `reach_m` of (lon0, lat0) on each axis, and `seed`."""
        m_lon, m_lat = (float(v) for v in metres_per_degree(lat0))
        span = self.reach_m / m_lat
        lo, hi = np.searchsorted(self.sorted_lat, [lat0 - span, lat0 + span], side="left")
        band = self.by_lat[lo : max(lo, hi)]
        near = band[np.abs(self.lon[band] - lon0) * m_lon <= self.reach_m]
        return np.union1d(near, seed)

    def covers(self, shift: np.ndarray) -> bool:
        """Whether every node that may support a fit of this shift is among `rows`."""
        return math.hypot(*shift) + self.bound_m <= self.reach_m


def _gap(offsets: np.ndarray, xy: np.ndarray, theta: float, shift: np.ndarray) -> np.ndarray:
    """Metres between each node and where the fit puts its patch (`offsets` turned, shifted)."""
    c, s = math.cos(theta), math.sin(theta)
    dx = offsets[:, 0] * c - offsets[:, 1] * s + shift[0] - xy[:, 0]
    dy = offsets[:, 0] * s + offsets[:, 1] * c + shift[1] - xy[:, 1]
    return np.sqrt(dx * dx + dy * dy)


def _fit_seed(
    seed: np.ndarray,
    offsets: np.ndarray,
    patch: np.ndarray,
    heading: np.ndarray,
    radius_m: float,
    refits: int,
    nearby: _Nearby,
) -> tuple[_Fit, float, float] | None:
    """Fit on the seed, then refit on the closest agreeing hit of every patch; a lone hit takes
    its rotation from the heading it was retrieved at (radians)."""
    lon, lat = nearby.lon, nearby.lat
    lon0, lat0 = float(np.median(lon[seed])), float(np.median(lat[seed]))
    rows = nearby.rows(lon0, lat0, seed)
    xy = _local(lon[rows], lat[rows], lon0, lat0)
    members = seed
    fit = None
    for _ in range(refits + 1):
        at = np.searchsorted(rows, members)
        theta, shift = rigid_fit(offsets[members], xy[at], float(heading[members[0]]))
        if len(rows) < len(lon) and not nearby.covers(shift):
            rows = np.arange(len(lon))
            xy = _local(lon, lat, lon0, lat0)
        gap = _gap(offsets[rows], xy, theta, shift)
        agree = best_per_patch(np.flatnonzero(gap <= radius_m), patch[rows], gap)
        if not len(agree):
            break
        fit = _Fit(theta, shift, rows[agree], float(np.sqrt(np.mean(gap[agree] ** 2))))
        if np.array_equal(rows[agree], members):
            break
        members = rows[agree]
    return None if fit is None else (fit, lon0, lat0)


def rank_hypotheses(
    nodes: pa.Table,
    patches: pa.Table,
    seeds: Sequence[Seed],
    tile_m: float,
    grid: TileGrid,
    zoom: int,
    params: HypothesisParams | None = None,
) -> tuple[list[Hypothesis], pa.Table]:
    """Hypotheses best first (evidence, then support), one per place, and for each the tile under
    every patch's predicted centre with its supporting hit (`HYPOTHESIS_SCHEMA`).

    A hypothesis's evidence is the summed similarity of its supporting hits above each one's
    patch median: a hit no better than a patch's typical candidate adds nothing, so support by
    chance does not count where each patch's candidates cover much of a small gallery.
    """
    params = params or HypothesisParams()
    patch = nodes["patch"].to_numpy()
    lon, lat = nodes["lon"].to_numpy(), nodes["lat"].to_numpy()
    score = nodes["score"].to_numpy().astype(np.float64)
    # Only a one-patch query's hits carry its rotation alone; elsewhere a lone hit keeps θ = 0,
    # the rule every measured multi-patch result was ranked with.
    heading = np.radians(nodes["heading_deg"].to_numpy().astype(np.float64))
    if patches.num_rows > 1:
        heading = np.zeros_like(heading)
    east, north = patches["east_m"].to_numpy(), patches["north_m"].to_numpy()
    offsets = np.stack([east[patch], north[patch]], axis=1)
    typical = _patch_medians(patch, score, patches.num_rows)
    radius = params.support_tiles * tile_m
    nearby = _Nearby(lon, lat, offsets, radius)
    fits = []
    for seed in seeds:
        hits = best_per_patch(np.asarray(seed.hits, dtype=np.int64), patch, -score)
        if not len(hits):
            continue
        found = _fit_seed(hits, offsets, patch, heading, radius, params.refits, nearby)
        if found is not None:
            fit, lon0, lat0 = found
            hits = fit.support
            evidence = float(np.clip(score[hits] - typical[patch[hits]], 0.0, None).sum())
            fits.append((evidence, len(hits), fit, lon0, lat0, seed))
    fits.sort(key=lambda f: (-f[0], -f[1]))
    hypotheses: list[Hypothesis] = []
    rows: list[dict] = []
    all_offsets = np.stack([east, north], axis=1)
    for evidence, support, fit, lon0, lat0, seed in fits:
        if len(hypotheses) == params.max_hypotheses:
            break
        c_lon, c_lat = (float(v) for v in offset_lonlat(lon0, lat0, *fit.shift))
        if any(
            distance_m(c_lon, c_lat, h.centre_lon, h.centre_lat) <= params.merge_tiles * tile_m
            for h in hypotheses
        ):
            continue
        rank = len(hypotheses)
        hypotheses.append(
            Hypothesis(
                rank=rank,
                source=seed.source,
                centre_lon=c_lon,
                centre_lat=c_lat,
                rotation_deg=math.degrees(fit.rotation),
                support=support,
                evidence=evidence,
                residual_m=fit.residual_m,
            )
        )
        rows += _patch_rows(rank, fit, lon0, lat0, all_offsets, nodes, grid, zoom)
    return hypotheses, pa.Table.from_pylist(rows, schema=HYPOTHESIS_SCHEMA)


def _patch_rows(
    rank: int,
    fit: _Fit,
    lon0: float,
    lat0: float,
    offsets: np.ndarray,
    nodes: pa.Table,
    grid: TileGrid,
    zoom: int,
) -> list[dict]:
    """Every patch's predicted centre and tile under one hypothesis, with its supporting hit."""
    xy = _rotate(offsets, fit.rotation) + fit.shift
    p_lon, p_lat = offset_lonlat(lon0, lat0, xy[:, 0], xy[:, 1])
    support = nodes.take(pa.array(fit.support)).select(["patch", "key", "rank", "score"])
    hit = {r["patch"]: r for r in support.to_pylist()}
    rows = []
    for p in range(len(offsets)):
        h = hit.get(p)
        rows.append(
            {
                "hypothesis": rank,
                "patch": p,
                "key": grid.tile_at(float(p_lon[p]), float(p_lat[p]), zoom).key,
                "lon": float(p_lon[p]),
                "lat": float(p_lat[p]),
                "hit_key": None if h is None else h["key"],
                "hit_rank": -1 if h is None else h["rank"],
                "hit_score": None if h is None else h["score"],
            }
        )
    return rows
