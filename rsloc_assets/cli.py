"""The `rsloc` command line: one function per subcommand, wired up in `build_parser`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rsloc_assets.gallery.builder import build_gallery
from rsloc_assets.gallery.reader import Gallery
from rsloc_assets.grids import GRIDS
from rsloc_assets.layout import Layout, default_data_dir
from rsloc_assets.retrieval.adapter import AdapterParams
from rsloc_assets.retrieval.descriptors import DescriptorSpec
from rsloc_assets.retrieval.encoders import ENCODERS, load_encoder
from rsloc_assets.synthetic.demo import PRESETS, init_demo, summary_lines

if TYPE_CHECKING:
    from dagster import DynamicPartitionsDefinition

ROOT_HELP = "data folder (default: $RSLOC_DATA_DIR, else data)"


def gallery_build(args: argparse.Namespace) -> None:
    """Warp GeoTIFFs into gallery tiles and print one summary line."""
    report = build_gallery(
        args.inputs,
        args.out,
        grid=args.grid,
        zoom=args.zoom,
        time=args.time,
        min_coverage=args.min_coverage,
        quality=args.quality,
    )
    print(
        f"wrote {report.written} {args.grid} z{args.zoom} tiles"
        f" ({report.skipped_sparse} skipped below {args.min_coverage:.0%} coverage) to {report.out}"
    )


def gallery_info(args: argparse.Namespace) -> None:
    """Print a gallery's format, grid, and per level its tile count, times and lon/lat extent."""
    with Gallery.open(args.path) as gallery:
        grid = gallery.grid
        print(f"{gallery.path}: format {gallery.format}, grid {grid.name} ({grid.crs})")
        levels = gallery.levels()
        if not levels:
            print("no tiles")
        for z in levels:
            times = gallery.times(z)
            box = gallery.extent(z)
            shown = ", ".join(t or '""' for t in times[:5]) + (", …" if len(times) > 5 else "")
            print(
                f"z{z}: {gallery.count(z)} tiles, {len(times)} time(s) [{shown}],"
                f" lon {box.west:.6f}..{box.east:.6f}, lat {box.south:.6f}..{box.north:.6f}"
            )


def gallery_adapt(args: argparse.Namespace) -> None:
    """Train the gallery adapter outside Dagster (what the `gallery_adapter` asset runs) and
    print its training record; `descriptor_model` and `tile_embeddings` then use it."""
    from rsloc_assets.retrieval.models import adapt_gallery  # imports torch: seconds

    layout = Layout(Path(args.root), Path(args.gallery) if args.gallery else None)
    encoder = load_encoder(args.encoder, args.model_dir, args.device, layer=args.layer)
    params = AdapterParams(view_budget=args.view_budget, epochs=args.epochs, grid=args.grid)
    result = adapt_gallery(layout, encoder, params)
    if result.adapter is None:
        raise ValueError("no adapter was trained")
    record = ", ".join(f"{k} {v}" for k, v in result.adapter.record.items())
    print(f"adapter {result.adapter.version} for {encoder.name} written to {result.path}: {record}")


def demo_init(args: argparse.Namespace) -> None:
    """Generate the demo world, its gallery and its query images under the data folder."""
    queries = init_demo(Layout(Path(args.root)), args.preset)
    print(f"demo world ready under {args.root}: {len(queries)} query images")


def demo_summary(args: argparse.Namespace) -> None:
    """Print the per-query table and the closing line of the last evaluation."""
    print("\n".join(summary_lines(Layout(Path(args.root)))))


def queries_list(args: argparse.Namespace) -> None:
    """Print the partition name of every query image, one per line."""
    names = Layout(Path(args.root)).query_names()
    if not names:
        raise FileNotFoundError(
            f"no query images (.tif, .png, .jpg) in {Path(args.root) / 'queries'}"
        )
    print("\n".join(names))


def queries_register(args: argparse.Namespace) -> None:
    """Add a dynamic partition to the Dagster instance for each new query image."""
    import dagster as dg

    from rsloc_assets.defs.automation import register_queries

    new = register_queries(dg.DagsterInstance.get(), Layout(Path(args.root)))
    print(f"registered {len(new)} new query partition(s)")


def queries_range(args: argparse.Namespace) -> None:
    """Print `first...last` of the registered query partitions, in their order: every query in
    one run with `dg launch --partition-range`."""
    from rsloc_assets.defs.partitions import queries_partitions

    print(_partition_range(queries_partitions, "rsloc queries register"))


