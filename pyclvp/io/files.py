"""Files, safely: writing so that no reader ever sees half a file; reading small files with a bound.

Writing (write_atomic): a temporary file beside the target, renamed into place.

os.replace is atomic within one file system (POSIX rename, Windows MoveFileEx), so a reader sees the old
file or the new one, never a mix, and an interrupted writer leaves at worst a hidden `.NAME.<random>.tmp`,
never a truncated NAME. A reader that memory-maps the old file keeps its pages: the old inode lives until
it is unmapped, so a model can be rewritten while a process runs on it. A symlink at the target is
replaced by the new file, not followed (what it pointed to is left alone). The new file's mode is the one
any new file gets (0o666 less the umask).
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Iterable, Union

__all__ = ["write_atomic", "open_regular", "read_small", "read_json", "MAX_SMALL_FILE"]


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


MAX_SMALL_FILE = 64 << 20  # configs, vocabularies, indexes: a few MB at most (Tortoise's vocab.json: ~5 kB)


def open_regular(path):
    """A regular file opened for binary reading. A FIFO, a device (/dev/zero) or a folder is refused before
    anything is read: opening a FIFO would block until a writer came, /dev/zero reads until memory runs out.
    (O_NONBLOCK makes the open of a FIFO return at once; it changes nothing for a regular file.)"""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def read_small(path, limit: int = MAX_SMALL_FILE) -> bytes:
    """A regular file's bytes (open_regular), at most `limit` of them: a larger file is refused."""
    path = Path(path)
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is over {limit} bytes: not a config, vocabulary or index")
    return data


def read_json(path, limit: int = MAX_SMALL_FILE):
    """A small JSON file's value; malformed or absurdly nested JSON is a ValueError naming the file."""
    try:
        return json.loads(read_small(path, limit).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
