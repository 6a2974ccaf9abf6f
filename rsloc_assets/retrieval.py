"""Semantic retrieval, stage 1: the gallery manifest and incremental embedding of its mosaics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rsloc_assets.encoders import Encoder, embed_stream
from rsloc_assets.gallery import Gallery, MosaicStats, TileRef
from rsloc_assets.store import TileStore, tile_schema

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("level", pa.int32()),
        ("col", pa.int64()),
        ("row", pa.int64()),
        ("time", pa.string()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("west", pa.float64()),
        ("south", pa.float64()),
        ("east", pa.float64()),
        ("north", pa.float64()),
    ]
)


def resolve_zoom(gallery: Gallery, zoom: int | None) -> int:
    """The requested level, or the gallery's finest when none is given."""
    levels = gallery.levels()
    if not levels:
        raise ValueError(f"{gallery.path}: the gallery holds no tiles")
    if zoom is None:
        return max(levels)
    if zoom not in levels:
        raise ValueError(f"{gallery.path}: no tiles at zoom {zoom} (levels: {levels})")
    return zoom


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


@dataclass
class RefreshPlan:
    """Tiles to (re-)embed and stale keys to delete so the store matches the manifest."""

    embed: list[TileRef]
    delete: list[str]
    changed: int


def plan_refresh(manifest: pa.Table, stored: dict[str, str]) -> RefreshPlan:
    """New or re-dated tiles, plus their 8 neighbours (whose mosaics include them), get embedded."""
    refs = {
        key: TileRef(z, col, row, t)
        for key, z, col, row, t in zip(
            *(manifest[c].to_pylist() for c in ("key", "level", "col", "row", "time")), strict=True
        )
    }
    changed = [ref for key, ref in refs.items() if stored.get(key) != ref.time]
    dirty = {ref.key for ref in changed}
    for ref in changed:
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                neighbour = f"{ref.z}/{ref.col + dc}/{ref.row + dr}"
                if neighbour in refs:
                    dirty.add(neighbour)
    delete = sorted(set(stored) - set(refs))
    return RefreshPlan([refs[k] for k in sorted(dirty)], delete, len(changed))


@dataclass
class EmbedReport:
    """What one embedding pass did."""

    embedded: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing_neighbours: int = 0
    decoded: int = 0
    seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def embed_tiles(
    gallery: Gallery,
    refs: Sequence[TileRef],
    manifest: pa.Table,
    encoder: Encoder,
    store: TileStore,
    batch_size: int = 32,
) -> EmbedReport:
    """Embed the 3×3 mosaics of `refs` and upsert them; corrupt tiles are skipped and reported."""
    start = time.perf_counter()
    stats = MosaicStats()
    index = {key: i for i, key in enumerate(manifest["key"].to_pylist())}
    report = EmbedReport()
    stream = embed_stream(
        encoder,
        gallery.mosaics(refs, stats=stats),
        load=lambda item: item[1],
        batch_size=batch_size,
    )
    for items, vectors in stream:
        rows = manifest.take([index[ref.key] for ref, _ in items])
        batch = rows.append_column(
            "vector", pa.FixedSizeListArray.from_arrays(vectors.ravel(), encoder.dim)
        ).select(tile_schema(encoder.dim).names)
        store.upsert(batch.cast(tile_schema(encoder.dim)))
        report.embedded += len(items)
        log.info("embedded %d/%d mosaics", report.embedded, len(refs))
    report.corrupt = list(stats.corrupt)
    report.missing_neighbours = stats.missing_neighbours
    report.decoded = stats.decoded
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class Refresh:
    """One refresh of the store: what was planned, what embedding did, and every tile known
    corrupt at its current time (so it is not retried until it changes)."""

    plan: RefreshPlan
    report: EmbedReport
    corrupt: dict[str, str]


def refresh_embeddings(
    gallery: Gallery,
    manifest: pa.Table,
    encoder: Encoder,
    store: TileStore,
    known_corrupt: dict[str, str],
    batch_size: int = 32,
) -> Refresh:
    """Bring the store in line with the manifest: embed new or changed tiles and their neighbours,
    drop rows of tiles gone from the gallery or corrupt."""
    times = dict(zip(manifest["key"].to_pylist(), manifest["time"].to_pylist(), strict=True))
    still_corrupt = {k: t for k, t in known_corrupt.items() if times.get(k) == t}
    plan = plan_refresh(manifest, store.versions() | still_corrupt)
    log.info(
        "%d tiles changed: embedding %d mosaics, deleting %d stale rows",
        plan.changed,
        len(plan.embed),
        len(plan.delete),
    )
    report = embed_tiles(gallery, plan.embed, manifest, encoder, store, batch_size)
    corrupt = still_corrupt | {key: times[key] for key in report.corrupt}
    store.delete([*plan.delete, *corrupt])
    return Refresh(plan, report, corrupt)
