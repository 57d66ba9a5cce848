"""The hostile-input catalogue, run as a user would: each case is a fresh folder, a command (``mambaesr-run``, and
for their own items ``mambaesr-monitor``, ``mambaesr-export``, ``mambaesr-eval`` and ``scripts/download_datasets.py``)
in a subprocess, and checks of what it left. Cases from issue 14's "already passes" list and from its failures alike; every fixture is made here, on
the fly (bombs are a few bytes of header or a compressed PNG built row by row), nothing is stored.

Per case: the exit code (against the expected one), the command's peak RSS (``wait4`` rusage taken by a small
launcher, so the figure is the command's own maximum resident set, model and ONNX Runtime included), the wall
time, and the files left behind (anything new in the case folder other than the outputs the case expects). A case
passes when the exit code is the expected one, nothing else is left behind, its own checks hold (outputs written,
victims untouched, the message names the file), and for the decompression bombs the peak RSS stays under 200 MB.
Prints the table and writes benchmarks/results/bad_inputs.md (+ .json); exit 1 if any row fails.

    python benchmarks/bad_inputs.py [--only SUBSTRING] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import hostile

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
BOMB_RSS_MB = 200


@dataclass
class Case:
    name: str
    kind: str  # "old" (issue 14's already-passing list), "new" (its failures), "video" (issue 20's video cases) or
    # "24" (issue 24's: signals, closed streams, early argument checks; lost data, folders, late refusals)
    setup: object  # setup(folder) -> (argv, expected outputs (names relative to folder), checks)
    expect: int
    bomb: bool = False
    timeout: float = 120.0
    interrupt_after: str | None = None  # send ``signal`` once a file matching this (a glob) appears
    interrupt_signal: int = signal.SIGINT
    env: dict | None = None  # extra environment for the command


@dataclass
class Result:
    case: Case
    code: int | None
    rss_mb: float
    seconds: float
    left: list[str]
    problems: list[str] = field(default_factory=list)
    message: str = ""
    stdout: str = ""
    stderr: str = ""


def img(path: Path, shape=(20, 24, 3), dtype=np.uint8, value=90) -> Path:
    array = np.full(shape, value, dtype)
    array[::3] = value // 2  # a little structure
    cv2.imwrite(str(path), array)
    return path


# A child's ru_maxrss starts at the peak of the process that forked it (Linux carries the high-water mark across
# fork and exec), so the command is started by this small launcher, whose own peak is ~10 MB, and the launcher
# reports the command's wait4 rusage on the pipe named by its first argument. It ignores SIGINT, SIGTERM and SIGHUP
# itself (the command gets them from the process group) and gives the command their defaults back (a benchmark
# started as a background job inherits SIGINT ignored, and the interruption cases would then test nothing).
LAUNCHER = """
import os, signal, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a background job starts with SIGINT ignored
        signal.signal(sig, signal.SIG_DFL)  # (and nohup with SIGHUP); exec keeps that
    os.execvp(sys.argv[2], sys.argv[2:])
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


