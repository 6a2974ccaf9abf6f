"""cffi (API mode) build of the native clique library as `rsloc_assets._cliques`.

setup.py names this file in `cffi_modules`, so `pip install -e .` compiles it; the C declarations
are read from the public header between its `cffi:begin` and `cffi:end` markers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
HEADER = NATIVE / "rsloc_cliques.h"
# The C sources, relative to native/: one a line in sources.txt (`#` starts a comment line),
# which tests/test_native.py reads too.
SOURCES = [
    line.strip()
    for line in (NATIVE / "sources.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
# The pair screen in the geo stage vectorises only when sqrt and compares need not set errno
# or trap; the library relies on neither.
COMPILE_ARGS = [
    "-O2",
    "-std=c99",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fvect-cost-model=dynamic",
]
NO_COMPILER = (
    "rsloc: no C compiler found to build native/ — install one, e.g. `apt-get install "
    "build-essential`"
)


def find_compiler() -> str | None:
    """Path of the C compiler the build will use: $CC, Python's configured CC, then cc/gcc/clang."""
    configured = [os.environ.get("CC", ""), sysconfig.get_config_var("CC") or ""]
    names = [shlex.split(c)[0] for c in configured if c.strip()] + ["cc", "gcc", "clang"]
    return next((p for p in map(shutil.which, names) if p), None)


def cdef_text() -> str:
    """The declarations between the header's cffi markers."""
    text = HEADER.read_text()
    start = text.index("/* cffi:begin */") + len("/* cffi:begin */")
    return text[start : text.index("/* cffi:end */")]


def _relative(path: Path) -> str:
    """`path` relative to the working directory when below it: setuptools wants relative paths."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if find_compiler() is None:
    raise SystemExit(NO_COMPILER)

ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "rsloc_assets._cliques",
    '#include "rsloc_cliques.h"',
    sources=[_relative(NATIVE / s) for s in SOURCES],
    include_dirs=[_relative(NATIVE)],
    extra_compile_args=COMPILE_ARGS,
    libraries=["m"] if os.name == "posix" else [],
)
