"""Accuracy and seconds per stage on real imagery from ../shared/data, through the asset graph.

- `rsloc`: the 12 RSLoc-820K GeoTIFFs (France, Web-Mercator z15) become a ge z15 gallery with the
  project's builder; queries are crops of the same TIFFs at random positions, rotations and sizes,
  with photometric changes. Same-source imagery: an upper bound for the paper's cross-source case.
- `naip`: NAIP 2020 (North Dakota) becomes an XYZ z16 MBTiles gallery; queries are crops of the
  2009–2016 dates, untouched: the honest cross-date case.

Each query GeoTIFF keeps its true georeference, which only evaluation reads. The random-tile
baseline is the share of gallery tiles within one tile of a query's true centre.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from osgeo import gdal

from bench.common import SHARED_DATA, show_progress, timed, write_result
from bench.graph import run_graph
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.evaluation.metrics import QueryScore
from rsloc_assets.evaluation.truth import read_truth
from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.geodesy import distance_m
from rsloc_assets.layout import Layout
from rsloc_assets.raster import crop_geotransform, rotated_crop, write_geotiff

gdal.UseExceptions()

NAIP_GALLERY_DATE = "20200831"
DATASETS = ("rsloc", "naip")


@dataclass(frozen=True)
class Dataset:
    """A real-data gallery and how its queries are made."""

    name: str
    label: str
    inputs: list[Path]
    grid: str
    zoom: int
    time: str
    gallery_file: str
    make_queries: Callable[[Path, np.random.Generator], list[Path]]


def rsloc_crops(
    tiffs: list[Path],
    out_dir: Path,
    rng: np.random.Generator,
    per_image: int,
    side_px: tuple[int, int] = (1200, 1700),
    max_rotation_deg: float = 15.0,
) -> list[Path]:
    """Rotated crops of each TIFF with photometric changes, written with their true geotransform."""
    paths = []
    for tiff in tiffs:
        ds = gdal.Open(str(tiff))
        image = np.moveaxis(ds.ReadAsArray(band_list=[1, 2, 3]), 0, -1)
        gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
        h, w = image.shape[:2]
        stem = tiff.stem.split("_")[0]
        for i in range(per_image):
            qw, qh = (int(v) for v in rng.integers(side_px[0], side_px[1] + 1, size=2))
            rot = rng.uniform(-max_rotation_deg, max_rotation_deg)
            c, s = abs(math.cos(math.radians(rot))), abs(math.sin(math.radians(rot)))
            ex, ey = (qw * c + qh * s) / 2, (qw * s + qh * c) / 2
            if 2 * ex + 4 > w or 2 * ey + 4 > h:
                raise ValueError(f"{tiff}: {w}×{h} px cannot hold a {qw}×{qh} px rotated crop")
            centre = (rng.uniform(ex + 2, w - ex - 2), rng.uniform(ey + 2, h - ey - 2))
            crop, pose = rotated_crop(image, centre, (qw, qh), rot)
            path = out_dir / f"{stem}_c{i}.tif"
            write_geotiff(path, photometric(crop, rng), crop_geotransform(gt, pose), wkt)
            paths.append(path)
    return paths


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another rendering of the same pixels: gamma, contrast, colour cast, blur, noise and JPEG."""
    out = image.astype(np.float32) / 255.0
    out = out ** rng.uniform(0.7, 1.4)
    out = (out - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.08, 0.08)
    out *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.2))
    out += rng.normal(0.0, 0.012, out.shape).astype(np.float32)
    out = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(55, 86))
    ok, data = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding of a query crop failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def naip_crops(
    tiffs: list[Path],
    out_dir: Path,
    rng: np.random.Generator,
    per_date: int,
    side_px: tuple[int, int] = (500, 700),
) -> list[Path]:
    """North-up crops of other NAIP dates at random positions and sizes, pixels untouched."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for tiff in tiffs:
        ds = gdal.Open(str(tiff))
        date = tiff.stem.rsplit("_", 1)[-1]
        for i in range(per_date):
            qw, qh = (int(v) for v in rng.integers(side_px[0], side_px[1] + 1, size=2))
            x = int(rng.integers(0, ds.RasterXSize - qw + 1))
            y = int(rng.integers(0, ds.RasterYSize - qh + 1))
            path = out_dir / f"naip{date}_c{i}.tif"
            options = ["COMPRESS=DEFLATE"]
            gdal.Translate(str(path), ds, srcWin=[x, y, qw, qh], creationOptions=options)
            paths.append(path)
    return paths


def turn_queries(paths: list[Path], rng: np.random.Generator) -> list[float]:
    """Turn each query GeoTIFF in place by a heading drawn uniformly from 0–360°: the whole image
    on a canvas that holds it, nodata (alpha) outside, its geotransform turned with it, so the
    truth stays exact. Returns the headings."""
    headings = []
    for path in paths:
        ds = gdal.Open(str(path))
        rgb = np.moveaxis(ds.ReadAsArray(band_list=[1, 2, 3]), 0, -1)
        nodata = ds.GetRasterBand(1).GetNoDataValue()
        valid = np.ones(rgb.shape[:2], np.uint8) if nodata is None else (rgb != nodata).any(-1)
        gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
        ds = None
        heading = float(rng.uniform(0.0, 360.0))
        h, w = rgb.shape[:2]
        c, s = abs(math.cos(math.radians(heading))), abs(math.sin(math.radians(heading)))
        size = (math.ceil(w * c + h * s), math.ceil(w * s + h * c))
        turned, pose = rotated_crop(rgb, (w / 2, h / 2), size, heading)
        mask, _ = rotated_crop(valid.astype(np.uint8), (w / 2, h / 2), size, heading)
        path.unlink()
        write_geotiff(path, turned, crop_geotransform(gt, pose), wkt, valid=mask > 0)
        headings.append(heading)
    return headings


def datasets(shared: Path, per_image: int, per_date: int) -> dict[str, Dataset]:
    """The two real-data setups, from the files under `shared`."""
    rsloc = sorted((shared / "rsloc").glob("test*/*.tiff"))
    naip = sorted((shared / "naip").glob("m_*.tif"))
    naip_gallery = [p for p in naip if p.stem.endswith(NAIP_GALLERY_DATE)]
    naip_queries = [p for p in naip if p not in naip_gallery]
    return {
        "rsloc": Dataset(
            "rsloc",
            "same-source crops (random position, ±15° rotation, 1200–1700 px sides, photometric)",
            rsloc,
            "ge",
            15,
            "rsloc",
            "gallery.sqlite",
            lambda out, rng: rsloc_crops(rsloc, out, rng, per_image),
        ),
        "naip": Dataset(
            "naip",
            f"cross-date crops of NAIP 2009–2016 against a {NAIP_GALLERY_DATE[:4]} gallery"
            " (north-up, 500–700 px sides at 5 m)",
            naip_gallery,
            "xyz",
            16,
            NAIP_GALLERY_DATE[:4],
            "gallery.mbtiles",
            lambda out, rng: naip_crops(naip_queries, out, rng, per_date),
        ),
    }


def chance_within_one_tile(layout: Layout, scores: list[QueryScore]) -> float:
    """Mean share of gallery tiles whose centre lies within one tile of a query's true centre."""
    manifest = pq.read_table(layout.manifest, columns=["lon", "lat"])
    lon, lat = manifest["lon"].to_numpy(), manifest["lat"].to_numpy()
    shares = []
    for s in scores:
        truth = _truth_centre(layout, s.query)
        shares.append(float(np.mean(distance_m(lon, lat, *truth) <= s.tile_m)))
    return statistics.fmean(shares) if shares else 0.0