def run_cmd(argv: list[str], cwd: Path, timeout: float, interrupt_after: str | None = None,
            extra_env: dict | None = None, sig: int = signal.SIGINT):
    """(exit code, peak RSS MB of the command itself, seconds, stdout, stderr). ``interrupt_after``: a glob under
    ``cwd``; ``sig`` (SIGINT) goes to the command once a file matches it."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - the child writes them; closed below
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(write_fd), *argv], cwd=cwd, stdout=out, stderr=err,
                            env=env, stdin=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    stop = threading.Event()

    def watchdog():
        waited = 0.0
        while not stop.wait(0.05):
            waited += 0.05
            if interrupt_after is not None and _appeared(cwd, interrupt_after):
                os.killpg(proc.pid, sig)
                return
            if waited > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                return

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    code = proc.wait()
    stop.set()
    seconds = time.perf_counter() - start
    with os.fdopen(read_fd, "rb") as fh:
        reported = fh.read().decode() or "0"
    out.seek(0)
    err.seek(0)
    return code, int(reported) / 1024, seconds, out.read().decode(errors="replace"), err.read().decode(
        errors="replace")


def _appeared(folder: Path, pattern: str) -> bool:
    if not any(c in pattern for c in "*?["):
        return (folder / pattern).exists()
    try:
        return any(folder.glob(pattern))
    except OSError:  # a temporary file vanished while the folder was listed
        return False


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


# -- the catalogue -------------------------------------------------------------------------------------------------
RUN = [str(BIN / "mambaesr-run")]


def single(make, expect_words: str | None = None, extra: list[str] = (), out: str | None = None):
    """Upscale one made-up input; ``make(folder) -> path``; the output (if any) must be ``out``."""
    def setup(folder: Path):
        src = make(folder)
        argv = RUN + [str(src), "-q", *extra]
        checks = [lambda res: expect_words is None or expect_words in res.message or
                  f"message lacks {expect_words!r}"]
        return argv, [out] if out else [], checks
    return setup


def write(name: str, data: bytes):
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def good(name: str, shape=(20, 24, 3), dtype=np.uint8):
    return lambda folder: img(folder / name, shape, dtype)


def checks_output(out: str, shape: tuple, dtype=np.uint8):
    def check(folder: Path):
        got = cv2.imread(str(folder / out), cv2.IMREAD_UNCHANGED)
        if got is None or got.shape != shape or got.dtype != dtype:
            return f"{out}: {None if got is None else (got.shape, got.dtype)}, expected {shape} {dtype.__name__}"
        return True
    return check


def with_files(files: dict, setup):
    """Write ``files`` (name -> bytes) into the case folder, then run ``setup``."""
    def wrapped(folder: Path):
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return setup(folder)
    return wrapped


def link(name: str, target: str, words: str):
    def setup(folder: Path):
        (folder / name).symlink_to(target)
        return single(lambda f: f / name, words)(folder)
    return setup


def folder_run(words: str):
    """A folder of six 120x120 images to interrupt (``interrupt_after`` its first output); the message must say
    ``words``."""
    def make(folder):
        src = folder / "in"
        src.mkdir()
        for i in range(6):
            img(src / f"f{i}.png", (120, 120, 3))
        return RUN + [str(src), "-o", str(folder / "out"), "-q"], None, [
            lambda res: words in res.message or f"no {words!r} message"]
    return make


def catalogue() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # --- old: the cases issue 14 found passing --------------------------------------------------------------
    add(Case("empty file", "old", single(write("empty.png", b""), "empty.png: the file is empty"), 2))
    add(Case("text file named .png", "old", single(write("text.png", b"hello\n"), "text.png: not a readable"), 2))
    png = cv2.imencode(".png", np.full((20, 20, 3), 7, np.uint8))[1].tobytes()
    add(Case("truncated PNG", "old", single(write("cut.png", png[:len(png) - 20]), "cut.png"), 2))
    add(Case("magic-only PNG", "old", single(write("magic.png", png[:8]), "magic.png"), 2))
    add(Case("16-bit RGB PNG", "old", single(good("d16.png", (20, 24, 3), np.uint16), out="d16_x4.png"), 0))
    add(Case("gray PNG", "old", single(good("gray.png", (20, 24)), out="gray_x4.png"), 0))
    add(Case("RGBA PNG", "old", single(good("rgba.png", (20, 24, 4)), out="rgba_x4.png"), 0))
    add(Case("1x1 image", "old", single(good("one.png", (1, 1, 3)), out="one_x4.png"), 0))
    add(Case("1xN image", "old", single(good("line.png", (1, 37, 3)), out="line_x4.png"), 0))
    add(Case("output = input", "old", single(good("same.png"), "is the input itself",
                                             ["-o", "same.png", "--overwrite"]), 2))

    def symlinked_output(folder):
        src = img(folder / "src.png")
        (folder / "link.png").symlink_to(src)
        return RUN + [str(src), "-o", str(folder / "link.png"), "--overwrite", "-q"], [], [
            lambda res: "is the input itself" in res.message or "not refused as the input"]
    add(Case("output is a symlink to the input", "old", symlinked_output, 2))
    for label, name in (("name with spaces", "a b c.png"), ("unicode name", "ünï cödé 图.png"),
                        ("name with $(...)", "$(touch pwned).png")):
        add(Case(label, "old", single(good(name), out=name[:-4] + "_x4.png"), 0))

    add(Case("SIGINT in a folder run", "old", folder_run("interrupted"), 130, interrupt_after="out/f0.png"))
    add(Case("corrupt ONNX", "old", with_files({"bad.onnx": b"\x08\x07garbage" * 50}, single(
        good("in.png"), "cannot load", ["--model", "bad.onnx"])), 2))
    # Refused as "dynamic shapes" until dynamic-shape super-resolution models became supported (any ONNX with
    # dynamic height and width, its scale found by a probe run): an identity graph now runs as x1.
    add(Case("dynamic-shape ONNX (identity: runs as x1)", "old", lambda f: (single(
        good("in.png"), None, ["--model", str(dynamic_onnx(f))], out="in_x1.png")(f)), 0))
    add(Case("plan without manifest", "old", with_files({"engine.plan": b"\x00" * 1000}, single(
        good("in.png"), "manifest", ["--model", "engine.plan"])), 2))
    add(Case("truncated safetensors", "old", torch_model_case("truncated or not a safetensors file",
                                                              lambda w, m: w.write_bytes(w.read_bytes()[:100])), 2))
    add(Case("pickle renamed .safetensors", "old", pickle_case(".safetensors"), 2))
    add(Case("pickle renamed .pt", "old", pickle_case(".pt"), 2))
    add(Case("profile with an unknown key", "old", profile_case("unknown keys", "colour: blue\n"), 2))
    add(Case("profile with !!python/object", "old",
             profile_case("not valid YAML", "x: !!python/object/apply:os.system ['touch pwned']\n"), 2))
    for flag, value, words in (("--tile", "7", "tile"), ("--overlap", "-3", "overlap"),
                               ("--scale", "3", "no student_x3_t264_b1.onnx"),
                               ("--device", "toaster", "unknown device")):
        add(Case(f"bad {flag} {value}", "old", single(good("in.png"), words, [flag, value]), 2))

    def bad_trace(folder):
        (folder / "trace.json").write_text("{not json")
        return single(good("in.png"), "trace", ["--replay", str(folder / "trace.json")])(folder)
    add(Case("malformed replay trace", "old", bad_trace, 2))

    # --- new: issue 14's failures ----------------------------------------------------------------------------
    for name, data in hostile.header_bombs().items():
        add(Case(f"header bomb {name.split('_')[1].upper()} ({len(data)} bytes)", "new",
                 single(write(name, data), f"{name}: a "), 2, bomb=True))
    add(Case("GIF header bomb 65535x65535", "new",
             single(write("bomb.gif", hostile.gif_header(65535, 65535)), "bomb.gif: a 65535x65535"), 2, bomb=True))
    add(Case("8000x8000 gray PNG bomb (62 KB)", "new",
             single(write("bomb8k.png", hostile.png_bomb(8000, 8000)), "bomb8k.png: a 8000x8000"), 2, bomb=True))
    add(Case("30000x30000 gray PNG bomb (875 KB)", "new",
             single(write("bomb30k.png", BOMB30K), "bomb30k.png: a 30000x30000"), 2, bomb=True))
    add(Case("bomb with --max-megapixels 1e9 (OpenCV's own limit)", "new",
             single(write("hdr.png", hostile.png_header(65535, 65535)), "hdr.png",
                    ["--max-megapixels", "1e9", "--max-memory", "1e9"]), 2, bomb=True))

    def folder_with_bomb(folder):
        src = folder / "in"
        src.mkdir()
        img(src / "a.png")
        (src / "b.png").write_bytes(hostile.png_header(65535, 65535))
        img(src / "c.png")
        return RUN + [str(src), "-o", str(folder / "out"), "-q"], ["out/a.png", "out/c.png"], [
            lambda res: "b.png: a 65535x65535" in res.message or "bomb not named"]
    add(Case("folder: good, header bomb, good", "new", folder_with_bomb, 1))  # upscales two files: no bomb bar

    def folder_with_loop(folder):
        src = folder / "in"
        src.mkdir()
        img(src / "a.png")
        (src / "l1.png").symlink_to(src / "l2.png")
        (src / "l2.png").symlink_to(src / "l1.png")
        return RUN + [str(src), "-o", str(folder / "out"), "-q"], ["out/a.png"], [
            lambda res: "loop of symbolic links" in res.message or "loop not named"]
    add(Case("folder with a symlink loop", "new", folder_with_loop, 1))

    def fifo(folder):
        os.mkfifo(folder / "pipe.png")
        return RUN + [str(folder / "pipe.png"), "-q"], [], [
            lambda res: "not a regular file" in res.message or "FIFO not refused"]
    add(Case("FIFO named .png", "new", fifo, 2, timeout=20))
    add(Case("link to /dev/zero named .png", "new", link("zero.png", "/dev/zero", "not a regular file"), 2,
             timeout=20))
    add(Case("checkpoint config embed_dim 1000000", "new",
             torch_model_case("embed_dim 1000000 (limit", lambda w, m: edit_config(m, embed_dim=1000000)), 2))
    add(Case("checkpoint config num_blocks 1000000", "new",
             torch_model_case("num_blocks 1000000 (limit", lambda w, m: edit_config(m, num_blocks=1000000)), 2))
    add(Case("checkpoint config not fitting its weights", "new",
             torch_model_case("do not fit its config", lambda w, m: edit_config(m, embed_dim=64)), 2))
    add(Case("ONNX whose output is NaN", "new", lambda f: single(
        good("in.png"), "came out with NaN", ["--model", str(hostile.onnx_graph(f / "nan.onnx", "nan", 16)),
                                               "--overlap", "4"])(f), 2))
    for out_name, words, dtype, shape in (
            ("missing/x.png", "does not exist", np.uint8, (20, 24, 3)),
            ("/proc/x.png", "is not writable", np.uint8, (20, 24, 3)),
            ("x.xyz", "cannot write .xyz", np.uint8, (20, 24, 3)),
            ("x.gif", "cannot write .gif", np.uint8, (20, 24, 3)),
            ("noext", "without an extension", np.uint8, (20, 24, 3)),
            ("x.jpg", "cannot hold 16-bit", np.uint16, (20, 24, 3)),
            ("rgba.jpg", "has no alpha channel", np.uint8, (20, 24, 4))):
        add(Case(f"output {out_name}" + (" (16-bit input)" if dtype == np.uint16 else ""), "new",
                 single(good("in.png", shape, dtype), words, ["-o", out_name]), 2))
    add(Case("--model 2-D-input ONNX", "new", lambda f: single(
        good("in.png"), "a MambaESR engine maps", ["--model", str(hostile.onnx_graph(f / "2d.onnx", "two_d"))])(f), 2))
    add(Case("--model shrinking ONNX with --scale 0", "new", lambda f: single(
        good("in.png"), "--scale must be a positive", ["--model", str(hostile.onnx_graph(f / "s.onnx", "shrink")),
                                                       "--scale", "0"])(f), 2))
    add(Case("--model shrinking ONNX", "new", lambda f: single(
        good("in.png"), "not an integer upscale", ["--model", str(hostile.onnx_graph(f / "s.onnx", "shrink"))])(f), 2))
    for flag, value, words in (("--threads", "100000", "threads must be"), ("--threads", "-1", "threads must be"),
                               ("--max-megapixels", "nan", "positive number"),
                               ("--max-megapixels", "-5", "positive number"), ("--scale", "0", "--scale must be")):
        add(Case(f"{flag} {value}", "new", single(good("in.png"), words, [flag, value]), 2))

    def monitor_record(folder):
        return [str(BIN / "mambaesr-monitor"), "--source", "psutil", "--count", "2", "--record", "/proc/r.json"], \
            [], [lambda res: "cannot create files in /proc" in res.message or "not refused up front"]
    add(Case("mambaesr-monitor --record /proc/r.json", "new", monitor_record, 2))
    for label, name, words in (("float32 TIFF", "float.tif", "float.tif: 32-bit floating-point"),
                               ("multi-page TIFF", "pages.tif", "pages.tif: a multi-page TIFF (3 pages)"),
                               ("animated GIF", "anim.gif", "anim.gif: an animated GIF (2 frames)")):
        maker = {"float.tif": hostile.float_tiff, "pages.tif": hostile.multipage_tiff,
                 "anim.gif": hostile.animated_gif}[name]
        add(Case(label, "new", single(lambda f, maker=maker, name=name: maker(f / name), words), 2))
    add(Case("animated PNG", "new", single(write("anim.png", hostile.apng(3)), "anim.png: an animated PNG"), 2))

    def gray_alpha(folder):
        src = hostile.gray_alpha_png(folder / "ga.png", 8, (20, 24))
        return RUN + [str(src), "-q"], ["ga_x4.png"], [
            lambda res: (hostile_png_color(folder / "ga_x4.png") == 4) or "output is not gray+alpha"]
    add(Case("gray+alpha PNG keeps its kind", "new", gray_alpha, 0))

    def twice(folder):
        img(folder / "a.png")
        first = run_cmd(RUN + [str(folder), "-q"], folder, 60)
        return RUN + [str(folder), "-q", "--overwrite"], ["a_x4.png"], [
            lambda res: first[0] == 0 or f"first run exit {first[0]}",
            lambda res: "skipped" in res.message or "own output not skipped"]
    add(Case("second run without -o", "new", twice, 0))

    def swapped(folder):
        weights = folder / "weights"
        shutil.copytree(ROOT / "mambaesr_runtime" / "weights", weights,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.md"))
        shutil.copyfile(weights / "fast_x4_t264_b1.onnx", weights / "student_x4_t264_b1.onnx")
        src = img(folder / "in.png")
        return RUN + [str(src), "--model", str(weights / "student_x4_t264_b1.onnx"), "-q"], \
            [], [lambda res: "was replaced or damaged" in res.message or "swap not refused"]
    add(Case("shipped-name ONNX with another graph", "new", swapped, 2))
    add(Case("YAML alias bomb profile", "new", profile_case("anchors and aliases", "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]) + "\n"), 2))
    add(Case("oversized profile (100 KB)", "new", profile_case("a profile is at most", "# pad\n" * 17000), 2))
    cases += downloader_cases()
    cases += video_cases()
    cases += issue24_cases()
    cases += issue24_part2_cases()
    return cases


# -- issue 24: signals, closed streams, early argument checks ------------------------------------------------------
def issue24_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # Streams taken away: the reader of stdout gone before the first line (| head -0), stderr closed at start.
    reader_gone = [sys.executable, "-c", "import os, subprocess, sys; r, w = os.pipe(); os.close(r); "
                                         "sys.exit(subprocess.call(sys.argv[1:], stdout=w))"]

    def two_images(wrap, names=("a.png", "b.png"), checks=()):
        def setup(folder):
            src = folder / "in"
            src.mkdir()
            for name in names:
                img(src / name)
            (src / "bad.png").write_bytes(b"")
            return wrap + RUN + [str(src), "-o", str(folder / "out"), "-q"], [f"out/{n}" for n in names], [
                lambda res: "Traceback" not in res.message + res.stdout or "a traceback", *checks]
        return setup
    add(Case("stdout reader gone (| head -0), one bad file", "24", two_images(reader_gone), 1))
    add(Case("stderr closed (2>&-), one bad file", "24", two_images(["sh", "-c", 'exec "$@" 2>&-', "sh"], checks=[
        lambda res: "error" not in res.stdout or f"error lines on stdout: {res.stdout[:200]!r}"]), 1))

    def not_utf8(folder):
        img(folder / "a.png")
        os.rename(folder / "a.png", os.fsencode(folder) + b"/\xff.png")
        return RUN + [str(folder), "-q"], [os.fsdecode(b"\xff_x4.png")], []
    add(Case("file name not UTF-8 (b'\\xff.png'), strict stdout", "24", not_utf8, 0,
             env={"PYTHONIOENCODING": "utf-8"}))
    # Arguments refused before any decode or model load, naming the accepted forms.
    for camera in ("+0", " 0"):
        add(Case(f"--camera {camera!r}", "24", lambda folder, camera=camera: (
            RUN + ["--camera", camera, "-o", str(folder / "cam.mp4"), "-q"], [],
            [lambda res: "written as digits" in res.message or "accepted forms not named"]), 2))
    add(Case("--engines /nonexistent", "24", single(good("in.png"), "--engines /nonexistent: no such folder",
                                                    ["--engines", "/nonexistent"]), 2))
    add(Case("MAMBAESR_ENGINES pointing at a file", "24", with_files({"engines.txt": b"x"}, single(
        good("in.png"), "MAMBAESR_ENGINES=engines.txt is a file, not a folder")), 2,
        env={"MAMBAESR_ENGINES": "engines.txt"}))
    add(Case("--model fp32 .onnx --precision fp16", "24", single(
        good("in.png"), "is an fp32 engine (its manifest says so)",
        ["--model", str(ROOT / "mambaesr_runtime" / "weights" / "student_x4_t264_b1.onnx"), "--precision", "fp16"]),
        2))
    for interval in ("nan", "inf", "0"):
        add(Case(f"mambaesr-monitor --interval {interval}", "24", lambda folder, interval=interval: (
            [str(BIN / "mambaesr-monitor"), "--telemetry", "psutil", "--count", "2", f"--interval={interval}"], [],
            [lambda res: "--interval must be a finite number of seconds above 0" in res.message or "not refused"]), 2))
    add(Case("mambaesr-export --threads -5", "24", lambda folder: (
        [str(BIN / "mambaesr-export"), "--device", "cpu", "--threads", "-5", "-o", str(folder / "out")], [],
        [lambda res: "--threads must be an integer from 0" in res.message or "not refused up front"]), 2))
    student = str(ROOT / "mambaesr_runtime" / "weights" / "student_x4_t264_b1.onnx")

    def mini_set(folder: Path, lr_size=None) -> Path:
        (folder / "Mini" / "HR").mkdir(parents=True)
        img(folder / "Mini" / "HR" / "a.png", (40, 36, 3))
        if lr_size is not None:
            (folder / "Mini" / "LR_bicubic" / "X4").mkdir(parents=True)
            img(folder / "Mini" / "LR_bicubic" / "X4" / "ax4.png", (*lr_size, 3))
        return folder / "Mini"

    def eval_onto_file(folder):
        (folder / "report.md").write_text("mine\n")
        return [str(BIN / "mambaesr-eval"), student, str(mini_set(folder)), "-o", str(folder / "report.md")], \
            ["report.md"], [lambda res: "is a file, and -o takes a folder" in res.message or "not refused",
                            lambda res: (folder / "report.md").read_text() == "mine\n" or "report.md changed"]
    add(Case("mambaesr-eval -o onto an existing file", "24", eval_onto_file, 2))
    add(Case("mambaesr-eval with an LR not 1/4 of its HR", "24", lambda folder: (
        [str(BIN / "mambaesr-eval"), student, str(mini_set(folder, (12, 9)))], [],
        [lambda res: "ax4.png is 9x12, but its HR" in res.message or "sizes not named"]), 2))
    cases += memory_cases()
    add(Case("SIGTERM in a folder run", "24", folder_run("interrupted by SIGTERM"), 143, interrupt_after="out/f0.png",
             interrupt_signal=signal.SIGTERM))
    add(Case("SIGHUP in a folder run", "24", folder_run("interrupted by SIGHUP"), 129, interrupt_after="out/f0.png",
             interrupt_signal=signal.SIGHUP))
    try:
        import av  # noqa: F401 - the clip is made with PyAV
    except ImportError:
        return cases
    import clips

    def long_video(folder):
        src = clips.make_clip(folder / "long.mp4", pts_ms=[40 * i for i in range(60)])
        return RUN + [str(src), "-o", str(folder / "out.mp4"), "-q"], [], [
            lambda res: "interrupted by SIGTERM" in res.message or "no 'interrupted by SIGTERM' message"]
    add(Case("SIGTERM mid-video", "24", long_video, 143, interrupt_after=".out.mp4.*",
             interrupt_signal=signal.SIGTERM))
    return cases


# -- issue 24, part 2: lost data, folders and names, late refusals, the other CLIs' guards -------------------------
# A command with a prelude: the real CLI, with one library function wrapped so a race lands where it must.
MAIN_RUN = "import sys\nfrom mambaesr_runtime.cli.run import main\nsys.exit(main(sys.argv[1:]))\n"
# Another program creates the destination while this run works (just before it publishes).
CREATE_MEANWHILE = """
from pathlib import Path
from mambaesr_runtime.runtime import avvideo, imageio
real_image, real_video = imageio.atomic_write, avvideo.finish_output
def image(path, write, suffix='.tmp', **kwargs):
    def then_create(tmp):
        write(tmp)
        Path(path).write_bytes(b'created meanwhile')
    return real_image(path, then_create, suffix, **kwargs)
