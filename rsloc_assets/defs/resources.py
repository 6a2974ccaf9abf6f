"""The one resource: where the data lives and how each stage is configured."""

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg

from rsloc_assets.layout import Layout
from rsloc_assets.records import GalleryInfo
from rsloc_assets.retrieval.encoders import Encoder, load_encoder
from rsloc_assets.retrieval.store import TileStore, table_name


@lru_cache(maxsize=2)
def _cached_encoder(name: str, model_dir: str | None, device: str, precision: str) -> Encoder:
    return load_encoder(name, model_dir=model_dir, device=device, precision=precision)


class RslocResource(dg.ConfigurableResource):
    """Data folder, gallery, vector store and stage parameters (defaults follow the RSLoc paper)."""

    data_dir: str = "data"
    gallery: str = ""
    lancedb_uri: str = ""
    zoom: int | None = None
    gallery_time: str | None = None
    encoder: str = "effnetl2"
    model_dir: str | None = None
    device: str = "auto"
    precision: str = "fp16"
    batch_size: int = 32
    top_k: int = 2000
    cut_th: float = 1.0
    stride_tiles: float = 1.0
    vote_top: int = 10
    clique_k: int | None = None
    clique_tolerance_tiles: float = 1.5
    verify_hypotheses: int = 5
    verify_workers: int = 2
    verify_recheck: bool = True
    index_min_rows: int = 100_000
    index_kind: str = "ivf_flat"

    def layout(self) -> Layout:
        return Layout(
            Path(self.data_dir),
            Path(self.gallery) if self.gallery else None,
            self.lancedb_uri or None,
        )

    def load_encoder(self) -> Encoder:
        return _cached_encoder(self.encoder, self.model_dir, self.device, self.precision)

    def store(self, encoder: Encoder, info: GalleryInfo) -> TileStore:
        """The LanceDB table of this encoder's embeddings of the gallery's working level."""
        name = table_name(encoder.name, info.grid.name, info.zoom)
        return TileStore(self.layout().lancedb, name, encoder.dim)


def default_resource() -> RslocResource:
    """The resource for `dagster dev` and the CLI: `RSLOC_DATA_DIR` overrides the data folder."""
    return RslocResource(data_dir=os.environ.get("RSLOC_DATA_DIR", "data"))
