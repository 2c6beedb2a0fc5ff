"""Atomic file writes: `write_atomic(path, data)` puts bytes at a path so that a reader sees the old file or the
whole new one, never half of it (used for .wav, .npy and .png outputs)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path, data: bytes) -> Path:
    """Write `data` to a temporary file in the target's folder, then os.replace it onto the target (a symlink at
    the target is replaced, not followed; the umask applies, as to any new file). Returns the path."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
