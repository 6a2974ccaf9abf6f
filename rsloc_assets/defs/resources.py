"""The one resource: where the data lives and how each stage is configured."""

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg

from rsloc_assets.layout import Layout
from rsloc_assets.records import GalleryInfo
from rsloc_assets.retrieval.adapter import AdapterParams
from rsloc_assets.retrieval.descriptors import Aggregation, DescriptorSpec
from rsloc_assets.retrieval.encoders import Encoder, load_encoder
from rsloc_assets.retrieval.models import described_encoder
from rsloc_assets.retrieval.store import TileStore, table_name

DATA_DIR_ENV = "RSLOC_DATA_DIR"


@lru_cache(maxsize=2)
def _cached_encoder(
    name: str, model_dir: str | None, device: str, precision: str, layer: int | None
) -> Encoder:
    return load_encoder(name, model_dir, device, precision, layer)


class RslocResource(dg.ConfigurableResource):
    """Data folder, gallery, vector store and stage parameters (defaults follow the RSLoc paper)."""

    # Empty: `RSLOC_DATA_DIR`, else ./data; read when a run starts, so run config that leaves it
    # out (it rebuilds the resource from config alone) still finds the deployment's folder.
    data_dir: str = ""
    gallery: str = ""
    lancedb_uri: str = ""
    zoom: int | None = None  # one working level; None: every level the gallery holds
    gallery_time: str | None = None
    encoder: str = "effnetl2"
    model_dir: str | None = None
    encoder_layer: int | None = None
    device: str = "auto"
    precision: str = "fp16"
    batch_size: int = 32
    aggregation: str = "grid"  # NAIP seed-1 patch recall@1 0.17 → 0.55, synthetic 0.37 → 0.68
    vlad_clusters: int = 32
    descriptor_grid: int = 3
    whitening_dim: int = 0
    fit_sample_tiles: int = 2000
    adapt: bool = False
    adapter_epochs: int = 20
    adapter_view_budget: int = 6000
    top_k: int = 2000
    cut_th: float = 1.0
    stride_tiles: float = 1.0
    # Headings each query patch is embedded at (evenly spaced; 8: every 45°), so a query facing
    # any way is retrieved; the patches vote for one heading. Demo patch recall@1 of the true
    # tile, 3 queries turned 37/90/180°: 0.47 at 4 headings, 0.67 at 8 (north-up: 0.68 at both).
    query_headings: int = 8
    vote_top: int = 10
    clique_k: int | None = None
    clique_tolerance_tiles: float = 1.5
    verify_hypotheses: int = 5
    verify_workers: int = 2
    verify_recheck: bool = True
    index_min_rows: int = 100_000
    index_kind: str = "ivf_flat"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Log the data folder the run works in, once, when the run starts."""
        context.log.info("rsloc data folder: %s", self.data_root())

    def data_root(self) -> Path:
        """The data folder, absolute: `data_dir`, else `RSLOC_DATA_DIR`, else ./data."""
        return Path(self.data_dir or os.environ.get(DATA_DIR_ENV) or "data").resolve()

    def layout(self) -> Layout:
        return Layout(
            self.data_root(),
            Path(self.gallery) if self.gallery else None,
            self.lancedb_uri or None,
        )

    def base_encoder(self) -> Encoder:
        """The encoder itself, before any gallery-fitted adapter or descriptor."""
        return _cached_encoder(
            self.encoder, self.model_dir, self.device, self.precision, self.encoder_layer
        )

    def descriptor_spec(self) -> DescriptorSpec:
        return DescriptorSpec(
            aggregation=Aggregation(self.aggregation),
            vlad_clusters=self.vlad_clusters,
            grid=self.descriptor_grid,
            whitening_dim=self.whitening_dim,
            sample_tiles=self.fit_sample_tiles,
        )

    def adapter_params(self) -> AdapterParams | None:
        """Adapter training settings, or None when adaptation is off."""
        if not self.adapt:
            return None
        grid = self.descriptor_grid if Aggregation(self.aggregation) == Aggregation.GRID else 0
        return AdapterParams(
            view_budget=self.adapter_view_budget, epochs=self.adapter_epochs, grid=grid
        )

    def load_encoder(self) -> Encoder:
        """The encoder the pipeline embeds with: the base encoder with the current adapter and
        descriptor model, when the settings ask for them."""
        return described_encoder(
            self.layout(), self.base_encoder(), self.descriptor_spec(), self.adapt
        )

    def store(self, encoder: Encoder, info: GalleryInfo) -> TileStore:
        """The LanceDB table of this encoder's embeddings of one of the gallery's levels."""
        name = table_name(encoder.name, info.grid.name, info.zoom)
        return TileStore(self.layout().lancedb, name, encoder.dim)


def default_resource() -> RslocResource:
    """The resource for `dagster dev` and the CLI: the data folder from `RSLOC_DATA_DIR`."""
    return RslocResource()
