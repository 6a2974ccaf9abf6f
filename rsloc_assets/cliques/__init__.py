"""Stage 2, spatio-geographic maximal cliques: the native library's wrapper, the retrieval vote,
and the stage's steps (`steps`)."""