def video(tmp, dst, *a, **k):
    Path(dst).write_bytes(b'created meanwhile')
    return real_video(tmp, dst, *a, **k)
imageio.atomic_write, avvideo.finish_output = image, video
"""
# Another program deletes in/b.png once in/a.png is done.
DELETE_MIDRUN = """
from pathlib import Path
from mambaesr_runtime.runtime.upscaler import Upscaler
real = Upscaler.upscale_file
def and_delete(self, src, *a, **k):
    out = real(self, src, *a, **k)
    if Path(src).name == 'a.png':
        (Path(src).parent / 'b.png').unlink()
    return out
Upscaler.upscale_file = and_delete
"""
# Files cannot grow past argv[1] bytes: every write past it fails as on a full disk (EFBIG), no root needed.
FILE_SIZE_LIMIT = [sys.executable, "-c", "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, "
                   "signal.SIG_IGN); n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
                   "os.execvp(sys.argv[2], sys.argv[2:])"]


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def before_the_model(res) -> bool | str:
    """The refusal came before any inference: loading the engine peaks near 90 MB, running it above 250 MB."""
    return res.rss_mb < 150 or f"peak RSS {res.rss_mb:.0f} MB: the model ran before the refusal"


def nearest(folder: Path) -> list[str]:
    """--model: an x4 nearest-neighbour ONNX graph made in the case folder (the cases are about files, not quality)."""
    return ["--model", str(hostile.onnx_graph(folder / "nearest.onnx", "nearest")), "--overlap", "4"]


def issue24_part2_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # --- lost or replaced data ---
    def created_meanwhile(folder):
        src = img(folder / "in.png")
        return [sys.executable, "-c", CREATE_MEANWHILE + MAIN_RUN, str(src), "-o", str(folder / "out.png"), "-q",
                *nearest(folder)], ["out.png", "nearest.onnx"], [
            lambda res: "out.png appeared while this image was being upscaled" in res.message or "race not named",
            lambda res: _bytes(folder / "out.png") == b"created meanwhile" or "the other file was replaced"]
    add(Case("image destination created during the run (no --overwrite)", "24", created_meanwhile, 2))

    def two_runs(folder):
        src = img(folder / "in.png")
        argv = [str(src), "-o", str(folder / "out.png"), "-q", *nearest(folder)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        held = subprocess.Popen([sys.executable, "-c", hostile.HOLD_IMAGE + MAIN_RUN, *argv], cwd=folder, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list(folder.glob(".out.png.*")) and held.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

        def first_run_lost(res):
            mine = _bytes(folder / "out.png")
            (folder / "go").touch()
            _, err = held.communicate(timeout=120)
            (folder / "go").unlink()
            if held.returncode != 2 or "appeared while this image was being upscaled" not in err:
                return f"the held run: exit {held.returncode}, {err[-200:]!r}"
            if mine is None or _bytes(folder / "out.png") != mine:
                return "the finished run's output was replaced"
            left = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
            return not left or f"the held run left {left}"
        return RUN + argv, ["out.png", "nearest.onnx"], [first_run_lost]
    add(Case("two runs to the same image output: the later fails, nothing replaced", "24", two_runs, 0))

    def long_name(folder):
        src = img(folder / "in.png")
        name = "n" * 243 + ".png"
        return RUN + [str(src), "-o", str(folder / name), "-q", *nearest(folder)], [name, "nearest.onnx"], []
    add(Case("243-byte output name (valid)", "24", long_name, 0))
    add(Case("256-byte output name (never valid)", "24", lambda f: single(
        good("in.png"), "bytes long and this file system takes at most 255", ["-o", "n" * 252 + ".png"])(f), 2))
    for kind in ("cut", "tall"):
        label = "truncated JPEG (EOI appended)" if kind == "cut" else "JPEG whose SOF promises twice its rows"
        add(Case(label, "24", single(write(f"{kind}.jpg", hostile.truncated_jpeg(kind)),
                                     f"{kind}.jpg: the JPEG's image data ends before its last row"), 2))

    # --- folders, names, default suffixes ---
    def folder_of(folder, extra):
        src = folder / "in"
        (src / "sub").mkdir(parents=True)
        img(src / "a.png")
        img(src / "sub" / "b.png")
        for name, data in extra.items():
            (src / name).write_bytes(data)
        return src
    add(Case("folder with a subfolder (said, not silent)", "24", lambda f: (
        RUN + [str(folder_of(f, {})), "-o", str(f / "out"), "-q", *nearest(f)], ["out/a.png", "nearest.onnx"],
        [lambda res: "skipped 1 subfolder (sub)" in res.message or "subfolder not mentioned"]), 0))
    add(Case("folder with ._a.png, .DS_Store, Thumbs.db", "24", lambda f: (
        RUN + [str(folder_of(f, {"._a.png": b"\x00\x05\x16\x07", ".DS_Store": b"Bud1", "Thumbs.db": b"\xd0\xcf"})),
               "-o", str(f / "out"), "-q", *nearest(f)], ["out/a.png", "nearest.onnx"],
        [lambda res: "skipped 3 hidden or system files" in res.message or "hidden files not skipped/said"]), 0))
    add(Case("folder input with -o clip.mp4", "24", lambda f: (
        RUN + [str(folder_of(f, {})), "-o", str(f / "clip.mp4"), "-q", *nearest(f)], ["nearest.onnx"],
        [lambda res: "looks like a file, but a folder is given: pass a folder" in res.message or "not refused",
         lambda res: not (f / "clip.mp4").exists() or "clip.mp4 was created"]), 2))
    add(Case("one input with -o newdir/ (trailing slash)", "24", lambda f: (
        RUN + [str(img(f / "in.png")), "-o", f"{f / 'newdir'}/", "-q", *nearest(f)], ["newdir/in.png", "nearest.onnx"],
        [lambda res: checks_output("newdir/in.png", (80, 96, 3))(f)]), 0))

    def gif(folder):
        cv2.imwrite(str(folder / "still.gif"), np.full((20, 24, 3), 90, np.uint8))
        return RUN + [str(folder / "still.gif"), "-q", *nearest(folder)], ["still_x4.png", "nearest.onnx"], [
            lambda res: checks_output("still_x4.png", (80, 96, 3))(folder)]
    add(Case("GIF still without -o (default .png)", "24", gif, 0))

    def vanishing(folder):
        src = folder / "in"
        src.mkdir()
        for name in ("a.png", "b.png", "c.png"):
            img(src / name)
        return [sys.executable, "-c", DELETE_MIDRUN + MAIN_RUN, str(src), "-o", str(folder / "out"), "-q",
                *nearest(folder)], ["out/a.png", "out/c.png", "nearest.onnx"], [
            lambda res: "b.png: no such file" in res.message or "the vanished input is not named"]
    add(Case("input deleted mid-run (folder of 3)", "24", vanishing, 1))

    # --- refused up front, from the header and the arguments ---
    def early(setup):
        """``setup`` (a shipped-student run), also checked to refuse before any inference."""
        def wrapped(folder):
            argv, expected, checks = setup(folder)
            return argv, expected, [*checks, before_the_model]
        return wrapped
    add(Case("WebP output over 16,383 px a side", "24", early(single(
        good("wide.png", (10, 4200, 3)), "and .webp holds at most 16383 pixels a side; write .png or .tif",
        ["-o", "wide.webp"])), 2))
    add(Case("JPEG output over 65,500 px a side", "24", early(single(
        good("wide.png", (2, 16376, 3)), "and .jpg holds at most 65500 pixels a side", ["-o", "wide.jpg"])), 2))

    def cmyk(folder):
        src = hostile.cmyk_tiff(folder / "print.tif")
        return RUN + [str(src), "-o", str(folder / "print.jpg"), "-q", *nearest(folder)], ["print.jpg", "nearest.onnx"], [
            lambda res: checks_output("print.jpg", (20, 24, 3))(folder)]
    add(Case("CMYK TIFF to JPEG (RGB, no alpha)", "24", cmyk, 0))
    add(Case("PNG with tRNS after 5,000 chunks, -o x.jpg", "24", early(single(
        lambda g: hostile.png_with_chunks(g / "late.png", 5000, hostile.trns_rgb(120)),
        ".jpg has no alpha channel and the image has one", ["-o", "x.jpg"])), 2))
    for depth in (8, 16):
        def gray_trns(folder, depth=depth):
            src = hostile.gray_trns_png(folder / "g.png", depth, (20, 24), key=1)
            return RUN + [str(src), "-q", *nearest(folder)], ["g_x4.png", "nearest.onnx"], [
                lambda res: hostile_png_color(folder / "g_x4.png") == 4 or "transparency dropped"]
        add(Case(f"gray PNG with tRNS ({depth}-bit) keeps its transparency", "24", gray_trns, 0))
    add(Case("gray PNG with tRNS, -o x.jpg", "24", early(single(
        lambda g: hostile.gray_trns_png(g / "g.png", 8, (20, 24), key=1),
        ".jpg cannot hold gray+alpha here (the image has transparency); write .png", ["-o", "x.jpg"])), 2))

    # --- the other CLIs: signals and streams ---
    reader_gone = [sys.executable, "-c", "import os, subprocess, sys; r, w = os.pipe(); os.close(r); "
                                         "sys.exit(subprocess.call(sys.argv[1:], stdout=w))"]
    add(Case("mambaesr-export --list-devices, stdout reader gone", "24", lambda f: (
        reader_gone + [str(BIN / "mambaesr-export"), "--list-devices"], [],
        [lambda res: "rror" not in res.message or f"failed: {res.message[:120]}"]), 0))
    add(Case("mambaesr-monitor stopped by SIGTERM (recording kept)", "24", lambda f: (
        ["sh", "-c", '"$@" & sleep 4; kill -TERM $!; wait $!', "sh", str(BIN / "mambaesr-monitor"), "--telemetry",
         "psutil", "--interval", "0.1", "--record", str(f / "trace.json")], ["trace.json"],
        [lambda res: "interrupted by SIGTERM" in res.message or "no 'interrupted by SIGTERM' message",
         lambda res: bool(json.loads(_bytes(f / "trace.json") or b"{}").get("samples")) or "no samples recorded"]),
        143))

    try:
        import av  # noqa: F401 - the clips are made with PyAV
    except ImportError:
        return cases
    import clips

    def meanwhile_video(folder):
        src = clips.make_clip(folder / "in.mp4", audio=False)
        return [sys.executable, "-c", CREATE_MEANWHILE + MAIN_RUN, str(src), "-o", str(folder / "out.mp4"), "-q",
                *nearest(folder)], ["out.mp4", "nearest.onnx"], [
            lambda res: "out.mp4 appeared while this video was being upscaled" in res.message or "race not named",
            lambda res: _bytes(folder / "out.mp4") == b"created meanwhile" or "the other file was replaced"]
    add(Case("video destination created during the run (no --overwrite)", "24", meanwhile_video, 2))

    def disk_full(out, limit):
        """``limit``: bytes, or "index": 8 bytes short of the whole output (measured by a run without a limit), so
        every frame is written but the end of the container (an AVI's index) is not."""
        def setup(folder):
            src = clips.make_clip(folder / "in.mp4", pts_ms=[40 * i for i in range(40)])
            argv = RUN + [str(src), "-o", str(folder / out), "-q", *nearest(folder)]
            size = limit
            if limit == "index":
                subprocess.run(argv, cwd=folder, capture_output=True, check=True, timeout=120)
                size = (folder / out).stat().st_size - 8
                (folder / out).unlink()
            return FILE_SIZE_LIMIT + [str(size)] + argv, ["nearest.onnx"], [
                lambda res: "the disk is full, or a quota or file-size limit was reached" in res.message or
                "the full disk is not named"]
        return setup
    add(Case("disk full mid-video (.mp4 through PyAV; RLIMIT_FSIZE)", "24", disk_full("out.mp4", 20000), 2))
    add(Case("disk full mid-video (.avi through OpenCV; RLIMIT_FSIZE)", "24", disk_full("out.avi", 10000), 2))
    add(Case("disk full at a video's index (.avi; RLIMIT_FSIZE)", "24", disk_full("out.avi", "index"), 2))

    def damaged(make, out, words, allow=False):
        def setup(folder):
            src = make(folder)
            expected = [out] if allow else []
            return RUN + [str(src), "-o", str(folder / out), "-q", *nearest(folder),
                          *(["--allow-frame-loss"] if allow else [])], expected + ["nearest.onnx"], [
                lambda res: (words in res.message) or f"message lacks {words!r}"]
        return setup

    def cut_avi(folder):
        return clips.damaged_avi(clips.mjpg_avi(folder / "good.avi"), folder / "cut.avi", frame=3)

    def bad_mp4(folder):
        return clips.damaged_mdat(clips.noisy_h264(folder / "good.mp4"), folder / "bad.mp4")
    add(Case("MJPG .avi missing a middle frame, to .mp4", "24", damaged(
        cut_avi, "out.mp4", "the container lists 8 frames but only 7 could be read"), 2))
    add(Case("MJPG .avi missing a middle frame, to .avi (OpenCV)", "24", damaged(
        cut_avi, "out.avi", "frame 8 of the 8 its container lists cannot be read"), 2))
    add(Case("MP4 with a damaged mdat, to .mkv", "24", damaged(bad_mp4, "out.mkv", "does not decode"), 2))
    add(Case("MP4 with a damaged mdat, to .avi (OpenCV)", "24", damaged(
        bad_mp4, "out.avi", "of the 40 its container lists cannot be read"), 2))
    add(Case("MP4 with a damaged mdat, --allow-frame-loss", "24", damaged(bad_mp4, "out.mkv", "", allow=True), 0))

    def one_pixel(folder):
        src = clips.mjpg_avi(folder / "tiny.avi", frames=3, size=(1, 1))
        return RUN + [str(src), "-o", str(folder / "out.avi"), "-q", *nearest(folder)], ["nearest.onnx"], [
            lambda res: "too small for OpenCV's MJPG writer (.avi)" in res.message or "not refused up front"]
    add(Case("1x1 video to .avi (no abort)", "24", one_pixel, 2, env={"MALLOC_CHECK_": "3"}))

    def webm(hide):
        def setup(folder):
            src = clips.make_clip(folder / "c.webm", vcodec="libvpx-vp9", acodec="libopus")
            out = "c_x4.mp4" if hide else "c_x4.webm"
            extra = []
            if hide:
                (folder / "hide").mkdir()
                (folder / "hide" / "av.py").write_text("raise ImportError('PyAV hidden for this case')\n")
                extra = ["hide/av.py"]
            return RUN + [str(src), "-q", *nearest(folder)], [out, "nearest.onnx", *extra], [
                lambda res: _av_facts(folder / out)["frames"] == len(clips.VFR_MS) or "frames lost"]
        return setup
    add(Case("WebM without -o (default .webm through PyAV)", "24", webm(False), 0))
    add(Case("WebM without -o and without PyAV (default .mp4)", "24", webm(True), 0,
             env={"PYTHONPATH": os.pathsep.join(["hide", str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}))
    return cases


# -- issue 24: working memory bounded by the tile, estimated and checked up front ---------------------------------
#: The peak RSS the issue asks for (a 4 GB Raspberry Pi 5 or Jetson Nano must run these), and what a refusal up
#: front may cost (the process and one engine opened, nothing decoded or run).
MEMORY_RSS_MB, REFUSAL_RSS_MB = 800, 200
#: The estimate must be an upper bound of the measured peak RSS and at most this much above it (shipped engines).
ESTIMATE_MARGIN = 1.5


def _estimate_mb(res) -> float | None:
    import re

    found = re.findall(r"working memory about (\d+) MB", res.stderr)
    return float(found[0]) if found else None


def rss_below(limit_mb: float):
    return lambda res: res.rss_mb < limit_mb or f"peak RSS {res.rss_mb:.0f} MB >= {limit_mb} MB"


def estimate_bounds(res):
    """The -v line's estimate against the measured peak RSS: above it (an upper bound), within the margin."""
    estimate = _estimate_mb(res)
    if estimate is None:
        return "no working-memory estimate in the -v log"
    if not res.rss_mb <= estimate <= ESTIMATE_MARGIN * res.rss_mb:
        return f"estimate {estimate:.0f} MB vs peak RSS {res.rss_mb:.0f} MB: not within 1-{ESTIMATE_MARGIN}x"
    return True


def random_png(name: str, shape: tuple):
    def make(folder: Path) -> Path:
        rng = np.random.default_rng(24)
        cv2.imwrite(str(folder / name), rng.integers(0, 256, shape, dtype=np.uint8))
        return folder / name
    return make


def dynamic_x4_onnx(folder: Path) -> Path:
    """A user's x4 SR model with dynamic n, h, w (a 3x3 conv to 48 planes, depth-to-space 4, plus the nearest
    upscale), made with onnx alone."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((48, 3, 3, 3)) * 0.01).astype(np.float32), "wt"),
               numpy_helper.from_array(np.zeros(48, np.float32), "b"),
               numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["lr", "wt", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=4, mode="CRD"),
             helper.make_node("Resize", ["lr", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Add", ["d", "u"], ["sr"])]
    graph = helper.make_graph(nodes, "dyn_x4", [helper.make_tensor_value_info("lr", TensorProto.FLOAT,
                                                                               ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "sh", "sw"])],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "dyn_x4.onnx"))
    return folder / "dyn_x4.onnx"


def memory_cases() -> list[Case]:
    """Issue 24's memory defects (measured before the fix, 2026-12-04, peak RSS: 1x60000 fast 4384 MB, 1x20000
    fast 1656 MB, 1024x1024 student 685 MB, a dynamic x4 ONNX at --tile 2000 past 5 GB) and the estimate checked
    against each run's peak RSS (-v logs it)."""
    def upscale(name, shape, extra=(), out_shape=None, limit=MEMORY_RSS_MB):
        def setup(folder):
            src = random_png(name, shape)(folder)
            out = f"{Path(name).stem}_x4.png"
            return RUN + [str(src), "-q", "-v", *extra], [out], [
                lambda res: checks_output(out, out_shape or (shape[0] * 4, shape[1] * 4, 3))(folder),
                rss_below(limit), estimate_bounds]
        return setup

    cases = [
        Case("issue 24 memory: 1x60000 strip, fast tier (was 4384 MB)", "24",
             upscale("strip.png", (1, 60000, 3), ["--tier", "light"]), 0, timeout=600),
        Case("issue 24 memory: 1x20000 strip, fast tier (was 1656 MB)", "24",
             upscale("strip.png", (1, 20000, 3), ["--tier", "light"]), 0, timeout=300),
        Case("issue 24 memory: 20000x1 strip, fast tier", "24",
             upscale("tall.png", (20000, 1, 3), ["--tier", "light"]), 0, timeout=300),
        Case("issue 24 memory: 1024x1024 through the student (was 685 MB)", "24",
             upscale("photo.png", (1024, 1024, 3)), 0, timeout=300),
    ]

    def dynamic_tile(folder):
        model = dynamic_x4_onnx(folder)
        src = random_png("in.png", (128, 128, 3))(folder)
        return RUN + [str(src), "--model", str(model), "--tile", "4000", "-q"], [], [
            lambda res: "dyn_x4.onnx (onnxruntime, 4000x4000 tiles, batch 1) needs about" in res.message
            or "not refused for its tile", lambda res: "--tile 264" in res.message or "the fix is not named",
            rss_below(REFUSAL_RSS_MB)]
    cases.append(Case("issue 24 memory: --tile 4000 on a dynamic-shape x4 ONNX, refused before it runs", "24",
                      dynamic_tile, 2))

    def over_limit(folder):
        src = random_png("big.png", (1024, 1024, 3))(folder)
        return RUN + [str(src), "--max-memory", "500", "-q"], [], [
            lambda res: "big.png: upscaling the 1024x1024 input (4096x4096 output) needs about" in res.message
            or "the image and its estimate are not named",
            lambda res: "above the 500 MB limit (--max-memory)" in res.message or "the limit is not named",
            rss_below(REFUSAL_RSS_MB)]
    cases.append(Case("issue 24 memory: --max-memory 500 under a 1024x1024 image's estimate", "24", over_limit, 2))
    return cases


# -- issue 20: videos through PyAV (clips made with PyAV, as the tests make them) ----------------------------------
def _av_facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        video = c.streams.video[0]
        frames = list(c.decode(video=0))
        return {"streams": [s.type for s in c.streams], "codec": video.codec_context.name,
                "size": (frames[0].width, frames[0].height) if frames else None, "frames": len(frames),
                "rotation": frames[0].rotation if frames else None,
                "audio": [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size] if c.streams.audio else []}


def video_cases() -> list[Case]:
    try:
        import av  # noqa: F401 - the fixtures are made with PyAV
    except ImportError:
        print("note: PyAV (the video extra) is not installed: the video cases are left out", file=sys.stderr)
        return []
    import clips

    def clip(name, **kw):
        return lambda folder: clips.make_clip(folder / name, **kw)

    def corrupt_audio(folder):
        src = clips.garbage_audio(clips.make_clip(folder / "good.mp4"), folder / "bad.mp4")
        (folder / "good.mp4").unlink()
        return RUN + [str(src), "-o", str(folder / "out.mp4"), "-q"], ["out.mp4"], [
            lambda res: _av_facts(folder / "out.mp4")["audio"] == _av_facts(src)["audio"] or "audio changed",
            lambda res: _av_facts(folder / "out.mp4")["frames"] == len(clips.VFR_MS) or "frames lost"]

    def zero_frames(folder):
        src = clips.zero_frame(clips.make_clip(folder / "c.mp4"), folder / "zero.mkv")
        (folder / "c.mp4").unlink()
        return single(lambda f: src, "zero.mkv: the video stream has no frames")(folder)

    def truncated(folder):
        data = clips.make_clip(folder / "c.mp4").read_bytes()
        (folder / "c.mp4").unlink()
        return single(write("cut.mp4", data[:len(data) - 300]), "cut.mp4: the file is truncated")(folder)

    def rotated(folder):
        src = clips.make_clip(folder / "portrait.mp4", rotate=90)
        return RUN + [str(src), "-q"], ["portrait_x4.mp4"], [
            lambda res: (_av_facts(folder / "portrait_x4.mp4")["size"], _av_facts(folder / "portrait_x4.mp4")[
                "rotation"]) == ((96, 128), 0) or f"not upright: {_av_facts(folder / 'portrait_x4.mp4')['size']}"]

    def sigint(folder):
        src = clips.make_clip(folder / "long.mp4", pts_ms=[40 * i for i in range(60)])
        return RUN + [str(src), "-o", str(folder / "out.mp4"), "-q"], [], [
            lambda res: "interrupted" in res.message or "no 'interrupted' message"]

    def without_pyav(folder):
        (folder / "hide").mkdir()
        (folder / "hide" / "av.py").write_text("raise ImportError('PyAV hidden for this case')\n")
        src = clips.make_clip(folder / "c.mp4")
        return RUN + [str(src), "-o", str(folder / "out.mp4"), "-q"], ["out.mp4", "hide/av.py"], [
            lambda res: "mambaesr-runtime[video]" in res.message or "the missing extra is not named",
            lambda res: _av_facts(folder / "out.mp4")["codec"] == "mpeg4" or "not OpenCV's mp4v"]

    webm = single(clip("aac.mp4"), "cannot hold the audio #1 (aac)", ["-o", "x.webm"])
    return [Case("video: corrupt audio track (copied as it is)", "video", corrupt_audio, 0),
            Case("video: zero-frame video", "video", zero_frames, 2),
            Case("video: truncated moov (index cut off)", "video", truncated, 2),
            Case("video: rotated (display matrix 90)", "video", rotated, 0),
            Case("video: AAC into .webm", "video", webm, 2),
            Case("video: SIGINT mid-video", "video", sigint, 130, interrupt_after=".out.mp4.*"),
            Case("video: without PyAV (OpenCV fallback)", "video", without_pyav, 0,
                 env={"PYTHONPATH": "hide", "PYTHONDONTWRITEBYTECODE": "1"})]


BOMB30K = b""  # made once in main (3-4 s)


def hostile_png_color(path: Path) -> int | None:
    data = path.read_bytes()[:26] if path.exists() else b""
    return data[25] if len(data) == 26 else None


def dynamic_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "dyn", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "dyn.onnx"))
    return folder / "dyn.onnx"


