"""Blocks of the gallery: squares of `side` × `side` tiles at one level, the unit the gallery is
embedded in, so several workers embed at once and a refresh re-embeds only the blocks that
changed."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rsloc_assets.grids import TileKey
from rsloc_assets.records import key_times

# Block side in tiles: 1,024 tiles a block, ≈ 800 blocks for RSLoc-820K's 824,796 z15 tiles; at
# the default encoder's ≈ 30 mosaics/s on this 2-core machine a block embeds in ≈ 35 s.
BLOCK_TILES = 32

_KEY = re.compile(r"z(\d+)-s(\d+)-(-?\d+)-(-?\d+)")


@dataclass(frozen=True, order=True)
class Block:
    """One block: its level, side in tiles, and position in blocks (column, row)."""

    zoom: int
    side: int
    bcol: int
    brow: int

    @property
    def key(self) -> str:
        """The block's partition key, e.g. "z15-s32-31-22"."""
        return f"z{self.zoom}-s{self.side}-{self.bcol}-{self.brow}"

    @classmethod
    def parse(cls, key: str) -> Block:
        """The block a partition key names; a one-line error for anything else."""
        found = _KEY.fullmatch(key)
        if found is None or int(found[2]) < 1:
            raise ValueError(f"{key!r} is not a gallery block key (z<zoom>-s<side>-<col>-<row>)")
        return cls(*(int(v) for v in found.groups()))

    @classmethod
    def of(cls, tile: TileKey, side: int) -> Block:
        return cls(tile.z, side, tile.col // side, tile.row // side)

    def holds(self, key: str) -> bool:
        """Whether the tile `key` ("z/col/row") lies in this block."""
        return Block.of(TileKey.parse(key), self.side) == self

    def bounds(self, margin: int = 0) -> tuple[int, int, int, int]:
        """First and past-the-end tile column and row of the block widened by `margin` tiles."""
        c0, r0 = self.bcol * self.side, self.brow * self.side
        return c0 - margin, c0 + self.side + margin, r0 - margin, r0 + self.side + margin

    def mask(self, table: pa.Table, margin: int = 0) -> np.ndarray:
        """Which rows of a tile table (level, col, row) lie in the block widened by `margin`
        tiles (the ring whose mosaics overlap the block's)."""
        c0, c1, r0, r1 = self.bounds(margin)
        col, row = table["col"].to_numpy(), table["row"].to_numpy()
        level = table["level"].to_numpy()
        return (level == self.zoom) & (col >= c0) & (col < c1) & (row >= r0) & (row < r1)

    def where(self, margin: int = 0) -> str:
        """The same rows as a SQL filter, for LanceDB."""
        c0, c1, r0, r1 = self.bounds(margin)
        return f"level = {self.zoom} AND col >= {c0} AND col < {c1} AND row >= {r0} AND row < {r1}"


def block_keys(table: pa.Table, side: int) -> list[str]:
    """The blocks holding at least one row of a tile table (level, col, row), in order (floor
    division, so negative columns of projected grids fall in blocks of their own)."""
    if side < 1:
        raise ValueError(f"a gallery block's side must be at least 1 tile, not {side}")
    if table.num_rows == 0:
        return []
    level, col, row = (table[name].to_numpy() for name in ("level", "col", "row"))
    ids = np.stack([level, col // side, row // side], axis=1)
    return [Block(int(z), side, int(c), int(r)).key for z, c, r in np.unique(ids, axis=0)]


def changed_blocks(before: pa.Table | None, after: pa.Table, side: int) -> list[str]:
    """The blocks of `after` whose embeddings a change from manifest `before` to `after` touches:
    those holding a new, re-dated or removed tile, or a neighbour of one (whose 3×3 mosaic shows
    it). Without `before`, every block of `after`."""
    if before is None:
        return block_keys(after, side)
    old, new = key_times(before), key_times(after)
    touched = [key for key in old.keys() | new.keys() if old.get(key) != new.get(key)]
    near: set[Block] = set()
    for key in touched:
        tile = TileKey.parse(key)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                near.add(Block.of(TileKey(tile.z, tile.col + dc, tile.row + dr), side))
    wanted = {block.key for block in near}
    return [key for key in block_keys(after, side) if key in wanted]
