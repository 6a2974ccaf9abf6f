"""The `queries` dynamic partitions: one per query image, named after its file stem."""

import dagster as dg

queries_partitions = dg.DynamicPartitionsDefinition(name="queries")