def _truth_centre(layout: Layout, name: str) -> tuple[float, float]:
    truth = read_truth(layout.query_file(name))
    if truth is None:
        raise ValueError(f"{name}: query has no georeference to score against")
    return truth.centre_lonlat


def run_dataset(
    ds: Dataset, root: Path, seed: int, rotated: bool = False, settings: dict | None = None
) -> dict:
    """Build the gallery, write the queries (each turned to a random heading when `rotated`),
    materialize every asset with the `rsloc` resource `settings`, and gather the figures."""
    if not ds.inputs:
        raise FileNotFoundError(f"{ds.name}: no input rasters found")
    layout = Layout(root, gallery_path=root / ds.gallery_file)
    report, build_ms = timed(
        lambda: build_gallery(ds.inputs, layout.gallery, grid=ds.grid, zoom=ds.zoom, time=ds.time)
    )
    queries = ds.make_queries(layout.queries, np.random.default_rng(seed))
    headings = turn_queries(queries, np.random.default_rng(seed + 1000)) if rotated else []
    rsloc = RslocResource(data_dir=str(root), gallery=str(layout.gallery), **(settings or {}))
    run = run_graph(layout, rsloc)
    scores, summary = run.scores, run.summary
    stage_s = summary.mean_seconds
    return {
        "dataset": ds.name,
        "queries_made": ds.label + (", each turned to a uniform 0–360° heading" if rotated else ""),
        "headings_deg": [round(h, 1) for h in headings],
        "settings": settings or {},
        "encoder": rsloc.encoder,
        "descriptor": {
            "aggregation": rsloc.aggregation,
            "grid": rsloc.descriptor_grid,
            "whitening_dim": rsloc.whitening_dim,
            "adapt": rsloc.adapt,
            "query_headings": rsloc.query_headings,
        },
        "gallery": {
            "inputs": [p.name for p in ds.inputs],
            "grid": ds.grid,
            "zoom": ds.zoom,
            "tiles": report.written,
            "build_s": build_ms / 1e3,
            "embed_s": run.embed_s,
        },
        "queries": len(queries),
        "evaluated": summary.evaluated,
        "stages": summary.stages,
        "funnel": summary.funnel,
        "mean_recall_at_k": summary.mean_recall_at_k,
        "median_corner_error_m": summary.median_corner_error_m,
        "chance_within_1_tile": chance_within_one_tile(layout, scores),
        "seconds_per_query": {**stage_s, "stages_total": sum(stage_s.values())},
        "wall_s_per_query": run.wall_s_per_query,
        "per_query": [asdict(s) for s in scores],
    }


