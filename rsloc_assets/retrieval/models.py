"""Stage 1's gallery-fitted models: train the adapter, fit the descriptor, and say which of each
is current, under the data folder's `models/`.

Each fit writes a new versioned file and then points `models/<kind>.json` at it; the encoder the
pipeline uses is read back from those pointers, so a refit changes the encoder's name, its
LanceDB table and (through the asset lineage) every embedding downstream.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from rsloc_assets.gallery.reader import Gallery, TileRef
from rsloc_assets.layout import Layout, write_json
from rsloc_assets.retrieval.adapter import Adapter, AdapterParams, cache_views, train_adapter
from rsloc_assets.retrieval.descriptors import (
    Aggregation,
    DescribedEncoder,
    DescriptorModel,
    DescriptorSpec,
    LocalEncoder,
    fit_vocabulary,
    fit_whitening,
)
from rsloc_assets.retrieval.encoders import Encoder

log = logging.getLogger(__name__)


class ModelKind(StrEnum):
    """The two gallery-fitted artefacts, in lineage order."""

    ADAPTER = "adapter"
    DESCRIPTOR = "descriptor"


def _pointer(layout: Layout, kind: ModelKind) -> Path:
    return layout.models / f"{kind}.json"


def _point(layout: Layout, kind: ModelKind, base: str, version: str | None, file: str) -> None:
    write_json(_pointer(layout, kind), {"base": base, "version": version, "file": file})


def _current(layout: Layout, kind: ModelKind) -> dict | None:
    path = _pointer(layout, kind)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): rematerialize {kind}") from None


def _model_file(layout: Layout, kind: ModelKind, pointer: dict) -> Path:
    """The file a pointer names, which must be a plain name inside `models/`."""
    file = str(pointer.get("file", ""))
    if not file or Path(file).name != file or file in (".", ".."):
        raise ValueError(f"{_pointer(layout, kind)} names {file!r}, not a file in {layout.models}")
    return layout.models / file


def current_adapter(layout: Layout, base: str, device: str = "cpu") -> Adapter | None:
    """The adapter `gallery_adapter` last trained for encoder `base`; None when it trained none
    (adaptation off); a one-line error when it has not run for this encoder."""
    pointer = _current(layout, ModelKind.ADAPTER)
    if pointer is None or pointer["base"] != base:
        raise LookupError(
            f"no gallery adapter for encoder {base!r} under {layout.models}: "
            "materialize gallery_adapter"
        )
    if pointer["version"] is None:
        return None
    return Adapter.load(_model_file(layout, ModelKind.ADAPTER, pointer), device)


@dataclass(frozen=True)
class AdapterResult:
    """What `adapt_gallery` did: the adapter (None when adaptation is off) and its file."""

    adapter: Adapter | None
    path: Path | None


def adapt_gallery(
    layout: Layout,
    encoder: LocalEncoder,
    params: AdapterParams | None,
    batch_size: int = 32,
) -> AdapterResult:
    """Train an adapter for `encoder` on the gallery's own tiles (its manifest's tiles, at the
    gallery's own times only), or with `params` None record that none is used."""
    if params is None:
        _point(layout, ModelKind.ADAPTER, encoder.name, None, "")
        return AdapterResult(None, None)
    manifest = layout.read_manifest()
    with Gallery.open(layout.gallery) as gallery:
        views = cache_views(gallery, manifest, encoder, params, batch_size)
    adapter = train_adapter(views, encoder.name, params, encoder.device)
    file = f"adapter-{encoder.name}-{adapter.version}.pt"
    adapter.save(layout.models / file)
    _point(layout, ModelKind.ADAPTER, encoder.name, adapter.version, file)
    log.info("adapter %s: %s", adapter.version, adapter.record)
    return AdapterResult(adapter, layout.models / file)


@dataclass(frozen=True)
class DescriptorFit:
    """What `fit_descriptor` did: the model, its file, the tiles sampled, seconds."""

    model: DescriptorModel
    path: Path
    tiles: int
    seconds: float
    note: str


