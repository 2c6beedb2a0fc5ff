#!/usr/bin/env bash
# Builds pyclvp._core with AddressSanitizer + UBSan (CMake option PYCLVP_SANITIZE=ON, CPU only) and
# runs the kernel tests against that build. Clean means: every test passes and neither sanitizer
# reports anything (UBSan is made fatal, so a report fails the run).
#
#   tools/run_sanitizers.sh [pytest args...]      default: tests/test_ops.py tests/test_cpu_model.py
#                                                            tests/test_decoder_cache.py tests/test_core_build.py
# Environment: PYTHON (default: python3 on PATH, or /work/devenv/bin/python), BUILD_DIR (default build-asan),
#              PYCLVP_MAX_EXAMPLES (default 20: ASan makes every example ~3x slower).
#
# How: a Python process cannot load an ASan-instrumented extension unless libasan is loaded first,
# hence LD_PRELOAD (with libstdc++, see below). The sanitized module must shadow the installed one, so the script builds an
# overlay folder (the package's files linked, the sanitized _core next to them) and runs Python with
# -S (no site .pth files, so an editable install cannot redirect `pyclvp`), -P (the source tree in the
# current folder is not put first; Python >= 3.11) and PYTHONPATH set to the overlay followed by the
# interpreter's site-packages (numpy, pytest, hypothesis).
# Leak detection is off: CPython itself does not free everything at exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || echo /work/devenv/bin/python)}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-asan}"
cd "$ROOT"

version="$(PYTHONPATH="$ROOT" "$PYTHON" -c 'import re; print(re.search(r"__version__ = \"(.*)\"", open("pyclvp/__init__.py").read()).group(1))')"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYCLVP_SANITIZE=ON -DPYCLVP_CUDA=OFF \
  -DSKBUILD_PROJECT_VERSION="$version" -DPython_EXECUTABLE="$PYTHON" \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD_DIR" --target _core

overlay="$(mktemp -d)"
trap 'rm -rf "$overlay"' EXIT
mkdir "$overlay/pyclvp"
for f in "$ROOT"/pyclvp/*; do
  case "$f" in *.so|*.pyd) continue ;; esac
  ln -s "$f" "$overlay/pyclvp/"
done
cp "$BUILD_DIR"/_core*.so "$overlay/pyclvp/"

site="$("$PYTHON" -c 'import site, sysconfig; print(":".join(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]))')"
# libstdc++ is preloaded too: ASan intercepts __cxa_throw only if libstdc++ is loaded when it starts
# (python itself does not link it), else the first C++ exception (a ValueError) aborts.
preload="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so.6)"
[ $# -gt 0 ] || set -- tests/test_ops.py tests/test_cpu_model.py tests/test_decoder_cache.py tests/test_core_build.py

sanitized() {  # python -S with the overlay first, libasan preloaded, both sanitizers fatal
  PYTHONPATH="$overlay:$site" LD_PRELOAD="$preload" PYTHONDONTWRITEBYTECODE=1 \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" PYCLVP_MAX_EXAMPLES="${PYCLVP_MAX_EXAMPLES:-20}" \
    "$PYTHON" -S -P "$@"
}
echo "sanitized core: $(ls "$overlay"/pyclvp/_core*.so); LD_PRELOAD=$preload"
sanitized -c 'import sys, pyclvp._core as c; assert c.__file__.startswith(sys.argv[1]), c.__file__' "$overlay"
sanitized -m pytest -q -p no:cacheprovider "$@"
