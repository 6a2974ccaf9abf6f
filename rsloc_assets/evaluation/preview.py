"""A picture of where a query was found: its thumbnail beside the gallery under the estimated
footprint (outlined), with the true footprint when the query's georeference gives one."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import cv2
import numpy as np

from rsloc_assets.gallery.reader import Gallery, TileRef, decode_tile
from rsloc_assets.grids import TILE_PX, TileKey
from rsloc_assets.layout import Layout
from rsloc_assets.records import GalleryInfo
from rsloc_assets.retrieval.patches import thumbnail

PREVIEW_PX = 320  # height of each half of the picture
# Tiles a side drawn at full tile resolution; a wider view is drawn from smaller tiles.
FULL_TILES = 12
MARGIN = 0.25  # of the footprint's extent, around it
ESTIMATE, TRUTH = (230, 40, 40), (40, 200, 60)  # RGB outline colours


def preview_png(
    layout: Layout,
    name: str,
    corners_lonlat: Sequence[tuple[float, float]],
    truth_lonlat: Sequence[tuple[float, float]] = (),
) -> bytes:
    """PNG: the query's thumbnail, and the gallery (at the query's level) around the estimated
    footprint with it outlined in red, the truth in green."""
    info = layout.query(name).patch_meta().gallery
    query = thumbnail(layout.query_file(name), PREVIEW_PX)
    scale = PREVIEW_PX / query.shape[0]
    query = cv2.resize(query, (max(1, round(query.shape[1] * scale)), PREVIEW_PX))
    ground, box = _gallery_view(layout, info, [*corners_lonlat, *truth_lonlat])
    # The truth wide and under the estimate, so that both show where they coincide.
    for ring, colour, width in ((truth_lonlat, TRUTH, 5), (corners_lonlat, ESTIMATE, 2)):
        if len(ring) >= 3:
            pixels = np.array([box(lon, lat) for lon, lat in ring], np.int32)
            cv2.polylines(ground, [pixels], True, colour, width, cv2.LINE_AA)
    gap = np.full((PREVIEW_PX, 8, 3), 255, np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.hstack([query, gap, ground]), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{name}: could not encode the preview")
    return png.tobytes()


def preview_markdown(png: bytes, name: str) -> str:
    """The PNG as Markdown the Dagster UI renders (an embedded data URI)."""
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _gallery_view(layout: Layout, info: GalleryInfo, lonlat: Sequence[tuple[float, float]]):
    """The gallery tiles around `lonlat`, stitched and scaled to `PREVIEW_PX` high, and a function
    from lon/lat to its pixels."""
    lon, lat = np.array(lonlat, float).T
    pad_lon, pad_lat = MARGIN * np.ptp(lon), MARGIN * np.ptp(lat)
    nw = info.grid.tile_at(float(lon.min() - pad_lon), float(lat.max() + pad_lat), info.zoom)
    se = info.grid.tile_at(float(lon.max() + pad_lon), float(lat.min() - pad_lat), info.zoom)
    cols, rows = range(nw.col, se.col + 1), range(nw.row, se.row + 1)
    step = max(1, math.ceil(max(len(cols), len(rows)) / FULL_TILES))
    px = max(1, TILE_PX // step)
    canvas = np.zeros((len(rows) * px, len(cols) * px, 3), np.uint8)
    times = layout.read_manifest(["key", "time"], zoom=info.zoom)
    time_of = dict(zip(times["key"].to_pylist(), times["time"].to_pylist(), strict=True))
    with Gallery.open(layout.gallery) as gallery:
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                key = TileKey(info.zoom, col, row)
                if key.key not in time_of:
                    continue
                tile = decode_tile(gallery.blob(TileRef(info.zoom, col, row, time_of[key.key])))
                if tile is not None:
                    small = cv2.resize(tile, (px, px), interpolation=cv2.INTER_AREA)
                    canvas[i * px : (i + 1) * px, j * px : (j + 1) * px] = small
    west, north = info.grid.bounds(nw).west, info.grid.bounds(nw).north
    east, south = info.grid.bounds(se).east, info.grid.bounds(se).south
    scale = PREVIEW_PX / canvas.shape[0]
    width = max(1, round(canvas.shape[1] * scale))
    view = cv2.resize(canvas, (width, PREVIEW_PX), interpolation=cv2.INTER_AREA)

    def box(x: float, y: float) -> tuple[int, int]:
        return (
            round((x - west) / (east - west) * width),
            round((north - y) / (north - south) * PREVIEW_PX),
        )

    return view, box
