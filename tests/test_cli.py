"""The `pyclvp` command as a new user meets it: defaults, the demo's cache, errors (a few lines, flags and files
named as typed, Ctrl-C), output files written as named and atomically, and the pictures (decoded here)."""
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from pyclvp import cli
from pyclvp.cli import main

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny_a"
MULAW = DATA / "malformed_wav" / "mulaw.wav"


def _err_lines(capsys, most=3):
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert 1 <= len(lines) <= most, captured.err
    return captured.out, captured.err


@pytest.fixture
def clip(tmp_path):
    from pyclvp.demo import write_voice_clip

    return write_voice_clip(tmp_path / "v.wav", seconds=0.5)


def read_png(path):  # -> (H, W, 3) uint8, with zlib and struct only (filter type 0 rows, as write_png writes)
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 3 * width)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, 3)


# ----------------------------------------------------------------------------------------------
# --backend auto


@pytest.mark.parametrize("command", ["rank", "tts", "demo"])
def test_help_lists_the_backends_and_auto_is_the_default(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--backend {auto,numpy,cpu,cuda}" in text and "auto (the default): cuda when" in text
    assert "else cpu, else numpy" in text and "readable reference" in text


def test_auto_resolves_in_one_place(monkeypatch):
    from pyclvp.model import ClvpModelForConditionalGeneration
    from pyclvp.ops import BACKENDS, get_ops, resolve_backend

    assert resolve_backend("numpy") == "numpy" and resolve_backend("cpu") == "cpu"
    assert resolve_backend("auto") in BACKENDS and get_ops("auto").name == resolve_backend("auto")
    cuda_ops = pytest.importorskip("pyclvp.ops.cuda_ops")
    monkeypatch.setattr(cuda_ops, "cuda_unavailable_reason", lambda: "no GPU (test)")
    assert resolve_backend() == "cpu"
    model = ClvpModelForConditionalGeneration.from_pretrained(TINY, backend="auto")
    assert model.ops.name == "cpu"
    with pytest.raises(ValueError, match="choose one of auto, numpy, cpu, cuda"):
        get_ops("gpu")


# ----------------------------------------------------------------------------------------------
# The demo


def test_demo_keeps_its_model_in_the_cache_and_its_command_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["demo", "--candidates", "2", "--max-new-tokens", "5", "--wav", str(tmp_path / "d.wav")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "cache" / "pyclvp" / "demo"
    assert f"wrote the demo model and voice clip in {folder}" in out
    assert sorted(p.name for p in folder.parent.iterdir()) == ["demo"]  # no temporary folder left
    command = next(line for line in out.splitlines() if line.startswith("$ pyclvp rank "))
    assert main(shlex.split(command)[2:]) == 0  # what it printed runs afterwards
    assert "1  " in capsys.readouterr().out
    assert main(argv) == 0
    assert f"reusing the demo model and voice clip in {folder}" in capsys.readouterr().out


def test_demo_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.demo_cache_folder() == tmp_path / "pyclvp" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.demo_cache_folder() == tmp_path / "home" / ".cache" / "pyclvp" / "demo"


@pytest.mark.parametrize("argv, words", [(["--candidates", "0"], "--candidates must be at least 1, got 0"),
                                         (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0")])
def test_demo_checks_arguments_before_the_banner(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["demo"] + argv) == 2
    out, err = _err_lines(capsys, most=1)
    assert out == "" and err == f"pyclvp demo: error: {words}\n"
    assert not (tmp_path / "pyclvp").exists()


def test_demo_cuda_unavailable_is_one_line_without_banner(tmp_path, monkeypatch, capsys):
    cuda_ops = pytest.importorskip("pyclvp.ops.cuda_ops")
    monkeypatch.setattr(cuda_ops, "cuda_unavailable_reason", lambda: "no GPU here (test)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["demo", "--backend", "cuda"]) == 2
    out, err = _err_lines(capsys, most=1)
    assert out == "" and err == "pyclvp demo: error: backend 'cuda' is unavailable: no GPU here (test)\n"


# ----------------------------------------------------------------------------------------------
# Errors


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "pyclvp", "demo", "--backend", "numpy", "--candidates", "64",
                             "--max-new-tokens", "250", "--wav", str(tmp_path / "d.wav")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # the work has started once the rank command is printed
            if line.startswith("$ pyclvp rank"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == "pyclvp demo: interrupted\n"


def test_keyboard_interrupt_in_process(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_tokenize", interrupted)
    assert main(["tokenize", "x"]) == 130
    assert capsys.readouterr().err == "pyclvp tokenize: interrupted\n"


def test_audio_errors_name_the_file_and_the_flag(tmp_path, clip, capsys):
    silent = tmp_path / "silent.wav"
    from pyclvp.io.wav import write_wav

    write_wav(silent, np.zeros(11025, np.float32), 22050)
    base = ["rank", "--model", str(TINY), "--text", "Hi.", "--candidates", "2", "--max-new-tokens", "4"]
    assert main(base + ["--voice", str(clip), "--voice", str(MULAW)]) == 2
    _, err = _err_lines(capsys, most=1)
    assert f"--voice {MULAW}:" in err and "mu-law" in err
    assert main(base + ["--voice", str(clip), "--voice", str(silent)]) == 2
    _, err = _err_lines(capsys, most=1)
    assert f"--voice {silent} is empty or silent" in err
    assert main(base + ["--voice", str(tmp_path)]) == 2
    _, err = _err_lines(capsys, most=1)
    assert err == f"pyclvp rank: error: --voice {tmp_path} is a folder, not a WAV file\n"
    assert main(base + ["--voice", str(tmp_path / "nope.wav")]) == 2
    _, err = _err_lines(capsys, most=1)
    assert f"--voice {tmp_path / 'nope.wav'}: no such file or directory" in err


def test_silent_clip_as_arrays_is_named_by_position(clip):
    from pyclvp.audio import load_audio
    from pyclvp.model import ClvpModelForConditionalGeneration
    from pyclvp.rank import rank

    model = ClvpModelForConditionalGeneration.from_pretrained(TINY, backend="numpy")
    with pytest.raises(ValueError, match="voice clip 2 of 2 is empty or silent"):
        rank(model, "Hi.", [load_audio(clip), np.zeros(4000, np.float32)], num_candidates=1, max_new_tokens=2)


@pytest.mark.parametrize("command", ["info", "rank", "tts"])
def test_one_wording_for_a_missing_model_folder_and_for_a_file(command, tmp_path, clip, capsys):
    def run(model):
        extra = [] if command == "info" else ["--text", "Hi.", "--voice", str(clip)]
        extra += ["-o", str(tmp_path / "o.wav")] if command == "tts" else []
        return main([command, str(model)] + extra if command == "info" else [command, "--model", str(model)] + extra)

    assert run(tmp_path / "none") == 2
    _, err = _err_lines(capsys, most=1)
    assert err == (f"pyclvp {command}: error: model folder {tmp_path / 'none'} does not exist "
                   f"(expected config.json + model.safetensors)\n")
    assert run(clip) == 2
    _, err = _err_lines(capsys, most=1)
    assert f"model folder {clip} is a file, not a folder" in err


@pytest.mark.parametrize("argv, words", [
    (["rank", "--candidates", "0"], "--candidates must be at least 1"),
    (["rank", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["tts", "--candidates", "0", "-o", "x.wav"], "--candidates must be at least 1"),
])
def test_flags_are_named_as_typed(argv, words, clip, capsys):
    assert main(argv[:1] + ["--model", str(TINY), "--text", "Hi.", "--voice", str(clip)] + argv[1:]) == 2
    _, err = _err_lines(capsys, most=1)
    assert words in err and "num_" not in err and "max_new_tokens" not in err


def test_parameter_names_in_deeper_errors_become_flags():
    args = cli.argparse.Namespace(voice=["a.wav", "b.wav"])
    assert cli._as_typed("num_candidates must be >= 1; max_new_tokens too", args) == \
        "--candidates must be >= 1; --max-new-tokens too"
    assert cli._as_typed("voice clip 2 of 2 is silent", args) == "--voice b.wav is silent"
    long = cli._as_typed("\n".join(f"line {i}" for i in range(50)), args).splitlines()
    assert len(long) == cli.ERROR_LINES and long[-1] == "  ... and 45 more lines"


@pytest.mark.parametrize("config", [{"foo": 1}, {"model_type": "gpt2", "n_layer": 12}])
def test_unrecognised_config_is_one_line(config, tmp_path, clip, capsys):
    from pyclvp.io.safetensors import save_file

    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"x": np.zeros(2, np.float32)}, tmp_path / "model.safetensors")
    assert main(["info", str(tmp_path)]) == 2
    _, err = _err_lines(capsys, most=1)
    assert "config.json is" in err and ("not a ClvpConfig" in err or "'gpt2' configuration" in err)
    assert main(["rank", "--model", str(tmp_path), "--text", "Hi.", "--voice", str(clip)]) == 2
    _err_lines(capsys, most=1)


def test_a_checkpoint_missing_every_tensor_is_a_few_lines(tmp_path, clip, capsys):
    from pyclvp.io.safetensors import save_file

    (tmp_path / "config.json").write_bytes((TINY / "config.json").read_bytes())
    save_file({"not_a_clvp_tensor": np.zeros(3, np.float32)}, tmp_path / "model.safetensors")
    assert main(["rank", "--model", str(tmp_path), "--text", "Hi.", "--voice", str(clip)]) == 2
    _, err = _err_lines(capsys, most=4)
    assert "missing: logit_scale, " in err and "more" in err and "1 unexpected: not_a_clvp_tensor" in err


def test_warnings_print_as_one_line_without_paths(monkeypatch, capsys):
    def warn(args):
        warnings.warn("something odd", UserWarning)

    monkeypatch.setattr(cli, "_cmd_tokenize", warn)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["tokenize", "x"]) == 0
    assert capsys.readouterr().err == "pyclvp tokenize: warning: something odd\n"
    assert warnings.showwarning is shown  # put back: only the CLI's commands print warnings so


# ----------------------------------------------------------------------------------------------
# Output


def test_rank_top_and_legend(clip, capsys):
    argv = ["rank", "--model", str(TINY), "--text", "Hi there.", "--voice", str(clip), "--candidates", "5",
            "--max-new-tokens", "4", "--seed", "0", "--backend", "numpy"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "5 candidates, best first" in lines[0] and "--top" not in lines[0] and len(lines) == 3 + 5
    assert main(argv + ["--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(the top 2; --top 0 for all)" in lines[0] and len(lines) == 3 + 2
    assert [line.split()[0] for line in lines[3:]] == ["1", "2"]
    assert lines[1] == cli.RANK_LEGEND and "speech tokens before the stop token" in lines[1]
    assert main(argv + ["--top", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3 + 5


def test_mel_writes_exactly_the_path_given(tmp_path, clip, capsys):
    assert main(["mel", str(clip), "-o", str(tmp_path / "feats.bin")]) == 0
    out = capsys.readouterr().out
    assert np.load(tmp_path / "feats.bin").shape == (80, 517) and not (tmp_path / "feats.bin.npy").exists()
    assert "padded with silence from 0.50 s to 6.00 s" in out and ".npy added" not in out
    assert main(["mel", str(clip), "-o", str(tmp_path / "feats"), "--full"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "feats.npy").is_file() and ".npy added: the name had no suffix" in out
    assert "padded" not in out and "cut" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.bin", "feats.npy", "v.wav"]  # no temp files


def test_mel_says_when_it_cut(tmp_path, capsys):
    from pyclvp.demo import write_voice_clip

    long = write_voice_clip(tmp_path / "long.wav", seconds=7.0)
    assert main(["mel", str(long), "-o", str(tmp_path / "m.npy")]) == 0
    assert "cut to the first 6.00 s of 7.00 s" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--png", "--plot"])
def test_pictures_must_be_png(flag, tmp_path, clip, capsys):
    argv = (["mel", str(clip), "-o", str(tmp_path / "m.npy")] if flag == "--png" else
            ["rank", "--model", str(TINY), "--text", "Hi.", "--voice", str(clip)])
    assert main(argv + [flag, str(tmp_path / "p.jpg")]) == 2
    _, err = _err_lines(capsys, most=1)
    assert f"{flag} {tmp_path / 'p.jpg'}: the picture is a PNG" in err
    assert not (tmp_path / "m.npy").exists() and not (tmp_path / "p.jpg").exists()


def test_write_atomic_replaces_and_cleans_up(tmp_path):
    from pyclvp.io.files import write_atomic

    target, other = tmp_path / "a.npy", tmp_path / "other"
    other.write_bytes(b"keep")
    target.symlink_to(other)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and not target.is_symlink() and other.read_bytes() == b"keep"
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "b", "not bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "other"]


# ----------------------------------------------------------------------------------------------
# Pictures

DARK = np.array([68, 1, 84])      # viridis at 0: the colour bar's bottom
BRIGHT = np.array([253, 231, 37])  # viridis at 1: its top


def test_nice_ticks_and_font():
    from pyclvp.png import nice_ticks, text_mask

    assert nice_ticks(0, 6, 6) == [0, 1, 2, 3, 4, 5, 6]
    assert nice_ticks(0, 80, 5) == [0, 20, 40, 60, 80]
    assert nice_ticks(-11.5, 3.2, 5) == [-10, -8, -6, -4, -2, 0, 2]
    assert nice_ticks(-3.05, -1.6, 5) == [-3.0, -2.8, -2.6, -2.4, -2.2, -2.0, -1.8, -1.6]
    one = text_mask("1")
    assert one.shape == (7, 5) and one[:, 2].all() and one.sum() == 7 + 1 + 2  # stem, flag, foot
    assert text_mask("ab", scale=2).shape == (14, 22)


def test_mel_png_axes_and_colour_bar(tmp_path, clip, capsys):
    from pyclvp.png import BAR_GAP, BAR_WIDTH, MEL_LEFT, MEL_TOP

    assert main(["mel", str(clip), "-o", str(tmp_path / "m.npy"), "--png", str(tmp_path / "m.png")]) == 0
    img = read_png(tmp_path / "m.png").astype(int)
    top, left, bottom, right = MEL_TOP, MEL_LEFT, MEL_TOP + 240, MEL_LEFT + 517
    assert (img[top:bottom, left - 1] == 0).all()          # the y axis, left of the spectrogram
    assert (img[bottom, left - 1:right + 1] == 0).all()    # the x axis, below it
    assert (img[bottom + 1:bottom + 4, left] == 0).all()   # the tick at 0 s
    assert (img[bottom + 6:bottom + 13, left - 10:left + 10] == 0).any()  # its label "0"
    assert (img[top:bottom, left - 30:left - 5] == 0).any()  # the mel band values
    assert (img[:MEL_TOP - 6, left:right] == 0).any() and (img[:MEL_TOP - 6, :left] == 255).all()  # a title only above
    x = right + BAR_GAP + BAR_WIDTH // 2
    assert np.abs(img[top, x] - BRIGHT).max() <= 2 and np.abs(img[bottom - 1, x] - DARK).max() <= 2
    assert (np.diff(img[top:bottom, x, 1]) <= 0).all()  # a gradient, bright (top) to dark (bottom)
    assert (img[top:bottom, right + BAR_GAP + BAR_WIDTH + 6:] == 0).any()  # the bar's values
    spec = img[top:bottom, left:right]
    assert not (spec == 255).all(axis=-1).any()  # the data area is all colour map


def test_rank_plot_marks_the_best(tmp_path, clip, capsys):
    from pyclvp.png import BLUE, RED, SCORES_BOX, SCORES_SIZE

    argv = ["rank", "--model", str(TINY), "--text", "Hi there.", "--voice", str(clip), "--candidates", "6",
            "--max-new-tokens", "8", "--seed", "1", "--plot", str(tmp_path / "s.png"), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["candidates"]
    img = read_png(tmp_path / "s.png")
    assert img.shape == (*SCORES_SIZE, 3)
    top, left, bottom, right = SCORES_BOX
    assert (img[top:bottom, left - 1] == 0).all() and (img[bottom, left - 1:right + 1] == 0).all()
    red = np.argwhere((img == RED).all(axis=-1))
    blue = np.argwhere((img == BLUE).all(axis=-1))
    assert len(red) > 25 and len(blue) >= 25  # the best's dot, ring and label; the others' dots (some overlap)
    dot = red[(red[:, 0] >= top) & (red[:, 1] < right)]
    ys = [y for y, x in dot]
    assert min(ys) < top + (bottom - top) * 0.2  # the best is the highest point (10% margin above it)
    assert rows[0]["score"] == max(r["score"] for r in rows)