def _sample_tokens(
    layout: Layout,
    encoder: LocalEncoder,
    adapter: Adapter | None,
    spec: DescriptorSpec,
    batch_size: int,
) -> np.ndarray:
    """Local features (through the adapter) of up to `spec.sample_tiles` random gallery mosaics."""
    manifest = layout.read_manifest(["level", "col", "row", "time"])
    rng = np.random.default_rng(spec.seed)
    picked = rng.choice(manifest.num_rows, min(spec.sample_tiles, manifest.num_rows), replace=False)
    rows = manifest.take(np.sort(picked)).to_pylist()
    refs = [TileRef(r["level"], r["col"], r["row"], r["time"]) for r in rows]
    parts: list[np.ndarray] = []
    images: list[np.ndarray] = []

    def flush() -> None:
        tokens = encoder.tokens(np.stack(images))
        parts.append((adapter(tokens) if adapter is not None else tokens).astype(np.float16))
        images.clear()

    with Gallery.open(layout.gallery) as gallery:
        for _, mosaic in gallery.mosaics(refs):
            if mosaic is not None:
                images.append(mosaic)
            if len(images) == batch_size:
                flush()
    if images:
        flush()
    if not parts:
        raise ValueError(f"no readable mosaic in {layout.gallery} to fit a descriptor on")
    return np.concatenate(parts)


def fit_descriptor(
    layout: Layout,
    encoder: LocalEncoder,
    spec: DescriptorSpec,
    adapter: Adapter | None,
    batch_size: int = 32,
) -> DescriptorFit:
    """Fit the VLAD vocabulary and the PCA-whitening `spec` asks for on a random sample of the
    gallery's mosaics, save the model and make it current (nothing to fit: an identity model)."""
    start = time.perf_counter()
    model = DescriptorModel(encoder.name, spec, adapter and adapter.version)
    note, tiles = "", 0
    if spec.needs_fit:
        tokens = _sample_tokens(layout, encoder, adapter, spec, batch_size)
        tiles = len(tokens)
        if spec.aggregation == Aggregation.VLAD:
            model.centroids = fit_vocabulary(tokens, spec.vlad_clusters, spec.seed)
        if spec.whitening_dim:
            dim = min(spec.whitening_dim, tiles - 1)
            if dim < spec.whitening_dim:
                note = f"whitening_dim {spec.whitening_dim} capped at {dim}: {tiles} tiles sampled"
                log.warning(note)
            vectors = np.concatenate(
                [
                    model.aggregate(tokens[i : i + 256].astype(np.float32))
                    for i in range(0, tiles, 256)
                ]
            )
            model.mean, model.projection = fit_whitening(vectors, dim)
        model.samples = tiles
    file = f"descriptor-{encoder.name}-{model.version}.npz"
    model.save(layout.models / file)
    _point(layout, ModelKind.DESCRIPTOR, encoder.name, model.version, file)
    return DescriptorFit(model, layout.models / file, tiles, time.perf_counter() - start, note)


def current_descriptor(layout: Layout, base: str) -> DescriptorModel:
    """The descriptor `descriptor_model` last fitted for encoder `base` (a one-line error when
    it has not run for this encoder)."""
    pointer = _current(layout, ModelKind.DESCRIPTOR)
    if pointer is None or pointer["base"] != base:
        raise LookupError(
            f"no descriptor model for encoder {base!r} under {layout.models}: "
            "materialize descriptor_model"
        )
    return DescriptorModel.load(_model_file(layout, ModelKind.DESCRIPTOR, pointer))


def described_encoder(layout: Layout, base: Encoder, spec: DescriptorSpec, adapt: bool) -> Encoder:
    """The encoder the pipeline embeds with: `base` itself for plain GeM, `base` + an unfitted
    descriptor (grid) when nothing is learned, else `base` + the current adapter and fitted
    descriptor, checked against `spec`."""
    if not spec.needs_fit and not adapt:
        model = DescriptorModel(base.name, spec)
        return base if model.identity else DescribedEncoder(base, model)  # type: ignore[arg-type]
    adapter = current_adapter(layout, base.name, base.device) if adapt else None
    if adapt and adapter is None:
        raise LookupError("adapt is on but gallery_adapter trained none: rematerialize it")
    model = current_descriptor(layout, base.name)
    if asdict(model.spec) != asdict(spec) or model.adapter != (adapter and adapter.version):
        raise LookupError(
            f"the descriptor model under {layout.models} was fitted with {model.spec} and adapter "
            f"{model.adapter}, not the settings asked for: materialize descriptor_model"
        )
    return DescribedEncoder(base, model, adapter)  # type: ignore[arg-type]
