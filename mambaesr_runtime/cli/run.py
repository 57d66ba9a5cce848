"""``mambaesr-run``: upscale images and videos x4 through a device profile's engines (default: the shipped student
on ONNX Runtime, CPU; no torch needed).

    mambaesr-run photo.png                      -> photo_x4.png beside it
    mambaesr-run photo.png --scale 4 -o big.png
    mambaesr-run shots/ -o shots_x4/            every image (and video) in the folder, names kept
    mambaesr-run clip.mp4 -o clip_x4.mp4        every frame; same frame count and rate
    mambaesr-run --camera 0 --frames 300 -o cam_x4.mp4
    mambaesr-run --camera "nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert !
                 video/x-raw,format=BGR ! appsink" -o csi_x4.mp4 --device orin-nano    a Jetson CSI camera
    mambaesr-run photo.png --device orin        TensorRT plans from engines/orin (mambaesr-export), else ONNX Runtime
    mambaesr-run photo.png --backend torch      the reference PyTorch model (needs the torch extra)
    mambaesr-run photo.jpg --outscale 2 --quality 90    run x4, write x2 (area-averaged), JPEG quality 90
    mambaesr-run shots/ -o out/ --format webp   every image written as WebP
    mambaesr-run clip.mp4 -o clip.mkv --codec hevc --crf 20    (PyAV: the video extra)
    mambaesr-run shots/ --json > report.json    one machine-readable summary of the run on stdout

Photos come out upright (EXIF orientation applied) with their EXIF (no thumbnail, orientation reset), ICC profile,
PNG text and density where the output format holds them; --strip-metadata drops them. Videos, with the video
extra (PyAV): H.264 (VP9 for .webm), audio and subtitles copied packet for packet, every frame's timestamp kept,
rotation applied; without it, OpenCV writes the picture only (mp4v, constant rate) and says so.

Exit codes: 0 all done; 1 some inputs failed (the others were written); 2 bad arguments or nothing could run;
130 interrupted by Ctrl+C, 143 by SIGTERM, 129 by SIGHUP (nothing partial is left in any case). Outputs are
written atomically and never replace an existing file unless --overwrite is given; inputs are never modified. A failing file is reported by name and the run goes on.
Without -o, outputs are named <name>_x4.<ext> beside their input, so a folder run skips files named like the output
of another file in the folder (a_x4.png beside a.png): running it twice never upscales its own outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..errors import MambaESRError
from ..profiles import BACKENDS, PRECISIONS, builtin_profiles
from ..runtime.monitor import SOURCES
from .flags import deprecated_alias, for_cli
from .signals import describe, exit_code, interrupt_on_termination
from .streams import guarded_streams

#: The Upscaler / monitor arguments the library's errors name, and the flags that set them here.
FLAGS = {"max_output_megapixels": "--max-megapixels", "max_memory_mb": "--max-memory", "overwrite": "--overwrite", "precision": "--precision",
         "model": "--model", "scale": "--scale", "tile": "--tile", "overlap": "--overlap", "source": "--telemetry",
         "replay": "--replay", "outscale": "--outscale", "quality": "--quality", "codec": "--codec",
         "crf": "--crf", "strip_metadata": "--strip-metadata", "engines_dir": "--engines"}
#: The exit codes of an interrupted run: SIGHUP, SIGINT (Ctrl+C), SIGTERM (128 + the signal's number).
INTERRUPTED = (129, 130, 143)
#: --format NAME -> the suffix written.
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tif",
           "bmp": ".bmp"}


def _suffixes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image, video) suffixes a folder run picks up: what the image writer and the video reader handle."""
    from ..runtime.imageio import WRITE_FORMATS
    from ..runtime.video import VIDEO_SUFFIXES

    return WRITE_FORMATS, VIDEO_SUFFIXES


