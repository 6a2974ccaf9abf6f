"""A gallery refresh through Dagster in the test process, what its runs recorded, and the
partitions a run request asks for."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from rsloc_assets.defs.automation import refresh_gallery_in_process
from rsloc_assets.defs.resources import RslocResource


def requested(request: dg.RunRequest, instance: dg.DagsterInstance, partitions: str) -> list[str]:
    """The partitions of the dynamic partitions `partitions` one run request asks for."""
    if request.partition_key is not None:
        return [request.partition_key]
    order = instance.get_dynamic_partitions(partitions)
    span = request.partition_key_range
    return order[order.index(span.start) : order.index(span.end) + 1]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> list[dict]:
    """The metadata of each materialization of `asset` in a run, as plain values."""
    return [
        {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == asset
    ]


@dataclass
class GalleryRefresh:
    """The runs of one gallery refresh: each asset's metadata, each block's, the checks."""

    results: list[dg.ExecuteInProcessResult]
    assets: dict[str, dict] = field(default_factory=dict)
    blocks: dict[str, dict] = field(default_factory=dict)
    checks: list[dg.AssetCheckEvaluation] = field(default_factory=list)

    def total(self, name: str) -> int:
        """A block figure summed over the blocks the refresh embedded."""
        return sum(meta[name] for meta in self.blocks.values())

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def refresh_gallery(
    rsloc: RslocResource, instance: dg.DagsterInstance | None = None
) -> GalleryRefresh:
    """The refresh job's assets, the due blocks, then `tile_index`, on `instance` (default: an
    ephemeral one of its own)."""
    own = instance is None
    instance = instance or dg.DagsterInstance.ephemeral()
    try:
        results = refresh_gallery_in_process(instance, {"rsloc": rsloc})
    finally:
        if own:
            instance.dispose()
    out = GalleryRefresh(results)
    for result in results:
        for m in result.get_asset_materialization_events():
            meta = {k: v.value for k, v in m.materialization.metadata.items()}
            if m.partition is None:
                out.assets[m.asset_key.to_user_string()] = meta
            else:
                out.blocks[m.partition] = meta
        out.checks.extend(result.get_asset_check_evaluations())
    return out
