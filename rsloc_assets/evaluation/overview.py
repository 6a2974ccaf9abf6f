"""The evaluation's map: every estimated footprint (red) and every known truth (green), named,
over a low-resolution rendering of the gallery itself."""

from __future__ import annotations

import pyarrow.compute as pc

from rsloc_assets.evaluation.render import ESTIMATE, TRUTH, encode_png, render_gallery
from rsloc_assets.evaluation.truth import Truth
from rsloc_assets.layout import Layout
from rsloc_assets.records import Localization

MAP_PX = 640  # the map's height
# Tiles decoded a side at most (48² ≈ 2,300 decodes, a few seconds), whatever the area covered.
MAP_TILES = 48
MAP_CAPTION = "Estimated footprints in red, named; true footprints in green (where known)."


def overview_png(
    layout: Layout, estimates: dict[str, Localization], truths: dict[str, Truth]
) -> bytes:
    """PNG over the gallery's coarsest level: the places of all queries, or the whole gallery
    when no query has a place yet."""
    info = layout.gallery_levels()[-1]
    places = [c for loc in estimates.values() for c in loc.corners_lonlat]
    places += [c for truth in truths.values() for c in truth.corners_lonlat]
    if not places:
        bounds = layout.read_manifest(["west", "south", "east", "north"], zoom=info.zoom)
        west, east = pc.min(bounds["west"]).as_py(), pc.max(bounds["east"]).as_py()
        south, north = pc.min(bounds["south"]).as_py(), pc.max(bounds["north"]).as_py()
        places = [(west, north), (east, south)]
    view = render_gallery(layout, info, places, MAP_PX, MAP_TILES)
    for truth in truths.values():
        view.outline(truth.corners_lonlat, TRUTH, 5)  # wide, under the estimate: both show
    for name, loc in sorted(estimates.items()):
        view.outline(loc.corners_lonlat, ESTIMATE, 2)
        if loc.centre_lon is not None:
            view.label(name, loc.centre_lon, loc.centre_lat, ESTIMATE)
    for name, truth in sorted(truths.items()):
        if name not in estimates:
            view.label(name, *truth.centre_lonlat, TRUTH)
    return encode_png(view.image, "the evaluation map")
