"""The CUDA layout kernel (csrc/comm/cuda/*.cu) compiles with nvcc, warning-free, for the
architectures CMake builds by default (sm_80, sm_90). Compile-only: no GPU needed. Skipped
when nvcc is absent. The full CMake build with GALVATRON_CUDA=ON (extension linked with the
static CUDA runtime) is checked by hand with
`pip wheel . --no-build-isolation -Cbuild-dir=/tmp/b -Ccmake.define.GALVATRON_CUDA=ON`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_SOURCES = sorted((ROOT / "csrc" / "comm" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    cmd = [
        NVCC, "-std=c++17", "-O2", "-c", str(source), "-o", str(tmp_path / "out.o"),
        "-I", str(ROOT / "csrc"),
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
        "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.o").stat().st_size > 0


def test_cuda_sources_exist():
    assert CUDA_SOURCES, "csrc/comm/cuda/*.cu missing"
