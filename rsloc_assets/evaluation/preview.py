"""A picture of where a query was found: its thumbnail beside the gallery under the estimated
footprint (outlined), with the true footprint when the query's georeference gives one."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from rsloc_assets.evaluation.render import ESTIMATE, TRUTH, encode_png, render_gallery
from rsloc_assets.layout import Layout
from rsloc_assets.retrieval.patches import thumbnail

PREVIEW_PX = 320  # height of each half of the picture
# Tiles a side drawn at full tile resolution; a wider view is drawn from fewer tiles.
FULL_TILES = 12


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
    view = render_gallery(layout, info, [*corners_lonlat, *truth_lonlat], PREVIEW_PX, FULL_TILES)
    # The truth wide and under the estimate, so that both show where they coincide.
    view.outline(truth_lonlat, TRUTH, 5)
    view.outline(corners_lonlat, ESTIMATE, 2)
    gap = np.full((PREVIEW_PX, 8, 3), 255, np.uint8)
    return encode_png(np.hstack([query, gap, view.image]), f"{name}'s preview")
