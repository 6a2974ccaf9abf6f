"""Fixtures shared across the suite: the small demo world (built once per session), the default
encoder, and a rotated georeferenced query."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from rsloc_assets.layout import Layout
from rsloc_assets.retrieval.encoders import Encoder, load_encoder
from rsloc_assets.synthetic.demo import init_demo


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """The "small" demo preset (world, gallery, queries), built once; copy it before changing it."""
    root = tmp_path_factory.mktemp("small_demo")
    init_demo(Layout(root), "small")
    return root


@pytest.fixture(scope="module")
def small_layout(small_demo, tmp_path_factory) -> Layout:
    """A private copy of the small demo world for one test module."""
    root = tmp_path_factory.mktemp("small_copy") / "data"
    shutil.copytree(small_demo, root)
    return Layout(root)


@pytest.fixture(scope="session")
def effnet() -> Encoder:
    """The default encoder on the CPU, loaded once."""
    return load_encoder("effnetl2", device="cpu")


@pytest.fixture
def rotated_query(tmp_path) -> Path:
    """A 400×300 px UTM 31N query at 5 m/px rotated by 10°."""
    path = tmp_path / "q.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 400, 300, 3, gdal.GDT_Byte)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    a = np.radians(10)
    ds.SetGeoTransform(
        (450000, 5 * np.cos(a), 5 * np.sin(a), 5300000, 5 * np.sin(a), -5 * np.cos(a))
    )
    ds = None
    return path
