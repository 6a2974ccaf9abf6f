"""Stage 3's step on files under a `Layout`: verify stage 2's ranked hypotheses patch by patch,
fit the query's footprint, and record matches, JSON and GeoJSON."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.grids import TileKey
from rsloc_assets.layout import Layout
from rsloc_assets.records import (
    MATCH_SCHEMA,
    Hypothesis,
    Localization,
    Method,
    Verification,
    key_times,
)
from rsloc_assets.retrieval.encoders import Encoder
from rsloc_assets.retrieval.patches import read_query, window_of
from rsloc_assets.verification.features import FeatureCache
from rsloc_assets.verification.footprint import (
    Footprint,
    PatchGeoPoints,
    fit_footprint,
    footprint_geojson,
    mosaic_to_lonlat,
)
from rsloc_assets.verification.matching import (
    Features,
    PatchMatch,
    VerifyParams,
    match_patch,
    patch_features,
)

# Per hypothesis: this many accepted patches fit a footprint well (uncapped, on four queries of
# the 30,913-tile bench, a true place had 12–54 patches accept, wrong ones none), and this many
# tried without one accepted abandon it. Patches go in batches of 2 × workers, supported ones
# first, best hit first.
ENOUGH_ACCEPTED, GIVE_UP_AFTER = 16, 8
# A footprint that this share of the patches (at most ENOUGH_ACCEPTED) agree with ends the search.
STOP_SHARE = 0.25
# Accepted patches of one hypothesis that pass the embedding re-check before the rest are
# accepted on geometry alone: verification 5.52 → 4.80 s per demo query, 4.42 → 3.45 s per NAIP
# crop (with the patch-SIFT reuse), every estimate the same (README, Performance).
CONFIRMED_BY_EMBEDDING = 4


def verification_plan(table: pa.Table, hypothesis: int) -> dict[int, list[dict]]:
    """Each patch's tiles to verify under one hypothesis: the tile under its predicted centre,
    then its supporting candidate's tile where that is another one; supported patches first."""
    plan: dict[int, list[dict]] = {}
    rows = table.filter(pc.equal(table["hypothesis"], hypothesis)).to_pylist()
    rows.sort(key=lambda r: (r["hit_key"] is None, -(r["hit_score"] or 0.0), r["patch"]))
    for r in rows:
        tiles = [{"key": r["key"], "hit_rank": r["hit_rank"] if r["hit_key"] == r["key"] else -1}]
        if r["hit_key"] is not None and r["hit_key"] != r["key"]:
            tiles.append({"key": r["hit_key"], "hit_rank": r["hit_rank"]})
        plan[r["patch"]] = tiles
    return plan


def _match_row(hypothesis: int, patch: int, tile: dict, m: PatchMatch, seconds: float) -> dict:
    return {
        "hypothesis": hypothesis,
        "patch": patch,
        "key": tile["key"],
        "hit_rank": tile["hit_rank"],
        "accepted": m.accepted,
        "reason": m.reason,
        "keypoints": m.keypoints,
        "matches": m.matches,
        "mac_size": m.mac_size,
        "inliers": m.inliers,
        "similarity": m.similarity,
        "seconds": seconds,
    }


@dataclass
class _Tried:
    """One hypothesis through verification: the pairs tried, the patches accepted, the fit."""

    hypothesis: Hypothesis
    rows: list[dict]
    points: list[PatchGeoPoints]
    footprint: Footprint | None

    @property
    def agreeing(self) -> int:
        return 0 if self.footprint is None else self.footprint.patches_agreeing

    def record(self) -> dict:
        return {
            "hypothesis": self.hypothesis.rank,
            "source": str(self.hypothesis.source),
            "support": self.hypothesis.support,
            "evidence": round(self.hypothesis.evidence, 4),
            "patches_accepted": len(self.points),
            "patches_agreeing": self.agreeing,
        }


