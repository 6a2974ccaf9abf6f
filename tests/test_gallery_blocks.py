"""Gallery blocks: their keys, the blocks a manifest change touches, and plans per block that add
up to the plan for the whole gallery."""

import pytest

from rsloc_assets.gallery.blocks import Block, block_keys, changed_blocks
from rsloc_assets.retrieval.refresh import plan_refresh
from tests.test_retrieval_refresh import manifest_of, stored_from

GRID = [(c, r, "2023") for c in range(10) for r in range(10)]


def test_a_block_key_names_its_block_and_nothing_else_parses():
    block = Block(15, 4, 2, -1)
    assert Block.parse(block.key) == block and block.key == "z15-s4-2--1"
    assert block.holds("15/8/-4") and not block.holds("15/12/-4") and not block.holds("14/8/-4")
    for bad in ("z15-s0-1-1", "15/1/1", "z15-s4-1", "z15-s4-1-1; DROP"):
        with pytest.raises(ValueError, match="not a gallery block key"):
            Block.parse(bad)


def test_blocks_cover_the_manifest_once_in_order():
    manifest = manifest_of(GRID)
    keys = block_keys(manifest, 4)
    assert keys == [Block(15, 4, c, r).key for c in range(3) for r in range(3)]
    assert sum(Block.parse(k).mask(manifest).sum() for k in keys) == manifest.num_rows
    with pytest.raises(ValueError, match="at least 1 tile"):
        block_keys(manifest, 0)


def test_a_change_touches_the_blocks_whose_mosaics_show_it():
    before = manifest_of(GRID)
    assert changed_blocks(before, before, 4) == []
    assert changed_blocks(None, before, 4) == block_keys(before, 4)
    # Tile (4, 4) is a block corner: its 3×3 neighbourhood spans four blocks.
    redated = manifest_of([(c, r, "2024" if (c, r) == (4, 4) else t) for c, r, t in GRID])
    assert changed_blocks(before, redated, 4) == [
        Block(15, 4, c, r).key for c in (0, 1) for r in (0, 1)
    ]
    # An interior tile of block (1, 1) removed: only that block.
    removed = manifest_of([row for row in GRID if row[:2] != (5, 5)])
    assert changed_blocks(before, removed, 4) == [Block(15, 4, 1, 1).key]


def test_plans_per_block_add_up_to_the_whole_gallerys_plan():
    manifest = manifest_of(GRID)
    # Embedded when the block corner 4/4 was of 2021 and 11/3 (beside block (2, 0)) was there.
    before = [(c, r, "2021" if (c, r) == (4, 4) else t) for c, r, t in GRID] + [(11, 3, "2023")]
    stored = stored_from(manifest_of(before))
    whole = plan_refresh(manifest, stored)
    blocks = [Block.parse(key) for key in block_keys(manifest, 4)]
    parts = [plan_refresh(manifest, stored, block) for block in blocks]
    embedded = [ref.key for part in parts for ref in part.embed]
    assert sorted(embedded) == sorted(ref.key for ref in whole.embed)
    assert len(embedded) == len(set(embedded))  # each tile planned by its own block alone
    assert {f"15/{c}/{r}" for c in (3, 4, 5) for r in (3, 4, 5)} <= set(embedded)
    assert sorted(k for part in parts for k in part.delete) == whole.delete == ["15/11/3"]
    assert sum(part.changed for part in parts) == whole.changed == 1
