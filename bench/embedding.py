"""Embedding throughput of an encoder fed by the real decoding pipeline (SQLite → mosaics →
background threads → model), against the model alone on images already in memory, same run.

The ratio shows whether decoding keeps the model busy. On a CUDA device the same measurement runs
CLIP ViT-L/14 at 224 px (the paper's encoder; random weights, so speed only) in fp16 and bf16
across batch sizes, sampling GPU utilisation; without one that part skips with one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from bench.common import GALLERY_TILES, timed, write_result
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.retrieval.encoders import Encoder, embed_stream, load_encoder
from rsloc_assets.synthetic.landscape import WorldSpec
from rsloc_assets.synthetic.queries import write_world

DECODE_WORKERS = max(2, min(8, os.cpu_count() or 2))
VIT_L14 = {  # CLIP ViT-L/14 image tower at 224 px, 768-d projection
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
}
TINY_TEXT = {  # the text tower is never run; keep it small
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
}


def measure(gallery_path: Path, encoder: Encoder, batch: int, limit: int) -> dict:
    """Images/s through the pipeline and through the model alone, for one batch size."""
    with Gallery.open(gallery_path) as gallery:
        tiles = gallery.tiles(max(gallery.levels()))
        refs = list(islice((ref for _ in range(limit) for ref in tiles), limit))
        encoder.embed(np.zeros((batch, 64, 64, 3), np.uint8))  # warm-up
        _synchronize(encoder)

        def pipeline() -> int:
            done = sum(
                len(items)
                for items, _ in embed_stream(
                    encoder,
                    gallery.mosaics(refs),
                    load=lambda item: item[1],
                    batch_size=batch,
                    workers=DECODE_WORKERS,
                )
            )
            _synchronize(encoder)
            return done

        done, pipeline_ms = timed(pipeline)
        images = np.stack([m for _, m in gallery.mosaics(refs[: 2 * batch]) if m is not None])

    def model() -> int:
        model_images = 0
        while model_images < len(refs):
            encoder.embed(images[:batch])
            model_images += batch
        _synchronize(encoder)
        return model_images

    model_images, model_ms = timed(model)
    pipeline_s, model_s = pipeline_ms / 1e3, model_ms / 1e3
    return {
        "batch": batch,
        "images": done,
        "pipeline_images_per_s": done / pipeline_s,
        "model_images_per_s": model_images / model_s,
        "pipeline_over_model": (done / pipeline_s) / (model_images / model_s),
        "hours_for_824796_tiles": GALLERY_TILES / (done / pipeline_s) / 3600,
        "device": encoder.device,
        "encoder": encoder.name,
        "precision": getattr(encoder, "precision", "fp32"),
    }


def _synchronize(encoder: Encoder) -> None:
    if torch.device(encoder.device).type == "cuda":
        torch.cuda.synchronize()


class GpuSampler:
    """Samples `nvidia-smi` GPU utilisation (%) in a thread while a measurement runs."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi = shutil.which("nvidia-smi")

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            out = subprocess.run(
                [self._smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out and out[0].isdigit():
                self.samples.append(float(out[0]))

    def __enter__(self) -> GpuSampler:
        if self._smi:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def vit_l14_dir(out: Path) -> Path:
    """Write a CLIP ViT-L/14 model with random weights (no download) for speed measurements."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config=TINY_TEXT, vision_config=VIT_L14, projection_dim=768)
    CLIPModel(config).save_pretrained(out)
    return out


def gpu_runs(gallery: Path, batches: list[int], limit: int) -> list[dict]:
    """CLIP ViT-L/14 (random weights) in fp16 and bf16 on CUDA, with mean GPU utilisation."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = vit_l14_dir(Path(tmp) / "clip-vit-l-14-random")
        for precision in ("fp16", "bf16"):
            encoder = load_encoder("clip", model_dir=model_dir, device="cuda", precision=precision)
            for batch in batches:
                with GpuSampler() as gpu:
                    row = measure(gallery, encoder, batch, limit)
                rows.append({**row, "gpu_util_mean_pct": gpu.mean})
            del encoder
            torch.cuda.empty_cache()
    return rows


def _line(best: dict, label: str) -> str:
    return (
        f"{label}: encoder={best['encoder']} device={best['device']} batch={best['batch']}"
        f" precision={best['precision']}"
        f" pipeline_ips={best['pipeline_images_per_s']:.1f}"
        f" model_ips={best['model_images_per_s']:.1f}"
        f" ratio={best['pipeline_over_model']:.2f}"
        f" gallery_hours={best['hours_for_824796_tiles']:.1f}"
    )


def main(argv: list[str] | None = None) -> str:
    """CPU runs of the default encoder, then GPU runs when CUDA is present; JSON and a line each."""
    parser = argparse.ArgumentParser(prog="python -m bench.embedding", description=__doc__)
    parser.add_argument("--encoder", default="effnetl2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--limit", type=int, default=96, help="mosaics per measurement")
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--gpu-limit", type=int, default=2048, help="mosaics per GPU measurement")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(WorldSpec.small(), Path(tmp) / "world.tif")
        gallery = Path(tmp) / "gallery.sqlite"
        build_gallery([world], gallery, grid="ge", zoom=16)
        encoder = load_encoder(args.encoder, device=args.device)
        rows = [measure(gallery, encoder, b, args.limit) for b in args.batches]
        best = max(rows, key=lambda r: r["pipeline_images_per_s"])
        write_result("embedding", {"runs": rows, "best": best}, args.results_dir)
        line = _line(best, "embedding")
        print(line)
        if not torch.cuda.is_available():
            print("embedding-gpu: skipped, no CUDA device on this machine")
            return line
        gpu = gpu_runs(gallery, args.gpu_batches, args.gpu_limit)
    gpu_best = max(gpu, key=lambda r: r["pipeline_images_per_s"])
    figures = {"device_name": torch.cuda.get_device_name(0), "runs": gpu, "best": gpu_best}
    write_result("embedding_gpu", figures, args.results_dir)
    print(_line(gpu_best, "embedding-gpu") + f" gpu={figures['device_name']}")
    return line


if __name__ == "__main__":
    main()
