"""The one resource: where the data lives and how each stage is configured."""

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field, model_validator

from rsloc_assets.gallery.blocks import BLOCK_TILES
from rsloc_assets.layout import Layout, default_data_dir
from rsloc_assets.records import GalleryInfo
from rsloc_assets.retrieval.adapter import AdapterParams
from rsloc_assets.retrieval.descriptors import Aggregation, DescriptorSpec
from rsloc_assets.retrieval.encoders import Encoder, load_encoder
from rsloc_assets.retrieval.heading import VOTE_PATCHES
from rsloc_assets.retrieval.models import described_encoder
from rsloc_assets.retrieval.store import IndexKind, TileStore, table_name

ENV_PREFIX = "RSLOC_"  # RSLOC_<FIELD> sets a resource field for the whole deployment


@lru_cache(maxsize=2)
def _cached_encoder(
    name: str, model_dir: str | None, device: str, precision: str, layer: int | None
) -> Encoder:
    return load_encoder(name, model_dir, device, precision, layer)


def _setting(default: object, description: str) -> object:
    """A resource field with its default and the description the Dagster UI shows."""
    return Field(default=default, description=description)


class RslocResource(dg.ConfigurableResource):
    """Data folder, gallery, vector store and stage parameters (defaults follow the RSLoc paper).

    Every field can be set once for the deployment as `RSLOC_<FIELD>` in the environment (e.g.
    `RSLOC_TOP_K=500`, `RSLOC_ZOOM=null`): run config overrides it, and a run whose config sets
    other fields still takes it, since the environment is read when each run builds the resource.
    """

    data_dir: str = _setting("", "Data folder (gallery, queries, LanceDB, work); empty: ./data")
    gallery: str = _setting(
        "", "Gallery file (ge_tiles SQLite or MBTiles); empty: <data_dir>/gallery.sqlite"
    )
    lancedb_uri: str = _setting("", "LanceDB URI (a folder, s3://…); empty: <data_dir>/lancedb")
    zoom: int | None = _setting(None, "The one working level; null: every level the gallery holds")
    gallery_time: str | None = _setting(None, "The gallery time_ to use; null: each tile's latest")
    encoder: str = _setting("effnetl2", "Encoder: effnetl2 (built in), clip, dinov2, dinov2-salad")
    model_dir: str | None = _setting(None, "Local folder of a clip/dinov2/dinov2-salad model")
    encoder_layer: int | None = _setting(
        None, "DINOv2 layer whose patch tokens are pooled; null: last"
    )
    device: str = _setting("auto", "Torch device: auto (CUDA when present), cpu, cuda, cuda:1, …")
    precision: str = _setting("fp16", "fp16, bf16 or fp32 on CUDA; a CPU always runs fp32")
    batch_size: int = _setting(32, "Images per encoder batch when embedding the gallery")
    block_tiles: int = Field(
        default=BLOCK_TILES,
        ge=1,
        description="Side of a gallery block, in tiles: the unit `tile_embeddings` embeds",
    )
    # NAIP seed-1 patch recall@1 0.17 → 0.55, synthetic 0.37 → 0.68 against whole-map GeM.
    aggregation: Aggregation = _setting(
        Aggregation.GRID, "Global descriptor: grid (GeM per cell), gem (whole map) or vlad"
    )
    vlad_clusters: int = _setting(32, "VLAD vocabulary size (k-means on the gallery)")
    descriptor_grid: int = _setting(3, "Cells per side of the grid descriptor")
    whitening_dim: int = _setting(
        0, "PCA-whitening output dimension fitted on the gallery; 0: none"
    )
    fit_sample_tiles: int = _setting(2000, "Gallery tiles sampled to fit VLAD or whitening")
    adapt: bool = _setting(False, "Train a self-supervised adapter on the gallery's own tiles")
    adapter_epochs: int = _setting(20, "Adapter training epochs")
    adapter_view_budget: int = _setting(6000, "Encoder passes the adapter's training may cache")
    top_k: int = _setting(2000, "Gallery tiles kept per query patch (the paper's 2,000)")
    cut_th: float = _setting(1.0, "Query patch = this × a 3×3 mosaic's ground")
    stride_tiles: float = _setting(1.0, "Patch stride, in gallery tiles on the ground")
    # Headings a query's patches are tried at (evenly spaced; 8: every 45°), so a query facing
    # any way is retrieved; `vote_patches` of them vote for one heading, the rest are embedded at
    # the winner alone. Demo patch recall@1 of the true
    # tile, 3 queries turned 37/90/180°: 0.47 at 4 headings, 0.67 at 8 (north-up: 0.68 at both).
    query_headings: int = _setting(8, "Headings the heading vote tries (8: every 45°)")
    vote_patches: int = Field(
        default=VOTE_PATCHES,
        ge=1,
        description="Patches embedded at every heading to vote the query's heading",
    )
    vote_top: int = _setting(10, "Candidates per patch in the retrieval vote")
    clique_k: int | None = _setting(
        None, "Candidates per patch into the clique graph; null: the paper's share of the gallery"
    )
    clique_tolerance_tiles: float = _setting(
        1.5, "Clique edge tolerance: ground vs pixel distance, in tiles"
    )
    verify_hypotheses: int = _setting(5, "Stage-2 hypotheses verification tries, best first")
    verify_workers: int = _setting(2, "Threads matching patches in verification")
    verify_recheck: bool = _setting(True, "Re-check accepted matches by embedding similarity")
    index_min_rows: int = _setting(100_000, "Rows below which LanceDB searches exhaustively")
    index_kind: IndexKind = _setting(IndexKind.IVF_FLAT, "ANN index: ivf_flat, ivf_sq or ivf_pq")

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: object) -> object:
        """Fill every field the config leaves out from `RSLOC_<FIELD>` (`null`: None)."""
        if not isinstance(data, dict):
            return data
        found = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"{ENV_PREFIX}{name.upper()}")
            if name not in data and raw is not None:
                found[name] = None if raw.strip().lower() in ("null", "none") else raw
        return {**found, **data}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Log the data folder the run works in, once, when the run starts."""
        context.log.info("rsloc data folder: %s", self.data_root())

    def data_root(self) -> Path:
        """The data folder, absolute: `data_dir` (or `RSLOC_DATA_DIR`), else ./data."""
        return Path(self.data_dir or default_data_dir()).resolve()

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
    """The resource for `dagster dev`: every field from `RSLOC_<FIELD>` where set."""
    return RslocResource()
