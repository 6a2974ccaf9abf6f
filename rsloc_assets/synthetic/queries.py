"""Query images of the synthetic world: rotated, rescaled, clouded crops of another date, each a
georeferenced GeoTIFF, with their true poses in `truth.json`."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from pyproj import Transformer

from rsloc_assets.layout import write_json
from rsloc_assets.raster import crop_geotransform, rotated_crop, shift, write_geotiff
from rsloc_assets.synthetic.landscape import WorldSpec, seeded_rng, value_noise
from rsloc_assets.synthetic.seasons import render

log = logging.getLogger(__name__)


@dataclass
class QueryTruth:
    """Where a synthetic query really lies: its pose against the world and its lon/lat footprint.

    `rotation_deg` is the counter-clockwise angle on the ground from east to the image's x axis;
    `scale` is the query's ground resolution over the world's. Corners: TL, TR, BR, BL.
    """

    name: str
    path: Path
    centre_lon: float
    centre_lat: float
    rotation_deg: float
    scale: float
    gsd_m: float
    width_px: int
    height_px: int
    corners_lonlat: list[tuple[float, float]]


def write_world(spec: WorldSpec, path: Path, season: str = "summer") -> Path:
    """Write the world on `season` as a tiled, DEFLATE-compressed RGB GeoTIFF in its UTM CRS."""
    return write_geotiff(Path(path), render(spec, season), spec.geotransform, spec.epsg)


def write_queries(
    spec: WorldSpec,
    out_dir: Path,
    n: int,
    seed: int,
    size_m: tuple[float, float] = (6000.0, 7000.0),
    season: str = "autumn",
    max_rotation_deg: float = 5.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    noise_sigma: float = 4.0,
    cloud_cover: tuple[float, float] = (0.0, 0.15),
    size_range_m: tuple[float, float] | None = None,
    prefix: str = "q",
) -> list[QueryTruth]:
    """Cut `n` georeferenced query GeoTIFFs `<prefix>000.tif`… from the world on `season`, plus
    their `truth.json`.

    Each query is rotated, rescaled, partly clouded, blurred and noised; its file carries its true
    (rotated) geotransform. Every query is `size_m` on the ground, or, with `size_range_m`, has
    its width and height drawn from that range. Poses depend only on `seed`, the spec, the sizes
    and the two ranges.
    """
    sizes = size_range_m or size_m
    if n < 0 or min(sizes) <= 0 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError("need n >= 0, a positive size_m and 0 < scale_range[0] <= scale_range[1]")
    if not 0.0 <= cloud_cover[0] <= cloud_cover[1] <= 1.0:
        raise ValueError(f"cloud_cover must be an ordered pair in [0, 1], got {cloud_cover}")
    out_dir = Path(out_dir)
    img = render(spec, season)
    h, w = img.shape[:2]
    g, gt_w = spec.gsd_m, spec.geotransform
    to_lonlat = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    pose_rng, look_rng = seeded_rng(seed, "query-poses"), seeded_rng(seed, "query-looks")
    size_rng = seeded_rng(seed, "query-sizes")
    truths = []
    for i in range(n):
        scale = float(pose_rng.uniform(*scale_range))
        rot = float(pose_rng.uniform(-max_rotation_deg, max_rotation_deg))
        ground = size_m if size_range_m is None else size_rng.uniform(*size_range_m, size=2)
        qw, qh = round(ground[0] / (g * scale)), round(ground[1] / (g * scale))
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        half_w, half_h = qw * scale / 2, qh * scale / 2
        ex, ey = half_w * abs(c) + half_h * abs(s), half_w * abs(s) + half_h * abs(c)
        if 2 * ex + 4 > w or 2 * ey + 4 > h:
            what = size_m if size_range_m is None else [round(float(v)) for v in ground]
            raise ValueError(
                f"queries of {what} m do not fit in a {spec.width_m}×{spec.height_m} m world"
            )
        cx, cy = pose_rng.uniform(ex + 2, w - ex - 2), pose_rng.uniform(ey + 2, h - ey - 2)
        q, pose = rotated_crop(img, (cx, cy), (qw, qh), rot, scale, cv2.BORDER_REFLECT)
        cloud = float(look_rng.uniform(*cloud_cover))
        q = _degrade(q, look_rng, g * scale, noise_sigma, cloud)
        gt = crop_geotransform(gt_w, pose)
        name = f"{prefix}{i:03d}"
        path = write_geotiff(out_dir / f"{name}.tif", q, gt, spec.epsg)
        u = np.array([0.0, qw, qw, 0.0, qw / 2])
        v = np.array([0.0, 0.0, qh, qh, qh / 2])
        lon, lat = to_lonlat.transform(gt[0] + u * gt[1] + v * gt[2], gt[3] + u * gt[4] + v * gt[5])
        truths.append(
            QueryTruth(
                name=name,
                path=path,
                centre_lon=float(lon[4]),
                centre_lat=float(lat[4]),
                rotation_deg=rot,
                scale=scale,
                gsd_m=g * scale,
                width_px=qw,
                height_px=qh,
                corners_lonlat=[
                    (float(x), float(y)) for x, y in zip(lon[:4], lat[:4], strict=True)
                ],
            )
        )
    records = [{**asdict(t), "path": t.path.name} for t in truths]
    doc = {"epsg": spec.epsg, "season": season, "world": asdict(spec), "queries": records}
    write_json(out_dir / "truth.json", doc)
    log.info("wrote %d %s queries of %s m to %s", n, season, sizes, out_dir)
    return truths


def _degrade(
    img: np.ndarray, rng: np.random.Generator, gsd: float, noise_sigma: float, cloud: float
) -> np.ndarray:
    """Another sensor on another day: soft clouds with shadows, optical blur, Gaussian noise."""
    out = img.astype(np.float32)
    h, w = out.shape[:2]
    if cloud > 0:
        puff = value_noise(rng, (h, w), rng.uniform(500.0, 1200.0) / gsd, octaves=4)
        cut = float(np.quantile(puff, 1.0 - cloud))
        alpha = np.clip((puff - cut) / 0.6 + 0.5, 0.0, 1.0) * 0.95
        shade = shift(alpha, round(-60.0 / gsd), round(-110.0 / gsd))
        out *= (1.0 - 0.4 * shade * (1.0 - alpha))[..., None]
        white = 238.0 + 8.0 * np.clip(puff - cut, -1.0, 1.0)
        out = out * (1.0 - alpha[..., None]) + (alpha * white)[..., None]
    out = cv2.GaussianBlur(out, (0, 0), 0.7)
    out += rng.standard_normal(out.shape, dtype=np.float32) * noise_sigma
    np.clip(out, 0.0, 254.5, out=out)
    out += 0.5
    return out.astype(np.uint8)
