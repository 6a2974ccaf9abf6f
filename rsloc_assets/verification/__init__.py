"""Stage 3, MAC-guided geometric verification: matching, the per-tile feature cache, the
footprint, and the stage's steps (`steps`)."""
