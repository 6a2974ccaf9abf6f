"""The pipeline's steps, runnable one at a time in a child process that the fault suite kills
(`python -m tests.fault_steps <data folder> <step> [query]`), and in process for reference runs."""

import sys
from collections.abc import Callable

from rsloc_assets.cliques.steps import find_cliques, localize_query
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.retrieval.steps import find_candidates, prepare_query, refresh_tile_embeddings
from rsloc_assets.verification.steps import verify_query


def resource(root: str) -> RslocResource:
    """The settings every fault-suite run uses: CPU, exhaustive search, one heading."""
    return RslocResource(
        data_dir=root, device="cpu", top_k=100, index_min_rows=1_000_000, query_headings=1
    )


def _embed(rsloc: RslocResource, _: str) -> None:
    layout, encoder = rsloc.layout(), rsloc.load_encoder()
    stores = {info.zoom: rsloc.store(encoder, info) for info in layout.gallery_levels()}
    refresh_tile_embeddings(layout, encoder, stores, rsloc.batch_size, 1_000_000, "ivf_flat")


def _patches(rsloc: RslocResource, name: str) -> None:
    layout = rsloc.layout()
    encoder = rsloc.load_encoder()
    levels = layout.gallery_levels()
    store_for = lambda info: rsloc.store(encoder, info)  # noqa: E731
    prepare_query(layout, name, levels, encoder, store_for, headings=rsloc.query_headings)


def _candidates(rsloc: RslocResource, name: str) -> None:
    layout = rsloc.layout()
    store = rsloc.store(rsloc.load_encoder(), layout.query(name).patch_meta().gallery)
    find_candidates(layout, name, store, rsloc.top_k)


def _cliques(rsloc: RslocResource, name: str) -> None:
    find_cliques(rsloc.layout(), name)


def _localize(rsloc: RslocResource, name: str) -> None:
    localize_query(rsloc.layout(), name)


def _verify(rsloc: RslocResource, name: str) -> None:
    verify_query(rsloc.layout(), name, rsloc.base_encoder())


def _query(rsloc: RslocResource, name: str) -> None:
    for step in (_patches, _candidates, _cliques, _localize, _verify):
        step(rsloc, name)


STEPS: dict[str, Callable[[RslocResource, str], None]] = {
    "embed": _embed,
    "patches": _patches,
    "candidates": _candidates,
    "cliques": _cliques,
    "localize": _localize,
    "verify": _verify,
    "query": _query,
}


def warm(rsloc: RslocResource) -> None:
    """Load what a step loads before its work starts (the encoder), so a kill lands in the work."""
    rsloc.load_encoder()
    rsloc.base_encoder()


if __name__ == "__main__":
    root, step, *rest = sys.argv[1:]
    rsloc = resource(root)
    warm(rsloc)
    print("ready", flush=True)
    STEPS[step](rsloc, rest[0] if rest else "")
    print("done", flush=True)
