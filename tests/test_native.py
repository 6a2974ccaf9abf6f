"""The native clique library built on its own with AddressSanitizer and UBSan, driven through its
whole public API by native/tests/sanitize_driver.c and fuzzed by native/tests/fuzz_driver.c; and a
strict-warnings C99 build."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[1] / "native"
# The library's C sources: native/sources.txt, the list native/build_cffi.py compiles too.
SOURCES = [
    NATIVE / line.strip()
    for line in (NATIVE / "sources.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
DRIVER = NATIVE / "tests" / "sanitize_driver.c"
FUZZ = NATIVE / "tests" / "fuzz_driver.c"
FUZZ_SEED, FUZZ_CPU_S = 1, 10  # ≈ 27,000 calls under the sanitizers on this 2-core machine
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
# Huge requests must come back as RSLOC_ENOMEM: allocations over 256 MiB fail instead of aborting.
ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:allocator_may_return_null=1"
    ":max_allocation_size_mb=256",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
FINDINGS = ("runtime error", "ERROR: AddressSanitizer", "LeakSanitizer")
GCC = shutil.which("gcc")


def compile_c(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GCC, "-std=c99", *map(str, args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def sanitizers(tmp_path_factory) -> None:
    """Skip unless gcc can build and run a sanitized program here."""
    if GCC is None:
        pytest.skip("gcc not found: the sanitizer build needs it")
    tmp = tmp_path_factory.mktemp("probe")
    (tmp / "probe.c").write_text("#include <stdlib.h>\nint main(void) { free(malloc(8)); }\n")
    built = compile_c([*SANITIZE, "probe.c", "-o", "probe"], tmp)
    if built.returncode != 0:
        pytest.skip(f"no sanitizer runtime (libasan/libubsan): {built.stderr.splitlines()[0]}")
    ran = subprocess.run(
        [str(tmp / "probe")], env={**os.environ, **ENV}, capture_output=True, text=True
    )
    if ran.returncode != 0:
        pytest.skip(
            f"sanitizer runtime unusable here: {(ran.stderr or 'no output').splitlines()[0]}"
        )


def run_sanitized(driver: Path, args: list[str], tmp_path: Path) -> str:
    """Build the library with `driver` under ASan + UBSan, run it with `args`, and return its
    stdout once it exited cleanly with no sanitizer finding."""
    built = compile_c([*SANITIZE, f"-I{NATIVE}", *SOURCES, driver, "-lm", "-o", "driver"], tmp_path)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run(
        [str(tmp_path / "driver"), *args],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    assert not [f for f in FINDINGS if f in output], output[-4000:]
    return ran.stdout


def test_library_is_clean_under_asan_and_ubsan(sanitizers, tmp_path):
    assert "all checks passed" in run_sanitized(DRIVER, [], tmp_path)


@pytest.mark.faults
def test_random_calls_keep_the_api_contract_under_asan_and_ubsan(sanitizers, tmp_path):
    """Random sizes, NaN/inf, out-of-range ids and parameters, NULL and short error buffers: every
    call returns a documented status and a well-formed or zeroed result, nothing leaks."""
    out = run_sanitized(FUZZ, [str(FUZZ_SEED), str(FUZZ_CPU_S)], tmp_path)
    assert " 0 failures" in out


@pytest.mark.skipif(GCC is None, reason="gcc not found")
def test_library_compiles_without_warnings(tmp_path):
    strict = ["-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{NATIVE}", "-c"]
    for source in [*SOURCES, DRIVER, FUZZ]:
        built = compile_c([*strict, source, "-o", f"{source.stem}.o"], tmp_path)
        assert built.returncode == 0, built.stderr
