"""Stage 3's step on files under a `Layout`: verify each patch against its best candidates'
mosaics, fit the query's footprint, and record matches, JSON and GeoJSON."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pyarrow as pa

from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.grids import TileKey
from rsloc_assets.layout import Layout
from rsloc_assets.records import MATCH_SCHEMA, Localization, Method, Verification
from rsloc_assets.retrieval.encoders import Encoder
from rsloc_assets.retrieval.patches import read_query
from rsloc_assets.verification.features import FeatureCache
from rsloc_assets.verification.footprint import (
    Footprint,
    PatchGeoPoints,
    fit_footprint,
    footprint_geojson,
    mosaic_to_lonlat,
)
from rsloc_assets.verification.matching import PatchMatch, VerifyParams, match_patch


def verification_order(nodes: pa.Table, per_patch: int) -> dict[int, list[dict]]:
    """Each patch's candidates to verify, best first: clique members by clique score, then
    similarity; when the query has no clique at all, its top retrieval candidates."""
    rows = nodes.to_pylist()
    in_clique = any(r["clique_score"] > 0 for r in rows)
    order: dict[int, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (-r["clique_score"], -r["score"], r["rank"])):
        if in_clique and r["clique_score"] == 0:
            continue
        picked = order.setdefault(r["patch"], [])
        if len(picked) < per_patch:
            picked.append(r)
    return order


def _match_row(patch: int, cand: dict, m: PatchMatch, seconds: float) -> dict:
    return {
        "patch": patch,
        "key": cand["key"],
        "rank": cand["rank"],
        "clique_score": cand["clique_score"],
        "accepted": m.accepted,
        "reason": m.reason,
        "keypoints": m.keypoints,
        "matches": m.matches,
        "mac_size": m.mac_size,
        "inliers": m.inliers,
        "similarity": m.similarity,
        "seconds": seconds,
    }


def verify_query(
    layout: Layout,
    name: str,
    encoder: Encoder | None,
    params: VerifyParams | None = None,
    per_patch: int = 3,
    workers: int = 2,
) -> tuple[Localization, Footprint | None]:
    """Stage 3: verify each patch against its best candidates' mosaics (first accepted wins), fit
    the query's footprint from the accepted patches, and write matches, JSON and GeoJSON.

    Without a footprint the query is "not verified" and keeps the stage-2 estimate, recorded.
    """
    start = time.perf_counter()
    params = params or VerifyParams()
    work = layout.query(name)
    patches, meta = work.patches()
    stage2 = work.localization()
    order = verification_order(work.nodes(), per_patch)
    rows: list[dict] = []
    points: list[PatchGeoPoints] = []
    fp = None
    if order:
        query = read_query(layout.query_file(name), meta.gallery.ref_lat)
        keys = {c["key"] for cands in order.values() for c in cands}
        manifest, _ = layout.read_manifest(["key", "time"])
        with Gallery.open(layout.gallery) as gallery:
            mosaics = FeatureCache(layout.features, params).mosaics(gallery, manifest, keys)
        windows = patches.select(["x0", "y0", "width", "height"]).to_pylist()

        def verify(patch: int) -> tuple[list[dict], PatchGeoPoints | None]:
            w = windows[patch]
            crop = query.rgb[w["y0"] : w["y0"] + w["height"], w["x0"] : w["x0"] + w["width"]]
            tried = []
            for cand in order[patch]:
                if cand["key"] not in mosaics:
                    continue
                mosaic, feats = mosaics[cand["key"]]
                t0 = time.perf_counter()
                m = match_patch(crop, mosaic, params, feats, encoder)
                tried.append(_match_row(patch, cand, m, time.perf_counter() - t0))
                if m.accepted:
                    grid = meta.gallery.grid
                    lonlat = mosaic_to_lonlat(grid, TileKey.parse(cand["key"]), m.dst_xy)
                    offset = np.array([w["x0"], w["y0"]], dtype=np.float64)
                    return tried, PatchGeoPoints(patch, m.src_xy + offset, lonlat)
            return tried, None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for tried, found in pool.map(verify, sorted(order)):
                rows += tried
                if found is not None:
                    points.append(found)
        fp = fit_footprint(points, query.width, query.height)
    if fp is not None:
        final = Localization(
            query=name,
            method=Method.VERIFIED,
            centre_lon=fp.centre_lon,
            centre_lat=fp.centre_lat,
            corners_lonlat=fp.corners_lonlat,
            confidence=fp.patches_agreeing / max(patches.num_rows, 1),
            support=fp.patches_agreeing,
            patches=patches.num_rows,
            error_m=fp.error_m,
        )
    else:
        why = f"not verified: {len(points)} patch(es) accepted, fewer than a footprint needs"
        final = replace(stage2, reason="; ".join(filter(None, [stage2.reason, why])))
    seconds = time.perf_counter() - start
    record = Verification(
        final, None if fp is None else fp.summary(), len(order), len(points), seconds
    )
    geojson = None if fp is None else footprint_geojson(name, fp, {"seconds": round(seconds, 2)})
    work.write_verification(record, pa.Table.from_pylist(rows, schema=MATCH_SCHEMA), geojson)
    return final, fp
