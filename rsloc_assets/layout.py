"""Where rsloc keeps things under its data folder: every path, the one atomic writer, and typed
reads and writes of the gallery's and each query's artefacts.

Every write goes through a temporary file in the target's folder and a rename, so a reader never
sees half a file and re-running a step replaces its outputs whole.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsloc_assets.records import (
    CliqueSummary,
    GalleryInfo,
    Hypothesis,
    Localization,
    PatchMeta,
    Stage,
    Verification,
)

QUERY_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
_META = b"rsloc"  # schema-metadata key of rsloc's records inside Parquet files
# A query's name is its partition key and names its files: a letter or digit, then letters,
# digits, "_", "-" or "."; never "..", so no name is a path or a glob.
_QUERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

DATA_DIR_ENV = "RSLOC_DATA_DIR"  # the deployment's data folder, for the CLI and the resource

log = logging.getLogger(__name__)


def default_data_dir() -> str:
    """The data folder `RSLOC_DATA_DIR` names, else `data` (relative to where rsloc runs)."""
    return os.environ.get(DATA_DIR_ENV) or "data"


def check_query_name(name: str) -> str:
    """`name` when it can name a query's partition and files safely; a one-line error otherwise."""
    if not _QUERY_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"query name {name!r} cannot name files safely: use up to 128 letters, digits, '_', "
            "'-' and '.', starting with a letter or digit, without '..'"
        )
    return name


def inside(root: Path, path: Path) -> Path:
    """`path` when it resolves inside `root` (links followed); a one-line error otherwise."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} resolves outside {root}: refusing to use it")
    return path


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, created by `write` itself, so the file gets the usual umask permissions.
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}"))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_table(path: Path, table: pa.Table, meta: dict | None = None) -> None:
    """Write a Parquet table atomically, with `meta` as its rsloc schema metadata."""
    if meta is not None:
        table = table.replace_schema_metadata({_META: json.dumps(meta)})
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def table_meta(table: pa.Table) -> dict:
    """The rsloc schema metadata of a table written by `write_table`."""
    return json.loads(table.schema.metadata[_META])


def _needed(path: Path, asset: str) -> Path:
    """`path`, or a one-line error naming the asset that writes it when it is missing."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize {asset} for this query first")
    return path


def _read_patch_table(path: Path, asset: str) -> pa.Table:
    """A per-patch table; a one-line error for one written before its patch-id column was named
    `patch` (it was `query`) or before candidates had a heading."""
    table = pq.read_table(_needed(path, asset))
    for column in ("patch", "heading_deg"):
        if column not in table.column_names:
            raise ValueError(f"{path} predates its `{column}` column: rematerialize {asset}")
    return table