def edit_config(meta: Path, **changes) -> None:
    info = json.loads(meta.read_text())
    info["config"].update(changes)
    meta.write_text(json.dumps(info))


def torch_model_case(words: str, damage):
    """--backend torch --model a copy of the shipped fast checkpoint, damaged by ``damage(weights, meta)``."""
    def setup(folder: Path):
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(ROOT / "mambaesr_runtime" / "weights" / f"fast_x4{suffix}", folder / f"m{suffix}")
        damage(folder / "m.safetensors", folder / "m.json")
        return single(good("in.png"), words, ["--backend", "torch", "--model", str(folder / "m.safetensors")])(folder)
    return setup


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def pickle_case(suffix: str):
    def setup(folder: Path):
        (folder / f"evil{suffix}").write_bytes(pickle.dumps({"w": _Boom()}))
        argv = RUN + [str(img(folder / "in.png")), "--model", str(folder / f"evil{suffix}"), "-q"]
        if suffix == ".safetensors":
            argv += ["--backend", "torch"]
        return argv, [], [lambda res: not (folder / "PWNED").exists() or "the pickle was loaded"]
    return setup


def profile_case(words: str, text: str):
    def setup(folder: Path):
        (folder / "board.yaml").write_text(text)
        return single(good("in.png"), words, ["--profile", str(folder / "board.yaml")])(folder)
    return setup


