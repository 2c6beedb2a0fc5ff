"""WAV files in Python: `read_wav(source)` decodes one to float samples, `write_wav(path, samples, rate)` writes one.

Reading a RIFF/WAVE file (the layout every writer agrees on; ref: Microsoft "Multimedia Programming
Interface and Data Specifications 1.0", and the WAVE_FORMAT_EXTENSIBLE note in mmreg.h / ksmedia.h):

  1. A 12-byte header: b"RIFF", a little-endian u32 size, b"WAVE".
  2. Then chunks, each an 8-byte header (4-byte id, u32 size), the payload, and one pad byte when the
     size is odd. "fmt " says how samples are encoded and "data" holds them; every other chunk
     (LIST, JUNK, fact, cue, bext, ...) is skipped.
  3. "fmt ": format tag, channels, rate, byte rate, block align (bytes per frame) and bits per sample.
     For WAVE_FORMAT_EXTENSIBLE (tag 0xFFFE) the real tag is the first two bytes of the SubFormat GUID.
  4. Decoding to float64 in [-1, 1): PCM 8-bit is unsigned, (x - 128) / 128; PCM 16, 24 and 32-bit are
     signed, x / 2**(bits - 1); IEEE float 32 and 64 (tag 3) are taken as they are, and must be finite.

Writing (`write_wav`): mono 16-bit PCM, the header above with format tag 1, samples clipped to [-1, 1]
and scaled by 32767.

Anything else read (mu-law, A-law, ADPCM, an MP3 renamed .wav, a truncated file, zero channels, ...) raises
`AudioError` (a ValueError) whose message says what is wrong.

Shapes: T time (samples); frames of a multi-channel file are rows of a (T, channels) array.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .atomic import write_atomic

__all__ = ["AudioError", "read_wav", "write_wav", "wav_header", "pcm16"]


class AudioError(ValueError):
    """A file that is not a WAV this reader decodes, with the reason in the message."""


# ---------------------------------------------------------------------------------------------
# RIFF/WAVE container

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Bytes 2..15 of every KSDATAFORMAT_SUBTYPE_* GUID; bytes 0..1 hold the plain format tag.
_EXTENSIBLE_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# Codecs met in the wild that this reader does not decode, named in the error message.
_CODEC_NAMES = {
    0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0050: "MPEG audio", 0x0055: "MP3", 0x0161: "Windows Media Audio",
    0x1610: "AAC", 0xF1AC: "FLAC",
}


def _read_source(source) -> bytes:
    """The file's bytes: `source` is a path, a bytes-like object, or a binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        return source.read()
    with open(os.fspath(source), "rb") as f:
        return f.read()


def _not_riff_reason(head: bytes) -> str:
    """What a file that does not start with b"RIFF" looks like instead."""
    if head.startswith(b"RF64"):
        return "RF64 (a WAV over 4 GiB) is not supported"
    if head.startswith(b"RIFX"):
        return "big-endian RIFX WAV is not supported"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "this is an MP3 file (ID3 tag or MPEG frame sync), not a WAV"
    if head.startswith(b"fLaC"):
        return "this is a FLAC file, not a WAV"
    if head.startswith(b"OggS"):
        return "this is an Ogg file, not a WAV"
    return f"not a RIFF/WAVE file (it starts with {head[:4]!r})"


