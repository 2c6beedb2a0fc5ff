"""Writing a file so that no reader ever sees half of it: a temporary file beside the target, renamed into place.

os.replace is atomic within one file system (POSIX rename, Windows MoveFileEx), so a reader sees the old
file or the new one, never a mix, and an interrupted writer leaves at worst a hidden `.NAME.<random>.tmp`,
never a truncated NAME. A reader that memory-maps the old file keeps its pages: the old inode lives until
it is unmapped, so a model can be rewritten while a process runs on it. A symlink at the target is
replaced by the new file, not followed (what it pointed to is left alone). The new file's mode is the one
any new file gets (0o666 less the umask).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterable, Union

__all__ = ["write_atomic"]


def write_atomic(path, data: Union[bytes, Iterable[bytes]]) -> Path:
    """Write `data` (bytes, or an iterable of bytes chunks) to `path` atomically; returns the path written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to write")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