# -- the dataset downloader's items, against a local HTTP server ---------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *a, files=None, cut=None, **k):
        self.files, self.cut = files, cut
        super().__init__(*a, **k)

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:start + self.cut.pop(self.path, len(body))])

    def log_message(self, *a):
        pass


SERVER: dict = {}


def downloader_cases() -> list[Case]:
    script = [sys.executable, str(ROOT / "scripts" / "download_datasets.py")]

    def sources(folder: Path, dest_name="HR/c.png", url_path="/c.png", pinned=True) -> Path:
        body = SERVER["files"]["/c.png"]
        entry = {"url": SERVER["base"] + url_path, "dest": dest_name}
        if pinned:
            entry["sha256"] = hashlib.sha256(body).hexdigest()
        path = folder / "sources.json"
        path.write_text(json.dumps({"sets": {"Tiny": {"files": [entry]}}}))
        return path

    def planted_part(folder):
        (folder / "victim.txt").write_text("precious\n")
        (folder / "data" / "Tiny" / "HR").mkdir(parents=True)
        (folder / "data" / "Tiny" / "HR" / "c.png.part").symlink_to(folder / "victim.txt")
        argv = script + ["Tiny", "--dest", str(folder / "data"), "--sources", str(sources(folder))]
        return argv, [], [lambda res: (folder / "victim.txt").read_text() == "precious\n" or "victim modified",
                          lambda res: "is not a plain file" in res.message or "link not refused"]

    def escaping(dest_name):
        def setup(folder):
            argv = script + ["Tiny", "--dest", str(folder / "a" / "data"),
                             "--sources", str(sources(folder, dest_name))]
            return argv, [], [lambda res: "leaves the destination folder" in res.message or "escape not refused"]
        return setup

    def truncated(folder):
        SERVER["cut"]["/c.png"] = 100
        argv = script + ["Tiny", "--dest", str(folder / "data"), "--allow-unverified",
                         "--sources", str(sources(folder, pinned=False))]
        return argv, ["data/Tiny/HR/c.png.part"], [
            lambda res: "run again to resume" in res.message or "short transfer not refused",
            lambda res: not (folder / "data" / "Tiny" / "HR" / "c.png").exists() or "the short file became final"]

    return [Case("downloader: planted <dest>.part symlink", "new", planted_part, 2),
            Case("downloader: sources dest with ../", "new", escaping("../../escaped.png"), 2),
            Case("downloader: sources dest absolute", "new", escaping("/tmp/mambaesr-escaped.png"), 2),
            Case("downloader: truncated unverified transfer", "new", truncated, 2)]


