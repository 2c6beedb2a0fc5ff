"""Run pyclvp's CUDA kernels on the CPU: build the core's CUDA part against tools/cuda_emu/cuda_emu.h,
then run pytest with pyclvp._core.cuda replaced by it.

    python tools/cuda_emu/build.py [--out DIR] [--asan] [-- pytest args]   default: tests/test_cuda.py -q

For a machine without a GPU (CI has none, nor do most developers' machines): the kernels' indexing,
reductions, masks, online softmax, graph capture/replay and the decoder's bookkeeping are checked
against the NumPy reference before any GPU time is spent. It is not a GPU: blocks run one at a
time (no races between blocks show), nothing is timed, and float16/bfloat16 arithmetic goes
through csrc/common/half.h's conversions. A GPU run of tests/test_cuda.py is still the real check.

How: every csrc/cuda/*.cu is compiled by the host compiler as C++ with cuda_emu.h forced in front
(stub <cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h> in the build folder; every kernel is launched
through common.cuh's launch(), that is cudaLaunchKernelEx, never `<<<>>>`, so the sources compile
as they are), and linked with csrc/bindings/cuda_ops.cc and cuda_decoder.cc into a module `_cuda_emu` whose `cuda` submodule
stands in for pyclvp._core.cuda (the CPU core must be built as usual). Takes ~2 minutes on 2 cores.

--asan builds the module with AddressSanitizer (and reruns this script with libasan preloaded):
device buffers are malloc'd host memory here, so a kernel that reads or writes outside a buffer
is reported where it happens (the run stops; the report is printed at the end). (ASan knows nothing
of the fibers' stacks; it has reported nothing false on them so far.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU = Path(__file__).resolve().parent


def build(out: Path, asan: bool = False) -> Path:
    import pybind11

    (out / "src").mkdir(parents=True, exist_ok=True)
    (out / "include").mkdir(exist_ok=True)
    for stub in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h"):
        (out / "include" / stub).write_text("// cuda_emu: everything is in cuda_emu.h\n#pragma once\n")
    (out / "src" / "module.cc").write_text(
        "#include <pybind11/pybind11.h>\n"
        "namespace pyclvp::bind { void register_cuda(pybind11::module_& m); }\n"
        "PYBIND11_MODULE(_cuda_emu, m) { pyclvp::bind::register_cuda(m); }\n")
    sources = [out / "src" / "module.cc", ROOT / "csrc" / "bindings" / "cuda_ops.cc",
               ROOT / "csrc" / "bindings" / "cuda_decoder.cc"]
    for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        dst = out / "src" / (cu.stem + ".cc")
        dst.write_text(f'#include "{cu}"\n')
        sources.append(dst)
    # -Dpyclvp=pyclvp_emu: the emulated types must not clash with pyclvp._core's in pybind11's type registry
    flags = ["-std=c++17", "-O2", "-g", "-fPIC", "-fvisibility=hidden", "-Dpyclvp=pyclvp_emu",
             "-DPYCLVP_WITH_CUDA=1", '-DPYCLVP_CUDA_ARCHS="emu"',
             '-DPYCLVP_CUDA_VERSION="emu"', "-include", str(EMU / "cuda_emu.h"), f"-I{out / 'include'}",
             f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    sanitize = ["-fsanitize=address", "-fno-omit-frame-pointer"] if asan else []
    flags += sanitize
    cxx = os.environ.get("CXX", "g++")

    def compile_one(s: Path) -> Path:
        obj = out / (s.stem + ".o")
        subprocess.run([cxx, *flags, "-c", str(s), "-o", str(obj)], check=True)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
    lib = out / ("_cuda_emu" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([cxx, "-shared", *sanitize, *map(str, objects), "-o", str(lib)], check=True)
    return lib


def use_emulator(folder: Path) -> None:
    """Make pyclvp._core.cuda the emulated one, with one "device"."""
    sys.path.insert(0, str(folder))
    import _cuda_emu
    from pyclvp import _core

    info = _core.build_info
    _core.cuda = _cuda_emu.cuda
    _core.cuda_device_count = lambda: 1
    _core.build_info = lambda: {**info(), "cuda_compiled": True, "cuda_devices": ["cuda_emu (CPU)"]}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else ["tests/test_cuda.py", "-q"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pyclvp_cuda_emu")
    parser.add_argument("--asan", action="store_true", help="build with AddressSanitizer")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.asan and "libasan" not in os.environ.get("LD_PRELOAD", ""):  # it must be loaded before Python
        runtime = [subprocess.run([os.environ.get("CXX", "g++"), f"-print-file-name={name}"], capture_output=True,
                                  text=True, check=True).stdout.strip() for name in ("libasan.so", "libstdc++.so")]
        log = args.out / "asan"  # the report goes to a file too: pytest's capture would swallow it
        for old in args.out.glob("asan.*"):
            old.unlink()
        env = dict(os.environ, LD_PRELOAD=":".join(runtime),  # no leak check: CPython frees not all at exit
                   ASAN_OPTIONS=f"detect_leaks=0:detect_stack_use_after_return=0:log_path={log}")
        rc = subprocess.run([sys.executable, __file__, *argv], env=env).returncode
        for report in sorted(args.out.glob("asan.*")):
            print(report.read_text(), file=sys.stderr)
        return rc
    build(args.out, args.asan)
    use_emulator(args.out)
    import pytest

    os.chdir(ROOT)
    return pytest.main(pytest_args)


if __name__ == "__main__":
    sys.exit(main())
