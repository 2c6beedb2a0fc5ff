#!/usr/bin/env bash
# Run the AVX-512 kernels on a CPU without AVX-512: build a copy of this tree whose AVX-512 object
# is compiled against SIMDe (SIMD Everywhere, portable implementations of the _mm512_* intrinsics)
# instead of the hardware's, tell the ISA check that AVX-512 is usable, and run the CPU tests, whose
# `isa` parameter then includes avx512.
#
#   bash tools/avx512_emu/run.sh [pytest args]     default: the tests that run every ISA
#
# SIMDe's headers: $SIMDE (a folder holding simde/x86/avx512.h), else Debian's libsimde-dev fetched
# with `apt-get download` (0.7.4 was used). A fresh virtual environment, the copy and the build go
# to $OUT (default /tmp/pyclvp_avx512_emu). ~2 minutes on 2 cores. It checks the lane logic of
# csrc/cpu/vec_avx512.h and the kernels compiled for 16 lanes; not the hardware's speed, nor its
# exact rounding of the reductions. The real check is the same tests on an AVX-512 machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${OUT:-/tmp/pyclvp_avx512_emu}"
rm -rf "$out/tree" && mkdir -p "$out/tree"

if [[ -z "${SIMDE:-}" ]]; then
  if [[ ! -f $out/simde/usr/include/simde/x86/avx512.h ]]; then
    (cd "$out" && rm -f libsimde-dev_*.deb && apt-get download libsimde-dev && dpkg -x libsimde-dev_*.deb simde)
  fi
  SIMDE="$out/simde/usr/include"
fi

git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$out/tree")
cp "$root/tools/avx512_emu/simde_shim.h" "$out/tree/csrc/cpu/"
python3 - "$out/tree" "$SIMDE" <<'PY'
import re, sys
tree, simde = sys.argv[1], sys.argv[2]
def patch(path, old, new, regex=False):
    p = f"{tree}/{path}"
    s = open(p).read()
    t = re.sub(old, new, s) if regex else s.replace(old, new)
    assert t != s, f"{path}: {old!r} not found"
    open(p, "w").write(t)
patch("CMakeLists.txt", '"-mavx512f;-mavx2;-mfma;-mf16c"', f'"-mavx2;-mfma;-mf16c;-DPYCLVP_SIMDE_AVX512;-I{simde}"')
patch("csrc/cpu/vec.h", "#if defined(__AVX512F__)", "#if defined(__AVX512F__) || defined(PYCLVP_SIMDE_AVX512)")
patch("csrc/cpu/isa.cc", "return avx2 && avx512f && (xcr0 & 0xe6) == 0xe6;", "return avx2;  // tools/avx512_emu")
v = "csrc/cpu/vec_avx512.h"
patch(v, "#include <immintrin.h>", '#include <immintrin.h>\n#include "cpu/simde_shim.h"')
patch(v, r"(?<![\w])(_mm512_|_mm256_)", r"simde\1", regex=True)
patch(v, r"(?<![\w])(__m512i|__m512|__m256i|__mmask16)(?![\w])", r"simde\1", regex=True)
PY

[[ -x $out/venv/bin/python ]] || { python3 -m venv "$out/venv" && "$out/venv/bin/pip" install -q numpy regex pytest hypothesis \
  scikit-build-core pybind11; }
PYCLVP_CUDA=OFF "$out/venv/bin/pip" install -q --no-build-isolation --no-deps "$out/tree" -Cbuild-dir="$out/build"
cd "$out"  # not the tree: the tests must import the installed package
"$out/venv/bin/python" -c "import pyclvp._core as c; i = c.build_info(); assert 'avx512' in i['isas_supported'], i; print(i)"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-q tree/tests/test_ops.py tree/tests/test_cpu_model.py)
"$out/venv/bin/python" -m pytest -p no:cacheprovider "${args[@]}"