@dataclass(frozen=True)
class QueryWork:
    """One query's work folder and its artefacts, one typed read and write per step's output."""

    name: str
    folder: Path

    @property
    def patches_path(self) -> Path:
        return self.folder / "patches.parquet"

    @property
    def candidates_path(self) -> Path:
        return self.folder / "candidates.parquet"

    @property
    def nodes_path(self) -> Path:
        return self.folder / "cliques.parquet"

    @property
    def hypotheses_path(self) -> Path:
        return self.folder / "hypotheses.parquet"

    @property
    def localization_path(self) -> Path:
        return self.folder / "localization.json"

    @property
    def matches_path(self) -> Path:
        return self.folder / "matches.parquet"

    @property
    def verification_path(self) -> Path:
        return self.folder / "verified.json"

    @property
    def footprint_path(self) -> Path:
        """The verified footprint as GeoJSON (opens in QGIS); absent when not verified."""
        return self.folder / "footprint.geojson"

    def outputs(self) -> dict[str, tuple[Path, ...]]:
        """Each query asset's files, in step order."""
        return {
            "query_patches": (self.patches_path,),
            "candidates": (self.candidates_path,),
            "cliques": (self.nodes_path, self.hypotheses_path),
            "localization": (self.localization_path,),
            "verified_localization": (
                self.matches_path,
                self.verification_path,
                self.footprint_path,
            ),
        }

    def discard_from(self, asset: str) -> None:
        """Delete the files of `asset` and of every step after it: after a failed step, no later
        step (nor the evaluation) reads what an earlier run left."""
        steps = list(self.outputs())
        for name in steps[steps.index(asset) :]:
            for path in self.outputs()[name]:
                path.unlink(missing_ok=True)

    def write_patches(self, table: pa.Table, meta: PatchMeta) -> None:
        """The patch table with embeddings, and the query-level record in its metadata."""
        write_table(self.patches_path, table, meta.to_dict())

    def patch_meta(self) -> PatchMeta:
        """The query-level record of the patch table, read without reading its rows."""
        schema = pq.read_schema(_needed(self.patches_path, "query_patches"))
        return PatchMeta.from_dict(json.loads(schema.metadata[_META]))

    def patches(self) -> tuple[pa.Table, PatchMeta]:
        """The patch table (with embeddings) and the query-level record."""
        table = pq.read_table(_needed(self.patches_path, "query_patches"))
        return table, PatchMeta.from_dict(table_meta(table))

    def write_candidates(self, table: pa.Table, seconds: float) -> None:
        """Each patch's top-K tiles, with the search step's seconds in the metadata."""
        write_table(self.candidates_path, table, {"seconds": seconds})

    def candidates(self) -> pa.Table:
        """Each patch's top-K tiles (`CANDIDATE_SCHEMA`)."""
        return _read_patch_table(self.candidates_path, "candidates")

    def write_nodes(self, table: pa.Table, summary: CliqueSummary) -> None:
        """The clique graph's nodes, with the stage's summary in the metadata."""
        write_table(self.nodes_path, table, asdict(summary))

    def nodes(self) -> pa.Table:
        """The clique graph's nodes with their group and clique score."""
        return _read_patch_table(self.nodes_path, "cliques")

    def write_hypotheses(self, table: pa.Table, hypotheses: list[Hypothesis]) -> None:
        """Each hypothesis's predicted tile per patch; the ranked hypotheses in the metadata."""
        write_table(self.hypotheses_path, table, {"hypotheses": [h.to_dict() for h in hypotheses]})

    def hypotheses(self) -> tuple[pa.Table, list[Hypothesis]]:
        """The per-patch tiles of every hypothesis (`HYPOTHESIS_SCHEMA`) and the ranked list."""
        table = pq.read_table(_needed(self.hypotheses_path, "cliques"))
        return table, [Hypothesis.from_dict(d) for d in table_meta(table)["hypotheses"]]

    def write_localization(self, estimate: Localization, retrieval: Localization) -> None:
        record = {"estimate": estimate.to_dict(), "retrieval": retrieval.to_dict()}
        write_json(self.localization_path, record)

    def localization(self, stage: Stage = Stage.CLIQUES) -> Localization:
        """The stage-2 estimate (`Stage.CLIQUES`) or the retrieval-only one (`Stage.RETRIEVAL`)."""
        record = json.loads(_needed(self.localization_path, "localization").read_text())
        return Localization.from_dict(
            record["retrieval" if stage == Stage.RETRIEVAL else "estimate"]
        )

    def write_verification(
        self, record: Verification, matches: pa.Table, geojson: dict | None
    ) -> None:
        """Stage 3's matches, record and footprint GeoJSON (removed when not verified)."""
        write_table(self.matches_path, matches)
        write_json(self.verification_path, record.to_dict())
        if geojson is None:
            self.footprint_path.unlink(missing_ok=True)
        else:
            write_json(self.footprint_path, geojson)

    def verification(self) -> Verification | None:
        """Stage 3's record, or None before the query has been verified."""
        if not self.verification_path.exists():
            return None
        return Verification.from_dict(json.loads(self.verification_path.read_text()))

    def matches(self) -> pa.Table:
        """One row per patch/candidate pair verification tried (`MATCH_SCHEMA`)."""
        return pq.read_table(_needed(self.matches_path, "verified_localization"))