def _chunks(buf: bytes) -> dict:
    """{chunk id: payload} for the first chunk of each id, after checking the RIFF/WAVE header."""
    if len(buf) == 0:
        raise AudioError("empty file (0 bytes)")
    if not buf.startswith(b"RIFF"):
        raise AudioError(_not_riff_reason(buf[:4]))
    if len(buf) < 12:
        raise AudioError(f"truncated: {len(buf)} bytes, shorter than the 12-byte RIFF/WAVE header")
    if buf[8:12] != b"WAVE":
        raise AudioError(f"RIFF file of form {buf[8:12]!r}, not WAVE")
    (riff_size,) = struct.unpack_from("<I", buf, 4)
    # Trust the RIFF size only when it is consistent; streaming writers leave 0 or 0xFFFFFFFF there.
    end = 8 + riff_size if 12 <= 8 + riff_size <= len(buf) else len(buf)
    chunks, pos = {}, 12
    while pos + 8 <= end:
        cid, size = buf[pos:pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
        if pos + 8 + size > len(buf):
            raise AudioError(f"truncated: chunk {cid.decode('latin-1')!r} declares {size} bytes "
                             f"but only {len(buf) - pos - 8} remain")
        chunks.setdefault(cid, buf[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)  # odd-sized chunks are followed by one pad byte
    for cid in (b"fmt ", b"data"):
        if cid not in chunks:
            raise AudioError(f"no {cid.decode()!r} chunk (chunks found: {[c.decode('latin-1') for c in chunks]})")
    return chunks


def _parse_fmt(fmt: bytes) -> tuple[int, int, int, int]:
    """(format tag, channels, sampling rate, bits per sample) from a "fmt " payload, validated."""
    if len(fmt) < 16:
        raise AudioError(f"'fmt ' chunk is {len(fmt)} bytes; it needs at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise AudioError(f"WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is {len(fmt)} bytes; it needs 40")
        guid = fmt[24:40]
        if guid[2:] != _EXTENSIBLE_GUID_TAIL:
            raise AudioError(f"unsupported codec: WAVE_FORMAT_EXTENSIBLE with SubFormat GUID {guid.hex()}")
        (tag,) = struct.unpack_from("<H", guid)
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = _CODEC_NAMES.get(tag, "unknown codec")
        raise AudioError(f"unsupported codec: {name} (format tag 0x{tag:04X}); only PCM and IEEE float are read")
    if channels == 0:
        raise AudioError("the 'fmt ' chunk declares zero channels")
    if rate == 0:
        raise AudioError("the 'fmt ' chunk declares a sampling rate of 0 Hz")
    allowed = (8, 16, 24, 32) if tag == WAVE_FORMAT_PCM else (32, 64)
    if bits not in allowed:
        kind = "PCM" if tag == WAVE_FORMAT_PCM else "IEEE float"
        raise AudioError(f"unsupported {kind} sample size: {bits} bits (supported: {allowed})")
    if block_align != channels * bits // 8:
        raise AudioError(f"block align {block_align} does not match {channels} channel(s) of {bits} bits")
    return tag, channels, rate, bits


def _decode(data: bytes, tag: int, channels: int, bits: int) -> np.ndarray:  # -> (T, channels) float64
    """Samples of a "data" payload as float64 in [-1, 1), one row per frame."""
    frame_bytes = channels * bits // 8
    if len(data) % frame_bytes:
        raise AudioError(f"truncated: the data chunk holds {len(data)} bytes, not a whole number of "
                         f"{frame_bytes}-byte frames")
    if tag == WAVE_FORMAT_IEEE_FLOAT:
        x = np.frombuffer(data, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)  # (T*channels,)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise AudioError(f"{bad.size} NaN or infinite sample(s), the first at frame {bad[0] // channels}")
    elif bits == 8:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)                  # (T*channels, 3)
        wide = np.zeros((b.shape[0], 4), dtype=np.uint8)                         # (T*channels, 4)
        wide[:, 1:] = b                                                          # sample in the top 3 bytes
        x = (wide.view("<i4")[:, 0] >> 8).astype(np.float64) / 2.0 ** 23        # arithmetic shift: sign kept
    else:
        x = np.frombuffer(data, dtype=f"<i{bits // 8}").astype(np.float64) / 2.0 ** (bits - 1)
    return x.reshape(-1, channels)                                               # (T, channels)


def read_wav(source) -> tuple[np.ndarray, int]:
    """Decode a WAV file: (samples (T, channels) float64 in [-1, 1), sampling rate in Hz).

    `source` is a path, bytes, or a binary file object. Raises AudioError for anything else.
    """
    chunks = _chunks(_read_source(source))
    tag, channels, rate, bits = _parse_fmt(chunks[b"fmt "])
    return _decode(chunks[b"data"], tag, channels, bits), rate


# ---------------------------------------------------------------------------------------------
# Writing


def wav_header(rate: int, frames: int | None, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV; frames=None writes the streaming sizes (0xFFFFFFFF), which
    players read as "until the end of the stream"."""
    data = 0xFFFFFFFF if frames is None else frames * channels * 2
    riff = 0xFFFFFFFF if frames is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, WAVE_FORMAT_PCM, channels, rate, rate * channels * 2, channels * 2, 16) +
            b"data" + struct.pack("<I", data))


def pcm16(samples) -> bytes:  # (W,) float in [-1, 1] -> little-endian int16 bytes
    """Samples as 16-bit PCM: clipped to [-1, 1], scaled by 32767 and rounded to nearest."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError(f"samples must be a finite 1-D array, got shape {x.shape}")
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def write_wav(path, samples, rate: int) -> Path:
    """A mono 16-bit PCM WAV, written atomically (pyclvp/io/atomic.py: a reader never sees half a file). Returns
    the path."""
    body = pcm16(samples)
    return write_atomic(path, wav_header(rate, len(body) // 2) + body)
