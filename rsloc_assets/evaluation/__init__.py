"""Evaluation: truth from each query's own georeference, metrics per stage, the report, and the
step that scores every query (`steps`)."""