# -- running and reporting -----------------------------------------------------------------------------------------
def run_case(case: Case, folder: Path) -> Result:
    setup = case.setup(folder)
    argv, expected, checks = setup
    before = files_under(folder)
    code, rss, seconds, out, err = run_cmd(argv, folder, case.timeout, case.interrupt_after, case.env,
                                            case.interrupt_signal)
    message = " ".join(line for line in err.splitlines() if "error" in line or "interrupted" in line
                       or "skipped" in line or "not installed" in line or "working memory" in line)[:400]
    result = Result(case, code, rss, seconds, [], message=message, stdout=out, stderr=err)
    new = files_under(folder) - before
    if expected is None:  # an interrupted run: whatever it wrote must be complete images, nothing temporary
        expected = [p for p in new if p.startswith("out/") and not Path(p).name.startswith(".")
                    and cv2.imread(str(folder / p)) is not None]
    result.left = sorted(new - set(expected))
    missing = [p for p in expected if not (folder / p).exists()]
    if code != case.expect:
        result.problems.append(f"exit {code}, expected {case.expect}")
    if result.left:
        result.problems.append(f"left behind: {result.left}")
    if missing:
        result.problems.append(f"missing outputs: {missing}")
    if case.bomb and rss >= BOMB_RSS_MB:
        result.problems.append(f"peak RSS {rss:.0f} MB >= {BOMB_RSS_MB} MB")
    for check in checks:
        verdict = check(result)
        if verdict is not True:
            result.problems.append(str(verdict))
    return result


