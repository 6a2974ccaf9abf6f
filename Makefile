# rsloc: `make demo` and `make test` set everything up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := .stamps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DAGSTER_HOME := $(CURDIR)/dagster_home
DG := $(VENV)/bin/dg
RSLOC := $(VENV)/bin/rsloc

.PHONY: setup demo test test-faults test-ui lint clean bench bench-clique bench-extraction bench-embedding bench-scale \
	bench-real bench-gallery-size bench-descriptors bench-gallery-size-descriptors bench-runs bench-query bench-report

setup: $(STAMPS)/gdal-python

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "rsloc needs Python >= 3.11 (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMPS)/gdal-lib:
	@mkdir -p $(STAMPS)
	@command -v gdal-config >/dev/null || { \
		echo "installing GDAL's system library (libgdal-dev)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libgdal-dev gdal-bin >/dev/null; }
	@touch $@

$(STAMPS)/install: pyproject.toml setup.py native/build_cffi.py native/sources.txt $(wildcard native/*.c native/*.h) | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	@touch $@

$(STAMPS)/gdal-python: $(STAMPS)/gdal-lib $(STAMPS)/install
	@v=$$(gdal-config --version); \
	$(PY) -c "from osgeo import gdal, gdal_array; import sys; sys.exit(gdal.__version__ != '$$v')" 2>/dev/null \
		|| $(PIP) install -q --no-build-isolation --no-cache-dir "gdal[numpy]==$$v"
	@touch $@

demo: setup
	$(RSLOC) demo init --root data
	$(DG) launch --job refresh_gallery
	@# every gallery block in one run, then the index (the sensors do the same under `dg dev`)
	RSLOC_BLOCKS_PER_RUN= $(DG) launch --job embed_gallery --partition-range "$$($(RSLOC) gallery blocks)"
	$(DG) launch --assets tile_index
	$(RSLOC) queries register --root data
	@# every query in one run (a backfill policy split by RSLOC_QUERIES_PER_RUN would refuse a range)
	RSLOC_QUERIES_PER_RUN= $(DG) launch --job localize_query --partition-range "$$($(RSLOC) queries range)"
	$(DG) launch --assets evaluation
	@$(RSLOC) demo summary --root data

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

# SIGKILL at random points of the gallery refresh and of each query step, reruns compared with an
# uninterrupted run (`make test` runs it too); the sanitized native build is tests/test_native.py.
test-faults: setup
	$(VENV)/bin/pytest -q -m faults

# The Dagster UI in headless Chromium (Debian's chromium and chromium-driver): `dg dev` on a small
# demo world, one query launched from the UI, its preview and the evaluation's map found;
# screenshots in data/reports/ui/. Not part of `make test` (~5 min).
test-ui: setup
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing Chromium and ChromeDriver (chromium, chromium-driver)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }
	$(PIP) install -q -e '.[dev,ui]'
	$(VENV)/bin/pytest -q -m ui tests/test_ui.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: bench-clique bench-extraction bench-embedding bench-scale bench-real bench-gallery-size bench-query
	$(MAKE) bench-report

bench-clique: setup
	$(PY) -m bench.clique

bench-extraction: setup
	$(PY) -m bench.extraction

bench-embedding: setup
	$(PY) -m bench.embedding

bench-scale: setup
	LANCE_LOG=error $(PY) -m bench.scale

bench-real: setup
	$(PY) -m bench.real

# 40 queries of the small demo world through `dg launch`: one run each, then one run for all (~20 min).
bench-runs: setup
	$(PY) -m bench.runs

# First run: builds the RSLoc gallery and an 824,796-tile table (≈ 8 min, cached in bench/.cache/query).
bench-query: setup
	LANCE_LOG=error $(PY) -m bench.query

# First run: builds and embeds a 30,000-tile atlas (cached in bench/.cache/gallery_size).
bench-gallery-size: setup
	LANCE_LOG=error $(PY) -m bench.gallery_size

# Whole-map GeM against the default grid descriptor on the largest gallery's retrieval alone.
bench-gallery-size-descriptors: setup
	$(PY) -m bench.descriptors --datasets --folders "$$($(PY) -m bench.gallery_size --prepare-only | tail -1)" \
		--options gem grid3 --queries 'w*' --name descriptors_gallery_size

bench-descriptors: setup
	$(PY) -m bench.descriptors

bench-report: setup
	$(PY) -m bench.report

clean:
	rm -rf $(VENV) $(STAMPS) build *.egg-info
