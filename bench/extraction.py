"""Gallery extraction: 3×3 mosaics per second from SQLite, decoding each tile once (rsloc) against
decoding every tile nine times (the RSLoc reference code's way), in the same run.

The gallery is built with the project's own builder from the demo world, so its tiles are real
256-px JPEGs of structured imagery.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.common import timed_rounds, write_result
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.gallery.reader import Gallery, MosaicStats, TileRef, decode_tile
from rsloc_assets.synthetic.landscape import WorldSpec
from rsloc_assets.synthetic.queries import write_world

TILE = 256


def naive_mosaic(gallery: Gallery, ref: TileRef) -> tuple[np.ndarray, int]:
    """The reference's way: fetch and decode each of the 9 tiles for every mosaic."""
    mosaic = np.zeros((3 * TILE, 3 * TILE, 3), np.uint8)
    decodes = 0
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            blob = gallery.blob(TileRef(ref.z, ref.col + dc, ref.row + dr, ref.time))
            if blob is None:
                continue
            tile = decode_tile(blob)
            decodes += 1
            if tile is not None:
                y, x = (dr + 1) * TILE, (dc + 1) * TILE
                mosaic[y : y + TILE, x : x + TILE] = tile
    return mosaic, decodes


def run(gallery_path: Path, repeats: int) -> dict:
    """Time both ways over every tile of the gallery's finest level, alternating, best of N."""
    with Gallery.open(gallery_path) as gallery:
        refs = gallery.tiles(max(gallery.levels()))

        def decode_once() -> tuple[int, MosaicStats]:
            stats = MosaicStats()
            return sum(1 for _ in gallery.mosaics(refs, stats=stats)), stats

        def decode_nine_times() -> int:
            return sum(naive_mosaic(gallery, ref)[1] for ref in refs)

        ((count, stats), ours_ms), (naive_decodes, naive_ms) = timed_rounds(
            [decode_once, decode_nine_times], repeats
        )
    ours, naive = [ms / 1e3 for ms in ours_ms], [ms / 1e3 for ms in naive_ms]
    return {
        "tiles": len(refs),
        "mosaics": count,
        "decodes": stats.decoded,
        "naive_decodes": naive_decodes,
        "tiles_per_s": len(refs) / min(ours),
        "naive_tiles_per_s": len(refs) / min(naive),
        "median_s": statistics.median(ours),
        "naive_median_s": statistics.median(naive),
        "speedup": min(naive) / min(ours),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> str:
    """Build the demo gallery in a temporary folder, run both ways, write JSON, print one line."""
    parser = argparse.ArgumentParser(prog="python -m bench.extraction", description=__doc__)
    parser.add_argument("--preset", choices=["small", "demo"], default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    spec = WorldSpec.small() if args.preset == "small" else WorldSpec.demo()
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(spec, Path(tmp) / "world.tif")
        gallery = Path(tmp) / "gallery.sqlite"
        build_gallery([world], gallery, grid="ge", zoom=15)
        figures = run(gallery, args.repeats)
    figures["preset"] = args.preset
    write_result("extraction", figures, args.results_dir)
    line = (
        f"extraction: tiles={figures['tiles']} decodes={figures['decodes']}"
        f" naive_decodes={figures['naive_decodes']} tiles_per_s={figures['tiles_per_s']:.0f}"
        f" naive_tiles_per_s={figures['naive_tiles_per_s']:.0f} speedup={figures['speedup']:.1f}x"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
