"""Stage 1, semantic retrieval: encoders, the LanceDB store of tile embeddings, its incremental
refresh, query patches, and the stage's steps (`steps`)."""