def summary_line(figures: dict) -> str:
    """One line: queries, per-stage success within 1 tile and median error, seconds per query."""
    stages = {row["stage"]: row for row in figures["stages"]}

    def med(stage: str) -> str:
        value = stages[stage]["median_error_m"]
        return "–" if value is None else f"{value:.0f}"

    within = "/".join(f"{stages[s]['within_1_tile']:.2f}" for s in stages)
    return (
        f"real-{figures['dataset']}: queries={figures['queries']}"
        f" tiles={figures['gallery']['tiles']}"
        f" within_1_tile(retrieval/cliques/verified)={within}"
        f" median_m={'/'.join(med(s) for s in stages)}"
        f" chance={figures['chance_within_1_tile']:.2f}"
        f" s_per_query={figures['seconds_per_query']['stages_total']:.1f}"
    )


def main(argv: list[str] | None = None) -> list[str]:
    """Run the chosen datasets (each skips with one line when its data is absent)."""
    parser = argparse.ArgumentParser(prog="python -m bench.real", description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["rsloc", "naip"], choices=DATASETS)
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--per-image", type=int, default=2, help="crops per RSLoc TIFF")
    parser.add_argument("--per-date", type=int, default=3, help="crops per NAIP query date")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument(
        "--rotated", action="store_true", help="turn every query to a random heading"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="rsloc resource settings (e.g. aggregation=gem query_headings=1)",
    )
    parser.add_argument("--name", default="", help="result name suffix (default: none)")
    args = parser.parse_args(argv)
    settings = dict(_setting(item) for item in args.set)
    setups = datasets(args.shared, args.per_image, args.per_date)
    lines = []
    for name in args.datasets:
        if not setups[name].inputs:
            lines.append(f"real-{name}: skipped, no imagery under {args.shared / name}")
            print(lines[-1])
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = (args.workdir or Path(tmp)) / name
            figures = run_dataset(setups[name], root, args.seed, args.rotated, settings)
        suffix = ("_rotated" if args.rotated else "") + (f"_{args.name}" if args.name else "")
        write_result(f"real_{name}{suffix}", figures, args.results_dir)
        lines.append(summary_line(figures))
        print(lines[-1])
    return lines


def _setting(item: str) -> tuple[str, object]:
    """FIELD=VALUE with VALUE read as JSON when it parses (numbers, true/false), else a string."""
    field, sep, value = item.partition("=")
    if not sep or field not in RslocResource.model_fields:
        raise SystemExit(f"--set takes FIELD=VALUE with an rsloc resource field, got {item!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


if __name__ == "__main__":
    show_progress()
    main()