def verify_query(
    layout: Layout,
    name: str,
    encoder: Encoder | None,
    params: VerifyParams | None = None,
    hypotheses: int = 5,
    workers: int = 2,
) -> tuple[Verification, Footprint | None]:
    """Stage 3: verify stage 2's hypotheses best first, each patch against the mosaic of the tile
    the hypothesis puts it on (then its supporting candidate's), and fit a footprint from the
    accepted patches. The search stops at a footprint agreeing with `STOP_SHARE` of the patches
    (at most `ENOUGH_ACCEPTED`) or after `hypotheses`; the footprint with the most agreeing
    patches wins, and every hypothesis tried is recorded. Without a footprint the query is "not
    verified" and keeps the stage-2 estimate, recorded. Each patch's SIFT is found once; the
    embedding re-check runs until `CONFIRMED_BY_EMBEDDING` patches of a hypothesis pass it.
    """
    start = time.perf_counter()
    params = params or VerifyParams()
    work = layout.query(name)
    patches, meta = work.patches()
    stage2 = work.localization()
    table, ranked = work.hypotheses()
    tried: list[_Tried] = []
    if ranked and not meta.reason:
        query = read_query(layout.query_file(name), meta.gallery.ref_lat)
        times = key_times(layout.read_manifest(["key", "time"]))
        windows = patches.select(["x0", "y0", "width", "height"]).to_pylist()
        # All patches of a query share one size (`plan_patches`), hence one working size.
        patch_size = (windows[0]["width"], windows[0]["height"]) if windows else None
        cache = FeatureCache(layout.features, params)
        stop_at = min(math.ceil(STOP_SHARE * patches.num_rows), ENOUGH_ACCEPTED)
        # A one-patch query's hypotheses are its best tiles, one match each: all are tried, and
        # its one accepted patch is its footprint.
        single = patches.num_rows == 1
        # A patch meets a mosaic per tile its hypotheses put it on: its SIFT is found once, at
        # the one working size all mosaics share (`working_size` of one patch size, 768² px).
        found_features: dict[int, Features] = {}
        for h in ranked if single else ranked[:hypotheses]:
            plan = verification_plan(table, h.rank)
            mosaics: dict[str, tuple[np.ndarray, Features]] = {}
            asked: set[str] = set()  # read once, readable or not

            def verify(
                patch: int,
                recheck: Encoder | None,
                h: Hypothesis = h,
                plan: dict = plan,
                mosaics: dict = mosaics,
            ):
                w = windows[patch]
                box = (w["x0"], w["y0"], w["width"], w["height"])
                crop, crop_valid = window_of(query.rgb, *box), window_of(query.valid, *box)
                rows = []
                for tile in plan[patch]:
                    if tile["key"] not in mosaics:
                        continue
                    mosaic, feats = mosaics[tile["key"]]
                    t0 = time.perf_counter()
                    if patch not in found_features:
                        found_features[patch] = patch_features(crop, mosaic.shape[1::-1], params)
                    m = match_patch(
                        crop, mosaic, params, feats, recheck, crop_valid, found_features[patch]
                    )
                    rows.append(_match_row(h.rank, patch, tile, m, time.perf_counter() - t0))
                    if m.accepted:
                        grid = meta.gallery.grid
                        lonlat = mosaic_to_lonlat(grid, TileKey.parse(tile["key"]), m.dst_xy)
                        offset = np.array([w["x0"], w["y0"]], dtype=np.float64)
                        return rows, PatchGeoPoints(patch, m.src_xy + offset, lonlat)
                return rows, None

            rows, points = [], []
            order, batch = list(plan), 2 * workers
            with Gallery.open(layout.gallery) as gallery, ThreadPoolExecutor(workers) as pool:
                for i in range(0, len(order), batch):
                    part = order[i : i + batch]
                    # Mosaics are read, and their SIFT found, for the patches about to be tried
                    # only (in this thread: the gallery's connection is its own); a hypothesis
                    # often stops after ENOUGH_ACCEPTED of its patches.
                    wanted = {t["key"] for p in part for t in plan[p]} - asked
                    asked |= wanted
                    mosaics.update(cache.mosaics(gallery, times, wanted, patch_size))
                    # Once a hypothesis has patches confirmed by the re-check, geometry alone
                    # accepts the rest: the footprint fit keeps only patches that agree.
                    recheck = encoder if len(points) < CONFIRMED_BY_EMBEDDING else None
                    found_batch = pool.map(lambda p, e=recheck: verify(p, e), part)
                    for patch_rows, found in found_batch:
                        rows += patch_rows
                        if found is not None:
                            points.append(found)
                    tried_patches = min(i + batch, len(order))
                    if len(points) >= ENOUGH_ACCEPTED or (
                        not points and tried_patches >= GIVE_UP_AFTER
                    ):
                        break
            least = min(2, patches.num_rows)
            fp = fit_footprint(points, query.width, query.height, min_patches=least)
            tried.append(_Tried(h, rows, points, fp))
            if fp is not None and fp.patches_agreeing >= stop_at:
                break
    best = max(tried, key=lambda t: t.agreeing, default=None)
    fp = None if best is None else best.footprint
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
        accepted = max((len(t.points) for t in tried), default=0)
        why = f"not verified: {accepted} patch(es) accepted, fewer than a footprint needs"
        final = replace(stage2, reason="; ".join(filter(None, [stage2.reason, why])))
    seconds = time.perf_counter() - start
    rows = [r for t in tried for r in t.rows]
    record = Verification(
        final,
        None if fp is None else fp.summary(),
        len({r["patch"] for r in rows}),
        0 if best is None else len(best.points),
        seconds,
        hypothesis=None if fp is None else best.hypothesis.rank,
        hypotheses_tried=[t.record() for t in tried],
    )
    geojson = None
    if fp is not None:
        geojson = footprint_geojson(
            name, fp, {"seconds": round(seconds, 2), "hypothesis": best.hypothesis.rank}
        )
    work.write_verification(record, pa.Table.from_pylist(rows, schema=MATCH_SCHEMA), geojson)
    return record, fp