@dataclass(frozen=True)
class ReportFiles:
    """The evaluation report: Markdown, the per-query Parquet table, the map and the layer."""

    markdown: Path
    table: Path
    map: Path
    footprints: Path  # every query's estimated footprint, one GeoJSON layer (opens in QGIS)


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
    def report(self) -> ReportFiles:
        return ReportFiles(
            self.reports / "evaluation.md",
            self.reports / "evaluation.parquet",
            self.reports / "map.png",
            self.reports / "footprints.geojson",
        )

    @property
    def world(self) -> Path:
        """The demo's synthetic world, and `setup.json`, the stamp of the setup that made it."""
        return self.root / "world"

    @property
    def features(self) -> Path:
        """SIFT features of gallery mosaics, cached per tile and time."""
        return self.work / "features"

    @property
    def models(self) -> Path:
        """Stage 1's gallery-fitted models (adapter, descriptor): versioned files, pointers."""
        return self.root / "models"

    @property
    def manifest(self) -> Path:
        return self.work / "gallery_tiles.parquet"

    @property
    def embedding_state(self) -> Path:
        return self.work / "tile_embeddings.json"

    def write_manifest(self, table: pa.Table, levels: Sequence[GalleryInfo]) -> None:
        """The gallery manifest (rows of every working level), with each level's gallery facts."""
        write_table(self.manifest, table, {"levels": [info.to_dict() for info in levels]})

    def read_manifest(self, columns: list[str] | None = None, zoom: int | None = None) -> pa.Table:
        """The manifest (all or some columns), of one level or all; a one-line error before
        `gallery_tiles` has run."""
        self.gallery_info(zoom)  # the one-line errors: no manifest yet, or no such level
        table = pq.read_table(self.manifest, columns=columns and sorted({*columns, "level"}))
        if zoom is not None:
            table = table.filter(pc.equal(table["level"], zoom))
        return table.select(columns) if columns else table

    def gallery_levels(self) -> list[GalleryInfo]:
        """The gallery facts of each working level, finest first, read without reading rows."""
        if not self.manifest.exists():
            raise FileNotFoundError(
                f"no gallery manifest at {self.manifest}: materialize gallery_tiles first"
            )
        metadata = pq.read_schema(self.manifest).metadata or {}
        record = json.loads(metadata[_META]) if _META in metadata else {}
        if "levels" not in record:
            raise ValueError(
                f"{self.manifest} predates its gallery facts: rematerialize gallery_tiles"
            )
        levels = [GalleryInfo.from_dict(d) for d in record["levels"]]
        return sorted(levels, key=lambda info: -info.zoom)

    def gallery_info(self, zoom: int | None = None) -> GalleryInfo:
        """The gallery facts of level `zoom`, by default the finest working level."""
        levels = self.gallery_levels()
        if zoom is None:
            return levels[0]
        for info in levels:
            if info.zoom == zoom:
                return info
        raise ValueError(f"{self.manifest} holds no tiles at zoom {zoom}")

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the data folder's exclusive lock `name` (`flock` on `work/locks/<name>.lock`),
        waiting while another process holds it; the system releases it if the holder dies."""
        path = self.work / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def corrupt_tiles(self) -> dict[str, str]:
        """Tiles known corrupt at a time (key → time), so a refresh skips them until they change."""
        if not self.embedding_state.exists():
            return {}
        return json.loads(self.embedding_state.read_text())["corrupt"]

    def write_corrupt_tiles(self, corrupt: dict[str, str]) -> None:
        """Record the tiles known corrupt (key → time)."""
        write_json(self.embedding_state, {"corrupt": corrupt})

    def query(self, name: str) -> QueryWork:
        """The work folder and artefacts of the query named `name` (a checked name)."""
        folders = self.work / "queries"
        return QueryWork(name, inside(folders, folders / check_query_name(name)))

    def query_file(self, name: str) -> Path:
        """The image in `queries/` named exactly `name` plus an image suffix; a one-line error if
        none or several (`q000.tif` and `q000.png`), or if it links outside `queries/`."""
        check_query_name(name)
        found = [p for p in self._query_files() if p.stem == name]
        if len(found) != 1:
            what = "no image" if not found else f"{len(found)} images"
            raise FileNotFoundError(f"{what} named {name!r} in {self.queries}")
        return inside(self.queries, found[0])

    def _query_files(self) -> list[Path]:
        if not self.queries.is_dir():
            return []
        return [p for p in self.queries.iterdir() if p.suffix.lower() in QUERY_SUFFIXES]

    def query_names(self) -> list[str]:
        """Names of the query images present, sorted; an image whose name cannot name a partition
        safely is logged and left out. Empty when the folder is empty or absent."""
        names = set()
        for path in self._query_files():
            try:
                names.add(check_query_name(path.stem))
            except ValueError as err:
                log.warning("%s left out: %s", path.name, err)
        return sorted(names)

    def query_stamps(self) -> dict[str, int]:
        """Each query's partition name and the latest modification time (ns) of its image and
        `<name>.json` sidecar; an image that cannot be told apart (two of one name) or links
        outside `queries/` is logged and left out."""
        stamps = {}
        for name in self.query_names():
            try:
                image = self.query_file(name)
                sidecar = image.with_suffix(".json")
                times = [image.stat().st_mtime_ns]
                if sidecar.is_file():
                    times.append(sidecar.stat().st_mtime_ns)
                stamps[name] = max(times)
            except (FileNotFoundError, ValueError) as err:
                log.warning("query %s left out: %s", name, err)
        return stamps
