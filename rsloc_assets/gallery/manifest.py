"""The gallery manifest: one row per tile at the working level, and the gallery facts (grid,
level, latitude, tile size) that every query step needs, computed once when it is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.grids import Bounds, ground_size_m
from rsloc_assets.layout import Layout
from rsloc_assets.records import MANIFEST_SCHEMA, GalleryInfo


def resolve_levels(gallery: Gallery, zoom: int | None) -> list[int]:
    """The requested level, or every level the gallery holds when none is given."""
    levels = gallery.levels()
    if not levels:
        raise ValueError(f"{gallery.path}: the gallery holds no tiles")
    if zoom is None:
        return sorted(levels)
    if zoom not in levels:
        raise ValueError(f"{gallery.path}: no tiles at zoom {zoom} (levels: {levels})")
    return [zoom]


def gallery_manifest(gallery: Gallery, zoom: int, time_: str | None = None) -> pa.Table:
    """One row per tile position at `zoom`: its chosen time, centre and lon/lat bounds."""
    refs = gallery.tiles(zoom, time_)
    cols = np.array([r.col for r in refs], dtype=np.int64)
    rows = np.array([r.row for r in refs], dtype=np.int64)
    lon, lat = gallery.grid.centres(zoom, cols, rows)
    bounds = [gallery.grid.bounds(r.tile) for r in refs]
    return pa.table(
        {
            "key": [r.key for r in refs],
            "level": np.full(len(refs), zoom, dtype=np.int32),
            "col": cols,
            "row": rows,
            "time": [r.time for r in refs],
            "lon": lon,
            "lat": lat,
            "west": [b.west for b in bounds],
            "south": [b.south for b in bounds],
            "east": [b.east for b in bounds],
            "north": [b.north for b in bounds],
        },
        schema=MANIFEST_SCHEMA,
    )


def gallery_info(gallery: Gallery, manifest: pa.Table) -> GalleryInfo:
    """Grid, level, median latitude and the ground size of the tile there, from the manifest."""
    if manifest.num_rows == 0:
        raise ValueError(f"{gallery.path}: the gallery manifest is empty")
    zoom = int(manifest["level"][0].as_py())
    lat = manifest["lat"].to_numpy()
    mid = int(np.argsort(lat)[len(lat) // 2])
    tile = gallery.grid.tile_at(float(manifest["lon"][mid].as_py()), float(lat[mid]), zoom)
    return GalleryInfo(
        gallery.grid,
        zoom,
        float(np.median(lat)),
        ground_size_m(gallery.grid, tile),
        manifest.num_rows,
    )


@dataclass(frozen=True)
class ManifestResult:
    """A written manifest, each working level's gallery facts, and what the gallery file holds."""

    manifest: pa.Table
    levels: list[GalleryInfo]
    stored_levels: list[int]
    times: list[str]
    extent: Bounds
    duplicates: int  # rows repeating a tile and time at the working levels (the last is used)


def write_manifest(layout: Layout, zoom: int | None, time_: str | None) -> ManifestResult:
    """Read the gallery's tiles at `zoom` (default: every level it holds, each query then working
    at the level nearest its ground resolution), at `time_` (default: each tile's latest), and
    write the manifest with each level's gallery facts."""
    with Gallery.open(layout.gallery) as gallery:
        parts = [gallery_manifest(gallery, z, time_) for z in resolve_levels(gallery, zoom)]
        # A level without tiles at `time_` is not a working level; with none left, an error.
        parts = [part for part in parts if part.num_rows] or parts[:1]
        manifest = pa.concat_tables(parts)
        infos = [gallery_info(gallery, part) for part in parts]
        finest = max(info.zoom for info in infos)
        duplicates = sum(gallery.duplicates(info.zoom) for info in infos)
        result = ManifestResult(
            manifest,
            infos,
            gallery.levels(),
            gallery.times(finest),
            gallery.extent(finest),
            duplicates,
        )
    layout.write_manifest(manifest, infos)
    return result
