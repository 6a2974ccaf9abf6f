"""The Dagster code location: `dagster dev` and `dagster asset materialize -m rsloc_assets.defs`."""

import dagster as dg

from rsloc_assets.defs import gallery, queries
from rsloc_assets.defs.automation import (
    embed_changed_blocks,
    embed_gallery_job,
    evaluation_after_queries,
    index_after_embeddings,
    localize_query_job,
    new_query_files,
    nightly_gallery_refresh,
    refresh_gallery_job,
)
from rsloc_assets.defs.resources import default_resource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([gallery, queries]),
    jobs=[localize_query_job, refresh_gallery_job, embed_gallery_job],
    schedules=[nightly_gallery_refresh],
    sensors=[
        new_query_files,
        embed_changed_blocks,
        evaluation_after_queries,
        index_after_embeddings,
    ],
    resources={"rsloc": default_resource()},
    # One process per run: steps share the loaded encoder instead of re-importing torch each.
    executor=dg.in_process_executor,
)