def main(argv: list[str] | None = None) -> int:
    global BOMB30K
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--keep", help="keep the case folders here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)

    work = Path(args.keep or tempfile.mkdtemp(prefix="mambaesr-bad-inputs-"))
    work.mkdir(parents=True, exist_ok=True)
    BOMB30K = hostile.png_bomb(30000, 30000)
    files = {"/c.png": cv2.imencode(".png", np.full((16, 16, 3), 80, np.uint8))[1].tobytes()}
    SERVER.update(files=files, cut={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, files=files, cut=SERVER["cut"]))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    SERVER["base"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    results = []
    try:
        cases = [c for c in catalogue() if not args.only or args.only in c.name]
        for i, case in enumerate(cases):
            folder = work / f"{i:02d}"
            folder.mkdir()
            res = run_case(case, folder)
            results.append(res)
            mark = "ok " if not res.problems else "BAD"
            print(f"{mark} [{case.kind}] {case.name}: exit {res.code}, {res.rss_mb:.0f} MB, {res.seconds:.2f} s"
                  + (f" -- {'; '.join(res.problems)}" if res.problems else ""), flush=True)
    finally:
        httpd.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    escaped = [p for p in ("/tmp/mambaesr-escaped.png",) if os.path.exists(p)]

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = [r for r in results if r.problems] + ([] if not escaped else ["escaped"])
    bombs = [r for r in results if r.case.bomb]
    lines = ["# Bad inputs: the hostile-input catalogue through the CLIs", "",
             f"Measured {stamp} on {platform.machine()} ({os.cpu_count()} cores, shared), Python "
             f"{platform.python_version()}. Command: `python benchmarks/bad_inputs.py`. Each case: a fresh folder, "
             f"one subprocess (mambaesr-run with the default cpu profile, i.e. the shipped student on ONNX Runtime, "
             f"unless the case names another model or tool), OMP_NUM_THREADS=1. Peak RSS: the command's own maximum "
             f"resident set (wait4 in a ~10 MB launcher: a child's ru_maxrss would start at its parent's peak), "
             f"model and ONNX Runtime included. Left behind: files in the case folder other "
             f"than the outputs the case expects (temporaries, partial outputs, anything written by a bomb). old = a "
             f"case issue 14 found passing, new = one of its failures, video = issue 20's video cases (clips made "
             f"with PyAV: H.264 + AAC, 32x24, variable frame rate), 24 = issue 24's (SIGTERM/SIGHUP, closed "
             f"streams, arguments refused up front; then races at the destination, full disks (RLIMIT_FSIZE), "
             f"damaged videos and JPEGs, folder rules and default names, refusals from the header, the other CLIs' "
             f"guards; those cases run the x4 nearest-neighbour graph they make, unless they are about the model "
             f"never running).", "",
             f"**{len(results) - len(failed)} of {len(results)} cases pass.** Decompression bombs: peak RSS "
             f"{min(r.rss_mb for r in bombs):.0f}-{max(r.rss_mb for r in bombs):.0f} MB (bar < {BOMB_RSS_MB} MB), "
             f"{min(r.seconds for r in bombs):.2f}-{max(r.seconds for r in bombs):.2f} s." if bombs else "", "",
             "| # | case | kind | exit (expected) | peak RSS (MB) | seconds | files left behind | result |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results):
        lines.append(f"| {i + 1} | {r.case.name} | {r.case.kind} | {r.code} ({r.case.expect}) | {r.rss_mb:.0f} | "
                     f"{r.seconds:.2f} | {', '.join(r.left) or 'none'} | "
                     f"{'pass' if not r.problems else 'FAIL: ' + '; '.join(r.problems)} |")
    lines += ["", "What each refusal said (stderr, first lines):", ""]
    lines += [f"- {r.case.name}: `{r.message[:220]}`" for r in results if r.message]
    if escaped:
        lines += ["", f"FAIL: files written outside --dest: {escaped}"]
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bad_inputs.md").write_text(md)
        (RESULTS / "bad_inputs.json").write_text(json.dumps({"measured": stamp, "cases": [
            {"case": r.case.name, "kind": r.case.kind, "exit": r.code, "expected": r.case.expect,
             "peak_rss_mb": round(r.rss_mb, 1), "seconds": round(r.seconds, 3), "left_behind": r.left,
             "problems": r.problems, "message": r.message} for r in results]}, indent=2) + "\n")
        print(f"wrote {RESULTS / 'bad_inputs.md'} and .json")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