def _own_output(f: Path, tag: str) -> bool:
    """``f`` is named like the default output of another file beside it (``a_x4.png`` beside ``a.png``, or
    ``a_x4.jpg`` beside ``a.png`` after a run with --format)."""
    tag = f"_x{tag}"
    if not (f.stem.endswith(tag) and len(f.stem) > len(tag)):
        return False
    stem = f.stem[:-len(tag)]
    return any(os.path.lexists(f.with_name(stem + suffix)) for suffix in {f.suffix, *FORMATS.values()} | {
        p.suffix for p in f.parent.glob(f"{_glob_escape(stem)}.*")})


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _jobs(inputs: list[str], out: str | None, tag: str, fmt: str | None = None,
          skipped: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; raises MambaESRError for arguments that cannot work. Without ``out``, files of
    an input folder that are the default outputs of their neighbours are left out (and listed in ``skipped``).
    ``tag``: the scale in default names (``4`` -> ``a_x4.png``); ``fmt``: the suffix images are written as."""
    jobs = []
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs) or (out is not None and Path(out).is_dir())
    image_suffixes, video_suffixes = _suffixes()
    if many and out is not None and Path(out).suffix.lower() in image_suffixes:
        raise MambaESRError(f"-o {out} looks like a file but several images are given; pass a folder")
    if not many and out is not None and fmt is not None and Path(out).suffix.lower() in image_suffixes and \
            FORMATS.get(Path(out).suffix.lower().lstrip(".")) != fmt:
        raise MambaESRError(f"-o {out} and --format {fmt.lstrip('.')} disagree; give one of them")
    for item in inputs:
        src = Path(item)
        if src.is_dir():
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in image_suffixes + video_suffixes)
            if not files:
                raise MambaESRError(f"{src} holds no images or videos ({', '.join(image_suffixes + video_suffixes)})")
            if out is None:
                own = [f for f in files if _own_output(f, tag)]
                files = [f for f in files if f not in own]
                if skipped is not None:
                    skipped.extend(own)
        elif os.path.lexists(src):
            files = [src]  # a broken or looping link fails as that file, with its reason, not as a bad argument
        else:
            raise MambaESRError(f"{src}: no such file or folder")
        for f in files:
            suffix = fmt if fmt and f.suffix.lower() in image_suffixes else f.suffix
            if out is None:
                dst = f.with_name(f"{f.stem}_x{tag}{suffix}")
            elif many:
                dst = Path(out) / (f.stem + suffix)
            else:
                dst = Path(out)
            jobs.append((f, dst))
    return jobs


class _Progress:
    """Progress on stderr through tqdm (rate and ETA, a bar per file's tiles or frames, and one for the files when
    there are several), only when stderr is a terminal and not -q. Lines for the user go through :meth:`say`, so a
    bar never tears them."""

    def __init__(self, total_files: int, enabled: bool):
        self.tqdm = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                print("note: no progress bar: tqdm is not installed (pip install tqdm)", file=sys.stderr)
            else:
                self.tqdm = tqdm
        self.files = None
        if self.tqdm is not None and total_files > 1:
            self.files = self.tqdm(total=total_files, unit="file", desc="files", file=sys.stderr, position=0,
                                   dynamic_ncols=True)
        self.bar = None

    def start(self, name: str, unit: str):
        """A progress callback ``update(done, total)`` for one file (``None`` when progress is off)."""
        if self.tqdm is None:
            return None

        def update(done, total):
            if self.bar is None:
                self.bar = self.tqdm(total=total, unit=unit, desc=name, file=sys.stderr, leave=False,
                                     position=1 if self.files is not None else 0, dynamic_ncols=True)
            elif total != self.bar.total:  # a new image restarts its tile count (a video: one bar for its frames)
                self.bar.reset(total=total)
            self.bar.update(done - self.bar.n)
        return update

    def finish_file(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.files is not None:
            self.files.update(1)

    def say(self, text: str, file=None) -> None:
        file = file or sys.stdout
        if self.tqdm is not None:
            self.tqdm.write(text, file=file)
        else:
            print(text, file=file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.files is not None:
            self.files.close()

    def logging(self):
        """A context in which log records go through tqdm (no torn bars), when bars are on."""
        if self.tqdm is None:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()


def main(argv: list[str] | None = None) -> int:
    with guarded_streams():  # a closed stdout or stderr never fails the run, nor mixes errors into the results
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="image or video files, or folders of images")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (several, or a folder input)")
    parser.add_argument("--scale", type=int, help="upscaling factor the engine must have (default: the engine's; "
                                                  "the shipped models are x4)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--device", help=f"device profile: {', '.join(builtin_profiles())} (default cpu; see "
                                         f"mambaesr-export --list-devices)")
    target.add_argument("--profile", help="a device profile YAML file")
    parser.add_argument("--tier", help="profile tier to run (default: its first)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="force a backend (default: the profile's order, falling back when one is unavailable)")
    parser.add_argument("--model", help="one engine file instead of the profile's (.onnx, .plan, or a .safetensors "
                                        "checkpoint for --backend torch); an ONNX file with dynamic height and width "
                                        "(any x2/x3/x4 super-resolution model) runs on the profile's tile size")
    parser.add_argument("--engines", help="folder of exported engines (default engines/<device>, then the shipped)")
    parser.add_argument("--tile", type=int, help="LR tile size (needs an engine exported for it, or a dynamic-shape "
                                                 "--model)")
    parser.add_argument("--overlap", type=int, help="tile overlap per side, LR pixels (default: the tier's; with "
                                                    "--model, the profile's first tier's)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="engine precision (default: the tier's, else the profile's); int8: the tier's int8 QDQ graph")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the profile's)")
    parser.add_argument("--adaptive", action="store_true",
                        help="let the hardware monitor choose the tier between frames/files (reports the switches)")
    parser.add_argument("--telemetry", "--monitor", dest="telemetry", default="auto", choices=SOURCES,
                        help="telemetry source for --adaptive (default: the best available; --monitor is the old "
                             "name of this flag, kept as an alias)")
    parser.add_argument("--replay", help="a recorded telemetry trace (mambaesr-monitor --record) for --adaptive")
    parser.add_argument("--camera", help="read camera N, or a GStreamer pipeline ending in appsink (a Jetson CSI "
                                         "camera), instead of files (needs -o video file)")
    parser.add_argument("--frames", type=int, help="stop a video or camera after this many frames")
    parser.add_argument("--max-megapixels", type=float, default=100.0, help="refuse larger outputs (default 100)")
    parser.add_argument("--max-memory", type=float, metavar="MB",
                        help="refuse an image (or a tile size) whose estimated working memory is above this, before "
                             "decoding it (default: the smaller of 4096 and 90%% of the memory available at start)")
    parser.add_argument("--outscale", type=float, help="output scale (default: the engine's): the engine runs at its "
                                                       "own scale and the result is resized (area averaging down, "
                                                       "Lanczos up; above the engine's scale with a warning)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="write images in this format (default: the "
                                                                  "input's; the suffix of -o FILE must agree)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG and WebP quality, 1-100 (default 95)")
    parser.add_argument("--strip-metadata", action="store_true",
                        help="write no EXIF, ICC profile, PNG text or density (photos are still turned upright)")
    parser.add_argument("--codec", help="video codec, through PyAV (the video extra): h264 (default), hevc, vp9 "
                                        "(default for .webm), av1")
    parser.add_argument("--crf", type=int, help="video constant-rate factor: lower is better and larger (default: "
                                                "h264 18, hevc 22, vp9 30, av1 30)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON summary of the run to stdout (inputs, outputs, engine, tier switches, "
                             "times, failures) instead of the per-file lines")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they are off anyway when stderr is not a terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine selection and fallbacks")
    args = parser.parse_args(argv)
    deprecated_alias(sys.argv[1:] if argv is None else argv, "--monitor", "--telemetry")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    report = _Report(args)
    with interrupt_on_termination():
        try:
            code = _run(args, report)
        except KeyboardInterrupt as exc:  # Ctrl+C, or SIGTERM / SIGHUP (Terminated) before the files' loop
            print(f"\n{describe(exc)}", file=sys.stderr)
            code = exit_code(exc)
        report.finish(code)
    return code


class _Report:
    """The --json summary: filled while the run goes, printed once at its end (whatever the exit code)."""

    def __init__(self, args):
        self.enabled = args.json
        self.start = time.perf_counter()
        self.data = {"command": "mambaesr-run", "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "engine": None, "inputs": [], "tier_switches": [], "error": None}

    def item(self, src, dst, kind: str, status: str, seconds: float, frames: int | None = None,
             error: str | None = None) -> None:
        entry = {"input": str(src), "output": str(dst) if dst is not None else None, "kind": kind, "status": status,
                 "seconds": round(seconds, 3)}
        if frames is not None:
            entry["frames"] = frames
        if error is not None:
            entry["error"] = error
        self.data["inputs"].append(entry)

    def finish(self, code: int) -> None:
        if not self.enabled:
            return
        items = self.data["inputs"]
        self.data.update(exit_code=code, seconds=round(time.perf_counter() - self.start, 3),
                         done=sum(i["status"] == "done" for i in items),
                         failed=sum(i["status"] == "failed" for i in items),
                         skipped=sum(i["status"] == "skipped" for i in items),
                         interrupted=code in INTERRUPTED)
        print(json.dumps(self.data, indent=2), flush=True)


def _check_arguments(args) -> None:
    """Numbers the parser accepts as types but that cannot work: refused before anything is opened."""
    if args.scale is not None and args.scale < 1:
        raise MambaESRError(f"--scale must be a positive integer (the shipped models are x4), got {args.scale}")
    if args.outscale is not None and not (args.outscale > 0 and args.outscale != float("inf")):
        raise MambaESRError(f"--outscale must be a positive number (e.g. 2 from an x4 model), got {args.outscale}")
    if not 1 <= args.quality <= 100:
        raise MambaESRError(f"--quality must be from 1 to 100 (JPEG and WebP), got {args.quality}")
    if args.frames is not None and args.frames < 1:
        raise MambaESRError(f"--frames must be at least 1, got {args.frames}")
    if args.camera is not None and not _ascii_digits(args.camera) and "appsink" not in args.camera:
        number = args.camera.strip().lstrip("+-")
        hint = (f" (write the index as plain digits, e.g. {int(number)}: no sign, spaces or other characters)"
                if _ascii_digits(number) and args.camera.strip().lstrip("+") == number else "")
        raise MambaESRError(f"--camera takes a camera index written as digits (0, 1, ...) or a GStreamer pipeline "
                            f"ending in appsink, got {args.camera!r}{hint}")
    if args.engines is not None and not Path(args.engines).is_dir():
        problem = "is a file, not a folder" if os.path.lexists(args.engines) else "no such folder"
        raise MambaESRError(f"--engines {args.engines}: {problem}; give the folder mambaesr-export wrote "
                            f"(engines/<device> by default), or leave --engines out to use that and the shipped "
                            f"engines")


def _ascii_digits(text: str) -> bool:
    """``0``, ``12``: digits 0-9 only (``str.isdigit`` also takes ``'²'`` and other scripts' digits)."""
    return bool(text) and all("0" <= c <= "9" for c in text)


def _run(args, report: _Report) -> int:
    skipped: list[Path] = []
    try:
        _check_arguments(args)
        if args.camera is not None:
            if args.inputs or not args.output:
                raise MambaESRError("--camera N takes no input files and needs -o out.mp4")
            jobs = [(int(args.camera) if _ascii_digits(args.camera) else args.camera, Path(args.output))]
        elif not args.inputs:
            raise MambaESRError("give input images, videos or folders (or --camera N)")
        if args.model and (args.adaptive or args.replay):
            raise MambaESRError("--adaptive switches between the profile's tiers, and --model gives one engine with "
                                "no tiers to switch to: drop --model to let the monitor choose, or --adaptive to run "
                                "that engine")
        from ..runtime.upscaler import Upscaler

        upscaler = Upscaler(args.profile or args.device or "cpu", model=args.model, tier=args.tier,
                            backend=args.backend, tile=args.tile, overlap=args.overlap, precision=args.precision,
                            scale=args.scale, engines_dir=args.engines, threads=args.threads,
                            max_output_megapixels=args.max_megapixels, outscale=args.outscale,
                            max_memory_mb=args.max_memory)
        if args.adaptive or args.replay:
            from ..runtime.adaptive import AdaptiveController

            source = "replay" if args.replay and args.telemetry == "auto" else args.telemetry
            upscaler.controller = AdaptiveController.open(upscaler.profile, source, replay=args.replay,
                                                          start_tier=upscaler.tier)
            print(f"adaptive: {upscaler.controller.describe()}", file=sys.stderr)
        if args.camera is None:
            tag = f"{upscaler.scale}" if args.outscale is None else f"{args.outscale:g}"
            jobs = _jobs(args.inputs, args.output, tag, FORMATS.get(args.format), skipped)
        if args.output and any(dst.parent == Path(args.output) for _, dst in jobs):
            Path(args.output).mkdir(parents=True, exist_ok=True)  # an output folder may be new
    except (MambaESRError, OSError) as exc:
        report.data["error"] = for_cli(exc, FLAGS)
        print(f"error: {report.data['error']}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(__name__).info("setup failed", exc_info=True)
        report.data["error"] = f"could not start: {type(exc).__name__}: {' '.join(str(exc).split())[-300:]}"
        print(f"error: {report.data['error']} (-v shows where)", file=sys.stderr)
        return 2
    report.data["engine"] = upscaler.summary()
    for f in skipped:
        report.item(f, None, "image", "skipped", 0.0, error="named like an earlier run's output")
        print(f"skipped {f}: named like the output of {f.stem[:-len(f'_x{tag}')]}.* beside it "
              f"(an earlier run's result); pass it on its own or use -o to upscale it anyway", file=sys.stderr)
    if not jobs:
        print("error: nothing to do: every file given is an earlier run's output", file=sys.stderr)
        upscaler.close()
        return 2
    if args.verbose:
        print(upscaler.describe(), file=sys.stderr)
    progress = _Progress(len(jobs), enabled=not args.quiet and sys.stderr.isatty())
    failed = 0
    with upscaler, progress.logging():
        try:
            for src, dst in jobs:
                failed += _one(args, upscaler, progress, report, src, dst)
        except KeyboardInterrupt as exc:  # _one said what it cut and removed its temporary output
            return exit_code(exc)
        finally:
            progress.close()
    if upscaler.controller is not None:
        upscaler.controller.close()
        for e in upscaler.controller.events:
            report.data["tier_switches"].append({"at": e.frame, "from": e.from_tier, "to": e.to_tier,
                                                 "reason": e.reason})
            print(f"tier switch at frame/file {e.frame}: {e.from_tier} -> {e.to_tier} ({e.reason})", file=sys.stderr)
        print(f"adaptive: {len(upscaler.controller.events)} tier switches", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(jobs)} inputs failed", file=sys.stderr)
        return 1 if failed < len(jobs) else 2
    return 0


def _one(args, upscaler, progress: _Progress, report: _Report, src, dst: Path) -> int:
    """Upscale one input; 1 when it failed (reported), 0 when done. Ctrl+C propagates, after saying what it cut."""
    live = not isinstance(src, Path)  # a camera index or a GStreamer pipeline
    name = (f"camera {src}" if isinstance(src, int) else "GStreamer pipeline") if live else src.name
    video = live or src.suffix.lower() in _suffixes()[1]
    kind = "camera" if live else "video" if video else "image"
    start = time.perf_counter()
    try:
        if video:
            from ..runtime.video import upscale_video

            _, n = upscale_video(upscaler, src, dst, args.overwrite, args.frames, progress.start(name, "frame"),
                                 codec=args.codec, crf=args.crf)
            note = f" ({n} frames)"
        else:
            upscaler.upscale_file(src, dst, args.overwrite, progress.start(name, "tile"), quality=args.quality,
                                  strip_metadata=args.strip_metadata)
            n, note = None, ""
    except KeyboardInterrupt as exc:
        progress.say(f"{describe(exc)}: {dst} was not written", file=sys.stderr)
        report.item(name if live else src, None, kind, "interrupted", time.perf_counter() - start)
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file never ends the run; it is reported and counted
        message = _describe_failure(src, exc)
        progress.say(f"error: {message}", file=sys.stderr)
        report.item(name if live else src, None, kind, "failed", time.perf_counter() - start, error=message)
        progress.finish_file()
        return 1
    report.item(name if live else src, dst, kind, "done", time.perf_counter() - start, n)
    if not args.json:
        progress.say(f"{name if live else src} -> {dst}{note}")
    progress.finish_file()
    return 0


def _describe_failure(src, exc: Exception) -> str:
    """One line for a failed input: our errors already name the file; anything else gets its name and kind."""
    name = f"camera {src}" if isinstance(src, int) else str(src)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MambaESRError):
        text = for_cli(text, FLAGS)
        return text if name in text else f"{name}: {text}"
    if isinstance(exc, MemoryError):
        return f"{name}: out of memory while processing it; free memory, lower --max-megapixels or crop it"
    return f"{name}: failed with {type(exc).__name__}: {text[-300:]}"


if __name__ == "__main__":
    sys.exit(main())
