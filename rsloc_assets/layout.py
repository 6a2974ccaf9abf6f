"""Where rsloc keeps things under its data directory: one place for every path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

QUERY_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Layout:
    """Paths of the gallery, queries, vector store, per-query work and reports under `root`."""

    root: Path
    gallery_path: Path | None = None
    lancedb_uri: str | None = None

    @property
    def gallery(self) -> Path:
        return self.gallery_path or self.root / "gallery.sqlite"

    @property
    def lancedb(self) -> str:
        return self.lancedb_uri or str(self.root / "lancedb")

    @property
    def queries(self) -> Path:
        return self.root / "queries"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def features(self) -> Path:
        """SIFT features of gallery mosaics, cached per tile and time."""
        return self.work / "features"

    @property
    def manifest(self) -> Path:
        return self.work / "gallery_tiles.parquet"

    @property
    def embedding_state(self) -> Path:
        return self.work / "tile_embeddings.json"

    def query_dir(self, name: str) -> Path:
        return self.work / "queries" / name

    def query_file(self, name: str) -> Path:
        """The image in `queries/` whose stem is `name`; a one-line error if none or several."""
        found = [p for p in self.queries.glob(f"{name}.*") if p.suffix.lower() in QUERY_SUFFIXES]
        if len(found) != 1:
            what = "no image" if not found else f"{len(found)} images"
            raise FileNotFoundError(f"{what} named {name!r} in {self.queries}")
        return found[0]

    def query_names(self) -> list[str]:
        """Stems of the query images present, sorted; empty when the folder is empty or absent."""
        if not self.queries.is_dir():
            return []
        files = (p for p in self.queries.iterdir() if p.suffix.lower() in QUERY_SUFFIXES)
        return sorted({p.stem for p in files})