def gallery_blocks(args: argparse.Namespace) -> None:
    """Print `first...last` of the gallery blocks `gallery_tiles` registered: every block in one
    `embed_gallery` run with `dg launch --partition-range`."""
    from rsloc_assets.defs.partitions import blocks_partitions

    print(_partition_range(blocks_partitions, "dg launch --job refresh_gallery"))


def _partition_range(partitions: DynamicPartitionsDefinition, how: str) -> str:
    """`first...last` of the dynamic `partitions` on the Dagster instance; a one-line error
    naming `how` to register them when there are none."""
    import dagster as dg

    keys = partitions.get_partition_keys(dynamic_partitions_store=dg.DagsterInstance.get())
    if not keys:
        raise LookupError(f"no {partitions.name} partitions registered: run `{how}` first")
    return f"{keys[0]}...{keys[-1]}"


def build_parser() -> argparse.ArgumentParser:
    """The `rsloc` argument parser; each subcommand sets `func` to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="rsloc", description="Geo-localise remote-sensing images against a tile gallery."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_gallery_commands(commands)
    _add_data_commands(commands)
    return parser


def _add_gallery_commands(commands: argparse._SubParsersAction) -> None:
    gallery = commands.add_parser("gallery", help="build or inspect tile galleries")
    actions = gallery.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="warp georeferenced rasters into gallery tiles")
    build.add_argument("--grid", required=True, choices=sorted(GRIDS), help="tile grid")
    build.add_argument("--zoom", required=True, type=int, help="zoom level of the tiles")
    build.add_argument("--time", default="0", help="acquisition time stored with ge tiles")
    build.add_argument(
        "--min-coverage",
        type=float,
        default=0.5,
        help="skip tiles with less than this fraction of covered pixels (default 0.5)",
    )
    build.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    build.add_argument("inputs", nargs="+", metavar="IN", help="georeferenced rasters")
    build.add_argument("out", metavar="OUT", help="gallery file to create or append to")
    build.set_defaults(func=gallery_build)

    adapt = actions.add_parser(
        "adapt", help="train the self-supervised adapter on a data folder's gallery"
    )
    adapt.add_argument("--root", default=default_data_dir(), help=ROOT_HELP)
    adapt.add_argument(
        "--gallery", default="", help="gallery file (default: <root>/gallery.sqlite)"
    )
    adapt.add_argument("--encoder", default="effnetl2", choices=ENCODERS)
    adapt.add_argument("--model-dir", default=None, help="local model folder (not effnetl2)")
    adapt.add_argument("--layer", type=int, default=None, help="DINOv2 block for local features")
    adapt.add_argument("--device", default="auto", help="auto, cpu or cuda")
    adapt.add_argument("--epochs", type=int, default=AdapterParams.epochs)
    adapt.add_argument(
        "--grid",
        type=int,
        default=DescriptorSpec.grid,
        help="cells per side of the grid descriptor the loss trains; 0 for whole-map GeM",
    )
    adapt.add_argument(
        "--view-budget",
        type=int,
        default=AdapterParams.view_budget,
        help="frozen forward passes (tiles sampled × views per tile)",
    )
    adapt.set_defaults(func=gallery_adapt)

    actions.add_parser(
        "blocks", help="print first...last of the registered gallery blocks (one run for all)"
    ).set_defaults(func=gallery_blocks)

    info = actions.add_parser("info", help="describe a gallery")
    info.add_argument("path", metavar="PATH", help="RSLoc ge_tiles SQLite or MBTiles file")
    info.set_defaults(func=gallery_info)


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    def with_root(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--root", default=default_data_dir(), help=ROOT_HELP)
        return parser

    demo = commands.add_parser("demo", help="the procedurally generated demo world")
    actions = demo.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = with_root(actions.add_parser("init", help="write the world, gallery and queries"))
    init.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    init.set_defaults(func=demo_init)
    with_root(actions.add_parser("summary", help="print the evaluation table")).set_defaults(
        func=demo_summary
    )

    queries = commands.add_parser("queries", help="query images in <root>/queries")
    actions = queries.add_subparsers(dest="action", required=True, metavar="ACTION")
    with_root(actions.add_parser("list", help="print partition names")).set_defaults(
        func=queries_list
    )
    with_root(
        actions.add_parser("register", help="add Dagster partitions for new images")
    ).set_defaults(func=queries_register)
    actions.add_parser(
        "range", help="print first...last of the registered partitions (one run for all)"
    ).set_defaults(func=queries_range)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `rsloc` command; bad input prints `rsloc: error: ...` and returns 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rsloc_assets").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"rsloc: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
