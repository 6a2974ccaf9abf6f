"""The data folder: typed artefacts round-trip, the atomic writer leaves nothing half-written, and
files from before a format change are one-line errors."""

import os
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rsloc_assets.grids import get_grid
from rsloc_assets.layout import Layout, write_atomic, write_json, write_table
from rsloc_assets.records import (
    CANDIDATE_SCHEMA,
    MANIFEST_SCHEMA,
    MATCH_SCHEMA,
    GalleryInfo,
    Localization,
    Method,
    PatchMeta,
    Stage,
    Verification,
)

INFO = GalleryInfo(get_grid("ge"), 15, 47.9, (822.0, 1222.0), 325)


def test_atomic_writer_replaces_whole_and_cleans_up_on_failure(tmp_path: Path):
    path = tmp_path / "sub" / "a.txt"
    write_atomic(path, lambda tmp: Path(tmp).write_text("one"))
    write_atomic(path, lambda tmp: Path(tmp).write_text("two"))
    assert path.read_text() == "two"

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_query_artefacts_round_trip(tmp_path: Path):
    work = Layout(tmp_path).query("q001")
    meta = PatchMeta("q001", 1500, 1700, (4.0, 4.0), "", INFO, 1.5)
    work.write_patches(pa.table({"patch": pa.array([0, 1], pa.int32())}), meta)
    table, read = work.patches()
    assert read == meta and read.image_ground_m == (6000.0, 6800.0)
    assert table["patch"].to_pylist() == [0, 1]

    work.write_candidates(CANDIDATE_SCHEMA.empty_table(), 0.25)
    assert work.candidates().schema.names == CANDIDATE_SCHEMA.names

    vote = Localization("q001", Method.RETRIEVAL_VOTE, 2.3, 47.9, [(2.2, 48.0)], 0.5, 3, 6, 90.0)
    clique = Localization("q001", Method.CLIQUE, 2.31, 47.91, support=4, patches=6)
    work.write_localization(clique, vote)
    assert work.localization(Stage.RETRIEVAL) == vote
    assert work.localization() == clique
    assert work.localization().method is Method.CLIQUE

    assert work.verification() is None
    record = Verification(clique, None, 6, 1, 3.0)
    work.write_verification(record, MATCH_SCHEMA.empty_table(), None)
    assert work.verification() == record and not work.verification().verified
    work.write_verification(record, MATCH_SCHEMA.empty_table(), {"type": "FeatureCollection"})
    assert work.footprint_path.is_file()
    work.write_verification(record, MATCH_SCHEMA.empty_table(), None)
    assert not work.footprint_path.exists()


def test_manifest_keeps_the_gallery_facts(tmp_path: Path):
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="materialize gallery_tiles first"):
        layout.read_manifest()
    coarse = replace(INFO, zoom=INFO.zoom - 1, tile_ground_m=(1600.0, 1600.0))
    rows = [
        {"key": f"{z}/1/1", "level": z, "col": 1, "row": 1, "time": "2020"}
        for z in (coarse.zoom, INFO.zoom)
    ]
    layout.write_manifest(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), [coarse, INFO])
    assert layout.gallery_levels() == [INFO, coarse]  # finest first
    assert layout.gallery_info() == INFO and layout.gallery_info(coarse.zoom) == coarse
    table = layout.read_manifest()
    assert table.schema.names == MANIFEST_SCHEMA.names and table.num_rows == 2
    assert layout.read_manifest(["key"], zoom=coarse.zoom)["key"].to_pylist() == ["14/1/1"]
    with pytest.raises(ValueError, match="no tiles at zoom 3"):
        layout.gallery_info(3)


def test_files_from_before_a_format_change_are_one_line_errors(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.work.mkdir(parents=True)
    pq.write_table(MANIFEST_SCHEMA.empty_table(), layout.manifest)
    with pytest.raises(ValueError, match="rematerialize gallery_tiles"):
        layout.read_manifest()
    work = layout.query("q001")
    work.folder.mkdir(parents=True)
    pq.write_table(pa.table({"query": [0], "rank": [0]}), work.candidates_path)
    with pytest.raises(ValueError, match="rematerialize candidates"):
        work.candidates()
    pq.write_table(pa.table({"patch": [0], "rank": [0]}), work.candidates_path)
    with pytest.raises(ValueError, match="predates its `heading_deg` column"):
        work.candidates()


def test_query_files_and_stamps(tmp_path: Path):
    layout = Layout(tmp_path)
    assert layout.query_names() == [] and layout.query_stamps() == {}
    layout.queries.mkdir()
    for name in ("b.tif", "a.PNG", "a.json", "notes.txt"):
        (layout.queries / name).write_bytes(b"")
    assert layout.query_names() == ["a", "b"]
    assert layout.query_file("a").name == "a.PNG"
    assert set(layout.query_stamps()) == {"a", "b"}
    with pytest.raises(FileNotFoundError, match="no image named 'c'"):
        layout.query_file("c")


@pytest.mark.parametrize(
    "name", ["../q000", "..", "a/../../b", "q*", "q?", "q[0]", ".hidden", "", "a b", "x" * 200]
)
def test_a_name_that_is_a_path_or_a_glob_names_nothing(tmp_path: Path, name: str):
    layout = Layout(tmp_path)
    with pytest.raises(ValueError, match="cannot name files safely"):
        layout.query(name)
    with pytest.raises(ValueError, match="cannot name files safely"):
        layout.query_file(name)


def test_a_query_image_is_found_by_its_exact_name(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.queries.mkdir(parents=True)
    for file in ("q000.tif", "q000.backup.tif", "q000.json", "...tif", "a b.tif"):
        (layout.queries / file).write_bytes(b"")
    assert layout.query_file("q000").name == "q000.tif"
    assert layout.query_file("q000.backup").name == "q000.backup.tif"
    assert layout.query_names() == ["q000", "q000.backup"]  # "..." and "a b" left out
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"")
    (layout.queries / "link.tif").symlink_to(outside)
    with pytest.raises(ValueError, match="resolves outside"):
        layout.query_file("link")
    (layout.queries / "q000.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="2 images named 'q000'"):
        layout.query_file("q000")


def test_a_missing_upstream_file_names_the_asset_to_materialize(tmp_path: Path):
    work = Layout(tmp_path).query("q001")
    for read, asset in [
        (work.patches, "query_patches"),
        (work.patch_meta, "query_patches"),
        (work.candidates, "candidates"),
        (work.hypotheses, "cliques"),
        (work.localization, "localization"),
        (work.matches, "verified_localization"),
    ]:
        with pytest.raises(FileNotFoundError, match=f"materialize {asset} for this query first"):
            read()


def test_outputs_take_the_umasks_modes(tmp_path: Path):
    """Results are readable by the group and others under the usual umask (QGIS, a web server)."""
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_table(tmp_path / "a.parquet", pa.table({"x": [1]}))
    finally:
        os.umask(old)
    for name in ("a.json", "a.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
