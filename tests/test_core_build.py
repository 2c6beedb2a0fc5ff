"""The extension imports, reports its build, and its ISA switch validates its argument."""
import pytest

import pyclvp
from pyclvp import _core


def test_version_matches_package():
    assert _core.version() == pyclvp.__version__


def test_build_info_fields():
    info = _core.build_info()
    assert info["isas_compiled"][0] == "scalar"
    assert "scalar" in info["isas_supported"]
    assert info["isa_active"] in info["isas_supported"]
    assert isinstance(info["cuda_compiled"], bool)
    assert info["compiler"]


def test_set_isa_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.set_isa("sse9")


def test_set_isa_roundtrip():
    before = _core.get_isa()
    try:
        for isa in _core.build_info()["isas_supported"]:
            _core.set_isa(isa)
            assert _core.get_isa() == isa
    finally:
        _core.set_isa(before)


def test_public_api_resolves():
    for name in pyclvp.__all__:
        assert getattr(pyclvp, name) is not None, name


# ---------------------------------------------------------------------------------------------
# PYCLVP_CUDA=AUTO: CUDA only when nvcc is found AND nvidia-smi lists a GPU (CMakeLists.txt)

def _configure(tmp_path, mode, smi_output):
    """CMake's configure step only (no compile), with a fake nvidia-smi first on PATH; its pyclvp lines."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    pybind11 = pytest.importorskip("pybind11")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + (f"echo '{smi_output}'\n" if smi_output else "exit 9\n"))
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["cmake", "-S", str(root), "-B", str(tmp_path / "build"), f"-DPYCLVP_CUDA={mode}",
                          f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={__import__('sys').executable}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stdout.splitlines() if "pyclvp:" in line]


def test_cuda_auto_without_a_gpu_builds_cpu_only(tmp_path):
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("the rule is about a machine with nvcc but no GPU; this one has no nvcc")
    lines = "\n".join(_configure(tmp_path, "AUTO", None))
    assert "nvcc found but no GPU" in lines and "for the CPU only" in lines and "CUDA kernels too" not in lines


def test_cuda_auto_with_a_gpu_builds_cuda(tmp_path):
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc here")
    lines = "\n".join(_configure(tmp_path, "AUTO", "GPU 0: NVIDIA H200 (UUID: GPU-0)"))
    assert "building the CUDA kernels too" in lines and "no GPU" not in lines
