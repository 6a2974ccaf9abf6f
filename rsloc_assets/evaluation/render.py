"""Pictures drawn over the gallery's own imagery: a low-resolution rendering of its tiles around
some places, footprints outlined on it."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rsloc_assets.gallery.reader import Gallery, TileRef, decode_tile
from rsloc_assets.grids import TILE_PX, TileGrid, TileKey
from rsloc_assets.layout import Layout
from rsloc_assets.records import GalleryInfo, key_times

ESTIMATE, TRUTH = (230, 40, 40), (40, 200, 60)  # RGB outline colours
MARGIN = 0.25  # of the places' extent, around them


@dataclass
class GalleryView:
    """An RGB rendering of gallery tiles from (`col0`, `row0`) on, `tiles_per_px` tiles to an
    image pixel, with what draws on it in lon/lat."""

    image: np.ndarray
    grid: TileGrid
    zoom: int
    col0: int
    row0: int
    tiles_per_px: float

    def pixel(self, lon: float, lat: float) -> tuple[int, int]:
        """The image pixel of a lon/lat (exact per tile on either grid, not linear in latitude)."""
        tile = self.grid.tile_at(lon, lat, self.zoom)
        b = self.grid.bounds(tile)
        col = tile.col + (lon - b.west) / (b.east - b.west)
        row = tile.row + (b.north - lat) / (b.north - b.south)
        return (
            round((col - self.col0) / self.tiles_per_px),
            round((row - self.row0) / self.tiles_per_px),
        )

    def outline(
        self, ring: Sequence[tuple[float, float]], colour: tuple[int, int, int], width: int
    ) -> None:
        """Draw a closed lon/lat ring (ignored below 3 corners)."""
        if len(ring) >= 3:
            pixels = np.array([self.pixel(lon, lat) for lon, lat in ring], np.int32)
            cv2.polylines(self.image, [pixels], True, colour, width, cv2.LINE_AA)

    def label(self, text: str, lon: float, lat: float, colour: tuple[int, int, int]) -> None:
        """Write `text` at a lon/lat, dark-edged so it reads over any imagery."""
        x, y = self.pixel(lon, lat)
        for c, w in (((0, 0, 0), 3), (colour, 1)):
            cv2.putText(self.image, text, (x + 4, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, w)


def render_gallery(
    layout: Layout,
    info: GalleryInfo,
    lonlat: Sequence[tuple[float, float]],
    height_px: int,
    max_tiles: int,
) -> GalleryView:
    """The gallery's tiles of level `info` around `lonlat` (plus `MARGIN`), `height_px` high.

    At most `max_tiles` tiles a side are decoded: a wider area is drawn one tile per block of
    tiles, so the cost is bounded whatever the gallery's size."""
    lon, lat = np.array(lonlat, float).T
    pad_lon, pad_lat = MARGIN * np.ptp(lon), MARGIN * np.ptp(lat)
    nw = info.grid.tile_at(float(lon.min() - pad_lon), float(lat.max() + pad_lat), info.zoom)
    se = info.grid.tile_at(float(lon.max() + pad_lon), float(lat.min() - pad_lat), info.zoom)
    n_cols, n_rows = se.col - nw.col + 1, se.row - nw.row + 1
    step = max(1, math.ceil(max(n_cols, n_rows) / max_tiles))
    blocks_c, blocks_r = math.ceil(n_cols / step), math.ceil(n_rows / step)
    # Blocks drawn at up to twice the output's resolution, then scaled down once.
    px = int(np.clip(math.ceil(2 * height_px / blocks_r), 8, TILE_PX))
    canvas = np.zeros((blocks_r * px, blocks_c * px, 3), np.uint8)
    time_of = key_times(layout.read_manifest(["key", "time"], zoom=info.zoom))
    with Gallery.open(layout.gallery) as gallery:
        for i in range(blocks_r):
            for j in range(blocks_c):
                # A block's middle tile stands for it.
                col, row = nw.col + j * step + step // 2, nw.row + i * step + step // 2
                key = TileKey(info.zoom, col, row)
                if key.key not in time_of:
                    continue
                tile = decode_tile(gallery.blob(TileRef(key.z, key.col, key.row, time_of[key.key])))
                if tile is not None:
                    small = cv2.resize(tile, (px, px), interpolation=cv2.INTER_AREA)
                    canvas[i * px : (i + 1) * px, j * px : (j + 1) * px] = small
    scale = height_px / canvas.shape[0]
    width = max(1, round(canvas.shape[1] * scale))
    image = cv2.resize(canvas, (width, height_px), interpolation=cv2.INTER_AREA)
    return GalleryView(image, info.grid, info.zoom, nw.col, nw.row, step / (px * scale))


def encode_png(rgb: np.ndarray, what: str) -> bytes:
    """An RGB image as PNG bytes; a one-line error naming `what` if OpenCV cannot."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{what}: could not encode the picture")
    return png.tobytes()


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG as Markdown the Dagster UI renders (an embedded data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
