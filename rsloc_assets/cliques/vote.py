"""Retrieval-only localization: each patch's candidates, shifted by the patch's offset in the
image, vote for where the image centre is; the place most patches agree on wins."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rsloc_assets.geodesy import metres_per_degree, offset_lonlat
from rsloc_assets.records import Localization, Method


def implied_centres(
    candidates: pa.Table, patches: pa.Table
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image-centre positions implied by each candidate: its tile centre minus its patch's offset
    on the ground, i.e. the offset along the image's axes turned counter-clockwise by the heading
    that made the patch match (the image's x axis lies that far from east).

    Returns (patch, lon, lat, score) arrays, one entry per candidate.
    """
    patch = candidates["patch"].to_numpy()
    x = patches["east_m"].to_numpy()[patch]
    y = patches["north_m"].to_numpy()[patch]
    turn = np.radians(candidates["heading_deg"].to_numpy().astype(np.float64))
    c, s = np.cos(turn), np.sin(turn)
    lon, lat = offset_lonlat(
        candidates["lon"].to_numpy(), candidates["lat"].to_numpy(), s * y - c * x, -s * x - c * y
    )
    return patch, lon, lat, candidates["score"].to_numpy()


def vote_members(
    candidates: pa.Table,
    patches: pa.Table,
    tile_ground_m: tuple[float, float],
    vote_top: int = 10,
) -> np.ndarray:
    """Row indices into `candidates` of the hits in the block most patches vote for.

    Each patch votes with its `vote_top` best candidates. Implied centres fall into cells one
    gallery tile wide; a vote counts in every 2×2 block of cells containing it, so a true
    location split across a cell edge is not split. Ties go to the higher summed best score.
    """
    rows = np.flatnonzero(candidates["rank"].to_numpy() < vote_top)
    if not len(rows):
        return rows
    patch, lon, lat, score = implied_centres(candidates.take(pa.array(rows)), patches)
    ref_lat = float(np.median(lat))
    m_lon, m_lat = metres_per_degree(ref_lat)
    cell_lon, cell_lat = tile_ground_m[0] / m_lon, tile_ground_m[1] / m_lat
    ci = np.floor(lon / cell_lon).astype(np.int64)
    cj = np.floor(lat / cell_lat).astype(np.int64)

    # Each vote lands in the four 2×2 blocks (named by their lower-left cell) that contain it.
    blocks_i = np.concatenate([ci, ci - 1, ci, ci - 1])
    blocks_j = np.concatenate([cj, cj, cj - 1, cj - 1])
    voter = np.tile(patch, 4)
    best = np.tile(score, 4)
    keys = np.stack([blocks_i, blocks_j, voter], axis=1)
    order = np.lexsort((-best, voter, blocks_j, blocks_i))
    keys, best = keys[order], best[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    keys, best = keys[first], best[first]  # one (block, patch) entry with the patch's best score
    blocks, inverse = np.unique(keys[:, :2], axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel())
    sums = np.bincount(inverse.ravel(), weights=best)
    win = int(np.lexsort((sums, counts))[-1])
    bi, bj = blocks[win]
    inside = (ci >= bi) & (ci <= bi + 1) & (cj >= bj) & (cj <= bj + 1)
    return rows[inside]


def vote(
    query: str,
    candidates: pa.Table,
    patches: pa.Table,
    tile_ground_m: tuple[float, float],
    image_ground_m: tuple[float, float],
    vote_top: int = 10,
) -> Localization:
    """The retrieval-only estimate: the centre the most patches agree on (`vote_members`), the
    score-weighted mean of the supporting patches' best implied centres, the footprint turned by
    their mean heading; `error_m` is their RMS spread about it."""
    members = vote_members(candidates, patches, tile_ground_m, vote_top)
    if not len(members):
        return Localization(
            query, Method.NOT_LOCALIZED, patches=patches.num_rows, reason="no candidates"
        )
    hits = candidates.take(pa.array(members))
    patch, lon, lat, score = implied_centres(hits, patches)
    return consensus(
        query,
        Method.RETRIEVAL_VOTE,
        patch,
        lon,
        lat,
        score,
        hits["heading_deg"].to_numpy(),
        np.arange(len(members)),
        patches.num_rows,
        image_ground_m,
    )


def best_per_patch(hits: np.ndarray, patch: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The hit with the smallest `key` in each patch among `hits`."""
    if not len(hits):
        return hits
    order = hits[np.lexsort((key[hits], patch[hits]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = patch[order][1:] != patch[order][:-1]
    return order[first]


def consensus(
    query: str,
    method: Method,
    patch: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    score: np.ndarray,
    heading_deg: np.ndarray,
    members: np.ndarray,
    n_patches: int,
    image_ground_m: tuple[float, float],
) -> Localization:
    """Estimate from the implied centres at `members`: each patch's best-scoring one, averaged by
    score, and the footprint turned by the circular mean of their headings; confidence =
    agreeing patches / all patches, `error_m` = their RMS spread."""
    idx = best_per_patch(members, patch, -score)
    w = np.clip(score[idx], 1e-6, None)
    est_lon = float(np.average(lon[idx], weights=w))
    est_lat = float(np.average(lat[idx], weights=w))
    turn = np.radians(heading_deg[idx])
    rotation = float(np.degrees(np.arctan2(w @ np.sin(turn), w @ np.cos(turn))))
    m_lon, m_lat = metres_per_degree(est_lat)
    spread = np.hypot((lon[idx] - est_lon) * m_lon, (lat[idx] - est_lat) * m_lat)
    return Localization(
        query=query,
        method=method,
        centre_lon=est_lon,
        centre_lat=est_lat,
        corners_lonlat=footprint(est_lon, est_lat, image_ground_m, rotation),
        confidence=len(idx) / n_patches,
        support=len(idx),
        patches=n_patches,
        error_m=float(np.sqrt(np.mean(spread**2))),
    )


def footprint(
    lon: float, lat: float, image_ground_m: tuple[float, float], rotation_deg: float = 0.0
) -> list[tuple[float, float]]:
    """Image corners (TL, TR, BR, BL) around a centre, from the image's ground size, turned
    counter-clockwise by `rotation_deg` from north-up."""
    half_w, half_h = image_ground_m[0] / 2, image_ground_m[1] / 2
    x = np.array([-half_w, half_w, half_w, -half_w])
    y = np.array([half_h, half_h, -half_h, -half_h])
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    east, north = c * x - s * y, s * x + c * y
    lons, lats = offset_lonlat(np.full(4, lon), np.full(4, lat), east, north)
    return [(float(x), float(y)) for x, y in zip(lons, lats, strict=True)]
