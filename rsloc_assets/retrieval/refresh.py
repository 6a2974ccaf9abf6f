"""Incremental embedding of the gallery's mosaics, block by block: each tile whose 3×3 mosaic
changed since it was embedded (new or re-dated tiles and their neighbours)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from rsloc_assets.gallery.blocks import Block
from rsloc_assets.gallery.reader import Gallery, MosaicStats, TileRef
from rsloc_assets.grids import TileKey
from rsloc_assets.progress import Progress
from rsloc_assets.records import MOSAIC, key_times, tile_schema
from rsloc_assets.retrieval.encoders import Encoder, embed_stream
from rsloc_assets.retrieval.store import TileStore, vector_array

log = logging.getLogger(__name__)


@dataclass
class RefreshPlan:
    """Tiles to (re-)embed and stale keys to delete so the store matches the manifest."""

    embed: list[TileRef]
    delete: list[str]
    changed: int


def mosaic_keys(manifest: pa.Table, keys: Iterable[str]) -> dict[str, str]:
    """Each tile's mosaic key: a digest of the times of the 3×3 tiles its mosaic shows (a gap
    where the manifest has none), so a tile is re-embedded exactly when its mosaic changed."""
    times = key_times(manifest)
    out = {}
    for key in keys:
        tile = TileKey.parse(key)
        around = [
            times.get(f"{tile.z}/{tile.col + dc}/{tile.row + dr}", "")
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
        ]
        out[key] = hashlib.blake2b("\0".join(around).encode(), digest_size=8).hexdigest()
    return out


def plan_refresh(
    manifest: pa.Table,
    stored: pa.Table,
    block: Block | None = None,
    skip: Collection[str] = (),
) -> RefreshPlan:
    """The tiles whose mosaic changed since it was embedded (new or re-dated tiles and their 8
    neighbours; neighbours of deleted tiles) get embedded, stale keys deleted; `skip` (tiles
    known corrupt) is left alone.

    `stored` holds the store's key, time and mosaic columns. With `block`, only its own tiles are
    planned: `manifest` must hold the tiles around it too, whose times its mosaics show."""
    refs = {
        key: TileRef(z, col, row, t)
        for key, z, col, row, t in zip(
            *(manifest[c].to_pylist() for c in ("key", "level", "col", "row", "time")), strict=True
        )
        if block is None or block.holds(key)
    }
    times = key_times(stored)
    mosaics = dict(zip(stored["key"].to_pylist(), stored[MOSAIC].to_pylist(), strict=True))
    current = mosaic_keys(manifest, refs)
    embed = [
        refs[key] for key in sorted(refs) if key not in skip and mosaics.get(key) != current[key]
    ]
    gone = sorted(key for key in times if key not in refs and (block is None or block.holds(key)))
    changed = sum(times.get(key) != ref.time for key, ref in refs.items() if key not in skip)
    return RefreshPlan(embed, gone, changed)


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
    mosaics = mosaic_keys(manifest, (ref.key for ref in refs))
    schema = tile_schema(encoder.dim)
    for items, vectors in stream:
        rows = manifest.take([index[ref.key] for ref, _ in items])
        rows = rows.append_column(MOSAIC, pa.array([mosaics[ref.key] for ref, _ in items]))
        batch = rows.append_column("vector", vector_array(vectors)).select(schema.names)
        store.upsert(batch.cast(schema))
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
    """One block's refresh: what was planned, what embedding did, and every tile of the block
    known corrupt at its current time (so it is not retried until it changes)."""

    plan: RefreshPlan
    report: EmbedReport
    corrupt: dict[str, str]
    duplicates: list[str]  # keys stored more than once before the refresh, removed and re-embedded


def refresh_block(
    gallery: Gallery,
    block: Block,
    manifest: pa.Table,
    encoder: Encoder,
    store: TileStore,
    known_corrupt: dict[str, str],
    batch_size: int = 32,
) -> Refresh:
    """Bring one block's rows of the store in line with its level's manifest: embed its tiles
    whose mosaic changed (new or re-dated tiles, and tiles next to a change in this block or the
    next), drop rows of its tiles gone from the gallery or corrupt, and repair its tiles stored
    more than once (by re-embedding them). It writes its own rows only."""
    duplicates = store.duplicate_keys(block.where())
    if duplicates:
        log.warning(
            "%d tiles of %s stored more than once: re-embedding them", len(duplicates), block.key
        )
        store.delete(duplicates)
    ring = manifest.filter(pa.array(block.mask(manifest, margin=1)))
    times = key_times(ring)
    still_corrupt = {k: t for k, t in known_corrupt.items() if times.get(k) == t}
    stored = store.to_arrow(["key", "time", MOSAIC], where=block.where())
    plan = plan_refresh(ring, stored, block, skip=still_corrupt)
    log.info(
        "%s: %d tiles changed, embedding %d mosaics, deleting %d stale rows",
        block.key,
        plan.changed,
        len(plan.embed),
        len(plan.delete),
    )
    report = embed_tiles(gallery, plan.embed, ring, encoder, store, batch_size)
    found = still_corrupt | {key: times[key] for key in report.corrupt}
    corrupt = {key: t for key, t in found.items() if block.holds(key)}
    store.delete([*plan.delete, *corrupt])
    return Refresh(plan, report, corrupt, duplicates)
