"""Incremental embedding of the gallery's mosaics: new or re-dated tiles and their neighbours."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from rsloc_assets.gallery.reader import Gallery, MosaicStats, TileRef
from rsloc_assets.grids import TileKey
from rsloc_assets.progress import Progress
from rsloc_assets.records import key_times, tile_schema
from rsloc_assets.retrieval.encoders import Encoder, embed_stream
from rsloc_assets.retrieval.store import TileStore, vector_array

log = logging.getLogger(__name__)


@dataclass
class RefreshPlan:
    """Tiles to (re-)embed and stale keys to delete so the store matches the manifest."""

    embed: list[TileRef]
    delete: list[str]
    changed: int


def plan_refresh(manifest: pa.Table, stored: dict[str, str]) -> RefreshPlan:
    """New or re-dated tiles, plus their 8 neighbours (whose mosaics include them), get embedded;
    so do the neighbours of deleted tiles."""
    refs = {
        key: TileRef(z, col, row, t)
        for key, z, col, row, t in zip(
            *(manifest[c].to_pylist() for c in ("key", "level", "col", "row", "time")), strict=True
        )
    }
    changed = [ref for key, ref in refs.items() if stored.get(key) != ref.time]
    delete = sorted(set(stored) - set(refs))
    dirty = {ref.key for ref in changed}
    # A deleted tile leaves its neighbours' mosaics with a hole where it was: they change too.
    for tile in [*(ref.tile for ref in changed), *(TileKey.parse(key) for key in delete)]:
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                neighbour = f"{tile.z}/{tile.col + dc}/{tile.row + dr}"
                if neighbour in refs:
                    dirty.add(neighbour)
    return RefreshPlan([refs[k] for k in sorted(dirty)], delete, len(changed))


@dataclass
class EmbedReport:
    """What one embedding pass did."""

    embedded: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing_neighbours: int = 0
    missing_tiles: list[str] = field(default_factory=list)  # in the manifest, gone from the gallery
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
    progress = Progress(f"embedding {store.table}", len(refs), "mosaics")
    stream = embed_stream(
        encoder,
        gallery.mosaics(refs, stats=stats),
        load=lambda item: item[1],
        batch_size=batch_size,
    )
    for items, vectors in stream:
        rows = manifest.take([index[ref.key] for ref, _ in items])
        batch = rows.append_column("vector", vector_array(vectors)).select(
            tile_schema(encoder.dim).names
        )
        store.upsert(batch.cast(tile_schema(encoder.dim)))
        report.embedded += len(items)
        progress.advance(len(items))
    report.corrupt = list(stats.corrupt)
    report.missing_neighbours = stats.missing_neighbours
    report.missing_tiles = list(stats.missing_centres)
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
    duplicates: list[str]  # keys stored more than once before the refresh, removed and re-embedded


def refresh_embeddings(
    gallery: Gallery,
    manifest: pa.Table,
    encoder: Encoder,
    store: TileStore,
    known_corrupt: dict[str, str],
    batch_size: int = 32,
) -> Refresh:
    """Bring the store in line with the manifest: embed new or changed tiles and their neighbours,
    drop rows of tiles gone from the gallery or corrupt, and repair tiles stored more than once
    (by re-embedding them)."""
    duplicates = store.duplicate_keys()
    if duplicates:
        log.warning("%d tiles stored more than once: re-embedding them", len(duplicates))
        store.delete(duplicates)
    times = key_times(manifest)
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
    return Refresh(plan, report, corrupt, duplicates)
