"""The `queries` dynamic partitions: one per query image, named after its file stem."""

import dagster as dg

queries_partitions = dg.DynamicPartitionsDefinition(name="queries")

# What a fresh instance shows before any partition exists, and how partitions come.
PARTITIONS_HINT = (
    "One `queries` partition per image in the data folder's queries/ (named after its file"
    " stem). A fresh instance has none until the `new_query_files` sensor ticks (on by default"
    " under `dg dev`, every 30 s) or `rsloc queries register` runs; the sensor then localizes"
    " every new or changed image."
)
