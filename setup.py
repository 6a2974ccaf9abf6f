"""Build hook for the native clique library; all other metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["native/build_cffi.py:ffibuilder"])
