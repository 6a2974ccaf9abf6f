"""Embedding throughput of an encoder fed by the real decoding pipeline (SQLite → mosaics →
background threads → model), against the model alone on images already in memory, same run.

The ratio shows whether decoding keeps the model busy; the GPU figures of issue #5 come from the
same code on a lent device (`--device cuda`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import write_result
from rsloc_assets.builder import build_gallery
from rsloc_assets.encoders import embed_stream, load_encoder
from rsloc_assets.gallery import Gallery
from rsloc_assets.world import WorldSpec, write_world

GALLERY_TILES = 824_796


def measure(gallery_path: Path, encoder_name: str, device: str, batch: int, limit: int) -> dict:
    """Images/s through the pipeline and through the model alone, for one batch size."""
    encoder = load_encoder(encoder_name, device=device)
    with Gallery.open(gallery_path) as gallery:
        refs = gallery.tiles(max(gallery.levels()))[:limit]
        encoder.embed(np.zeros((batch, 64, 64, 3), np.uint8))  # warm-up
        start = time.perf_counter()
        done = sum(
            len(items)
            for items, _ in embed_stream(
                encoder, gallery.mosaics(refs), load=lambda item: item[1], batch_size=batch
            )
        )
        pipeline_s = time.perf_counter() - start
        images = np.stack([m for _, m in gallery.mosaics(refs) if m is not None])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        encoder.embed(images[i : i + batch])
    model_s = time.perf_counter() - start
    return {
        "batch": batch,
        "images": done,
        "pipeline_images_per_s": done / pipeline_s,
        "model_images_per_s": len(images) / model_s,
        "pipeline_over_model": (done / pipeline_s) / (len(images) / model_s),
        "hours_for_824796_tiles": GALLERY_TILES / (done / pipeline_s) / 3600,
        "device": encoder.device,
        "encoder": encoder.name,
    }


def main(argv: list[str] | None = None) -> str:
    """Run the batch sizes, write JSON, print one line (the best batch size)."""
    parser = argparse.ArgumentParser(prog="python -m bench.embedding", description=__doc__)
    parser.add_argument("--encoder", default="effnetl2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--limit", type=int, default=96, help="mosaics per measurement")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(WorldSpec.small(), Path(tmp) / "world.tif")
        gallery = Path(tmp) / "gallery.sqlite"
        build_gallery([world], gallery, grid="ge", zoom=16)
        rows = [measure(gallery, args.encoder, args.device, b, args.limit) for b in args.batches]
    best = max(rows, key=lambda r: r["pipeline_images_per_s"])
    write_result("embedding", {"runs": rows, "best": best}, args.results_dir)
    line = (
        f"embedding: encoder={best['encoder']} device={best['device']} batch={best['batch']}"
        f" pipeline_ips={best['pipeline_images_per_s']:.1f}"
        f" model_ips={best['model_images_per_s']:.1f}"
        f" ratio={best['pipeline_over_model']:.2f}"
        f" gallery_hours={best['hours_for_824796_tiles']:.1f}"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
