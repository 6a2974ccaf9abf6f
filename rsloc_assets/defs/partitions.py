"""The dynamic partitions: `queries`, one per query image named after its file stem, and
`gallery_blocks`, one per block of gallery tiles (`z<zoom>-s<side>-<col>-<row>`)."""

from collections.abc import Sequence

import dagster as dg

queries_partitions = dg.DynamicPartitionsDefinition(name="queries")
BLOCKS = "gallery_blocks"
blocks_partitions = dg.DynamicPartitionsDefinition(name=BLOCKS)

# What a fresh instance shows before any partition exists, and how partitions come.
PARTITIONS_HINT = (
    "One `queries` partition per image in the data folder's queries/ (named after its file"
    " stem). A fresh instance has none until the `new_query_files` sensor ticks (on by default"
    " under `dg dev`, every 30 s) or `rsloc queries register` runs; the sensor then localizes"
    " every new or changed image."
)


def sync_partitions(
    instance: dg.DagsterInstance, name: str, keys: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Make `keys` the registered partitions of the dynamic partitions `name`: add the new ones
    (in order, after those already registered) and delete the others; returns (added, deleted)."""
    known = instance.get_dynamic_partitions(name)
    wanted, registered = set(keys), set(known)
    added = [key for key in keys if key not in registered]
    deleted = [key for key in known if key not in wanted]
    if added:
        instance.add_dynamic_partitions(name, added)
    for key in deleted:
        instance.delete_dynamic_partition(name, key)
    return added, deleted
