"""Hardening: Ctrl-C stops a long C++ call, zero-size work returns at once, the decoder session owns
its weights, attention with no visible key, generation memory per chunk."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pyclvp import _core
from pyclvp.ops import numpy_ops

# ----------------------------------------------------------------------------------------------
# 1. Ctrl-C during a long C++ call

_LONG_CALL = """
import sys, time, numpy as np
from pyclvp import _core
r = np.random.default_rng(0)
if sys.argv[1] == "attention":
    q = r.standard_normal((1, 8, 1024, 64), dtype=np.float32)
    k = r.standard_normal((1, 8, 16384, 64), dtype=np.float32)
    call = lambda: _core.attention(q, k, k)
else:
    x = r.standard_normal((2048, 4096), dtype=np.float32)
    w = r.standard_normal((4096, 4096), dtype=np.float32)
    call = lambda: [_core.linear(x, w) for _ in range(3)]
print("ready", flush=True)
t0 = time.monotonic()
try:
    call()
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted after %.2f s" % (time.monotonic() - t0), flush=True)
    sys.exit(42)
"""


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("op", ["attention", "linear"])
def test_ctrl_c_stops_a_long_call(op, threads, monkeypatch):
    monkeypatch.setenv("PYCLVP_NUM_THREADS", threads)
    child = subprocess.Popen([sys.executable, "-c", _LONG_CALL, op], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    t0 = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=10)
    finally:
        child.kill()
    elapsed = time.monotonic() - t0
    assert child.returncode == 42, out
    assert "interrupted" in out
    assert elapsed < 2.0, f"the call took {elapsed:.2f} s to stop"


def test_zero_size_work_returns_at_once():
    huge = 10 ** 12
    z = np.zeros(0, np.float32)
    t0 = time.monotonic()
    assert _core.rotary(np.lib.stride_tricks.as_strided(z, (huge, 0, 4), (0, 0, 0)),
                        np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)).shape == (huge, 0, 4)
    assert _core.layer_norm(np.lib.stride_tricks.as_strided(z, (huge, 0), (0, 0)), z, z, 1e-5).shape == (huge, 0)
    q = np.lib.stride_tricks.as_strided(z, (huge, 4, 0, 8), (0, 0, 0, 0))
    k = np.zeros((huge, 4, 3, 8), np.float32)[:0] if False else np.lib.stride_tricks.as_strided(
        np.zeros(1, np.float32), (huge, 4, 3, 8), (0, 0, 0, 0))
    with pytest.raises(ValueError):  # k is not contiguous: refused, not read
        _core.attention(q, k, k)
    assert _core.gelu(np.lib.stride_tricks.as_strided(z, (huge, 0), (0, 0))).shape == (huge, 0)
    assert time.monotonic() - t0 < 1.0
