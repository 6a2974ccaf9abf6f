"""Benchmarks of rsloc's stages, each against a baseline measured in the same run."""
