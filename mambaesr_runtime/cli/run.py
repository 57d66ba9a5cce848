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
    mambaesr-run shots/ -o out/ --ray [ADDRESS] the folder on Ray Data (the ray extra): resumable, a results table

Photos come out upright (EXIF orientation applied) with their EXIF (no thumbnail, orientation reset), ICC profile,
PNG text and density where the output format holds them; --strip-metadata drops them. Videos, with the video
extra (PyAV): H.264 (VP9 for .webm), audio and subtitles copied packet for packet, every frame's timestamp kept,
rotation applied; without it, OpenCV writes the picture only (mp4v, constant rate) and says so.

Exit codes: 0 all done; 1 some inputs failed (the others were written); 2 bad arguments or nothing could run;
130 interrupted by Ctrl+C, 143 by SIGTERM, 129 by SIGHUP (nothing partial is left in any case). Outputs are
written atomically and never replace an existing file unless --overwrite is given, not even one that appeared
while the run worked (the later of two runs to one output fails); inputs are never modified. A failing file is
reported by name and the run goes on. A damaged video (a frame that cannot be read) fails unless
--allow-frame-loss.
Without -o, outputs are named <name>_x4.<ext> beside their input (a GIF still as .png; a .webm as .mp4 without
PyAV), so a folder run skips files named like the output of another file in the folder (a_x4.png beside a.png):
running it twice never upscales its own outputs. A folder run takes the images and videos directly in it: its
subfolders, hidden files (.DS_Store, ._photo.jpg) and system files (Thumbs.db) are skipped, and said so. For a
folder or several inputs -o is a folder; for one input, -o DIR/ (trailing slash) writes DIR/<name>.
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

from ..errors import MambaESRError, describe_failure
from ..fileio import name_too_long
from ..profiles import BACKENDS, PRECISIONS, builtin_profiles
from ..runtime.monitor import SOURCES
from .flags import deprecated_alias, for_cli
from .signals import describe, exit_code, interrupt_on_termination
from .streams import guarded_streams

#: The Upscaler / monitor arguments the library's errors name, and the flags that set them here.
FLAGS = {"max_output_megapixels": "--max-megapixels", "max_memory_mb": "--max-memory", "overwrite": "--overwrite", "precision": "--precision",
         "model": "--model", "scale": "--scale", "tile": "--tile", "overlap": "--overlap", "source": "--telemetry",
         "replay": "--replay", "outscale": "--outscale", "quality": "--quality", "codec": "--codec",
         "crf": "--crf", "strip_metadata": "--strip-metadata", "engines_dir": "--engines",
         "gpus_per_worker": "--ray-gpus", "cpus_per_worker": "--threads", "allow_frame_loss": "--allow-frame-loss"}
#: The exit codes of an interrupted run: SIGHUP, SIGINT (Ctrl+C), SIGTERM (128 + the signal's number).
INTERRUPTED = (129, 130, 143)
#: --format NAME -> the suffix written.
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tif",
           "bmp": ".bmp"}


def _suffixes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image, video) suffixes a folder run picks up: what the image reader (GIF stills too) and the video reader
    handle."""
    from ..runtime.imageio import WRITE_FORMATS
    from ..runtime.video import VIDEO_SUFFIXES

    return WRITE_FORMATS + (".gif",), VIDEO_SUFFIXES


#: Files a folder run never takes: hidden ones (``.DS_Store``, macOS's ``._photo.jpg`` resource forks, our own
#: temporaries) and the system's metadata files, which are not pictures whatever their suffix.
SYSTEM_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"}


def _hidden(f: Path) -> bool:
    return f.name.startswith(".") or f.name.lower() in SYSTEM_FILES


def _default_suffix(f: Path, image_suffixes: tuple[str, ...], fmt: str | None) -> str:
    """The suffix an output of ``f`` gets when -o does not name it: ``--format``'s for images, else the input's,
    except where that cannot be written: a GIF still becomes PNG (lossless, keeps its transparency), a WebM without
    PyAV (whose VP9 encoder writes .webm) becomes MP4 (OpenCV)."""
    suffix = f.suffix.lower()
    if fmt and suffix in image_suffixes:
        return fmt
    if suffix == ".gif":
        return ".png"
    if suffix == ".webm":
        try:
            import av  # noqa: F401 - only asked whether it is there
        except ImportError:
            return ".mp4"
    return f.suffix


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
          skipped: list[Path] | None = None, ignored: list[tuple[Path, str]] | None = None) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; raises MambaESRError for arguments that cannot work. Without ``out``, files of
    an input folder that are the default outputs of their neighbours are left out (and listed in ``skipped``).
    A folder's subfolders (not searched) and hidden or system files (never pictures; a killed writer's temporary
    ``.<name>.<random>.<ext>`` is one) are left out and listed in ``ignored`` as (path, why). ``tag``: the scale in
    default names (``4`` -> ``a_x4.png``); ``fmt``: the suffix images are written as."""
    from ..runtime.imageio import output_name
    jobs = []
    image_suffixes, video_suffixes = _suffixes()
    too_long = name_too_long(out) if out is not None else None
    if too_long:
        raise MambaESRError(f"-o {out}: {too_long}")
    # -o names a folder when it is one, or ends with a slash (-o new/ for one input: the folder is created)
    out_folder = out is not None and (Path(out).is_dir() or out.endswith(("/", os.sep)))
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs) or out_folder
    if many and out is not None and not out_folder:
        what = "a folder is given" if any(Path(i).is_dir() for i in inputs) else "several inputs are given"
        if os.path.lexists(out):
            raise MambaESRError(f"-o {out} is a file, but {what}: pass a folder (a new or existing one)")
        if Path(out).suffix.lower() in image_suffixes + video_suffixes:
            raise MambaESRError(f"-o {out} looks like a file, but {what}: pass a folder (created if new, e.g. -o "
                                f"{Path(out).with_suffix('')}/); to write one file, give one input")
    if not many and out is not None and fmt is not None and Path(out).suffix.lower() in image_suffixes and \
            FORMATS.get(Path(out).suffix.lower().lstrip(".")) != fmt:
        raise MambaESRError(f"-o {out} and --format {fmt.lstrip('.')} disagree; give one of them")
    for item in inputs:
        src = Path(item)
        if src.is_dir():
            entries = sorted(src.iterdir())
            folders = [p for p in entries if p.is_dir()]
            hidden = [p for p in entries if _hidden(p) and p not in set(folders)]
            if ignored is not None:
                ignored.extend((p, "a subfolder (a folder run reads only the files directly in it)") for p in folders)
                ignored.extend((p, "a hidden or system file") for p in hidden)
            left_out = set(folders) | set(hidden)
            files = [p for p in entries if p not in left_out and p.suffix.lower() in image_suffixes + video_suffixes]
            if not files:
                raise MambaESRError(f"{src} holds no images or videos ({', '.join(image_suffixes + video_suffixes)})"
                                    + (f" directly in it (its {len(folders)} subfolders are not searched: give them "
                                       f"as inputs)" if folders else ""))
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
            suffix = _default_suffix(f, image_suffixes, fmt)
            if out is None:
                dst = f.with_name(f"{f.stem}_x{tag}{suffix}")
            elif many:
                dst = Path(out) / output_name(f.name, suffix)
            else:
                dst = Path(out)
            jobs.append((f, dst))
    by_output: dict[Path, Path] = {}
    for f, dst in jobs:  # a.gif and a.png, or a.jpg and a.png with --format png, in one folder run
        if dst in by_output:
            raise MambaESRError(f"{by_output[dst]} and {f} would both be written to {dst}; upscale one of them on its "
                                f"own (with -o), or rename it")
        by_output[dst] = f
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
    parser.add_argument("--allow-frame-loss", action="store_true",
                        help="write the frames of a damaged video that decode, leaving out the rest with a warning "
                             "(default: a video with a frame that cannot be read fails, and nothing is written)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON summary of the run to stdout (inputs, outputs, engine, tier switches, "
                             "times, failures) instead of the per-file lines")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="run a folder on Ray Data (the ray extra): SRC -o DST --ray [ADDRESS]; ADDRESS: a cluster "
                             "(HOST:6379, ray://HOST:10001, auto); none: RAY_ADDRESS's, else Ray on this machine. "
                             "Resumable: complete outputs are skipped; a results table is written into DST")
    parser.add_argument("--ray-workers", metavar="N|MIN-MAX",
                        help="with --ray: the actor pool's size (default: 1 up to what the cluster's CPUs or GPUs "
                             "hold, --threads CPUs each)")
    parser.add_argument("--ray-gpus", type=float, metavar="G",
                        help="with --ray: GPUs each actor reserves (default: 1 when the profile runs on a GPU, else 0)")
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
            code = _run(args, report) if args.ray is None else _run_ray(args, report)
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
    ignored: list[tuple[Path, str]] = []
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
            jobs = _jobs(args.inputs, args.output, tag, FORMATS.get(args.format), skipped, ignored)
        if args.output and any(dst.parent == Path(args.output) for _, dst in jobs):
            try:
                Path(args.output).mkdir(parents=True, exist_ok=True)  # an output folder may be new
            except OSError as exc:
                raise MambaESRError(f"-o {args.output}: cannot create the output folder ({exc.strerror or exc}); "
                                    f"give another folder") from exc
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
    _say_ignored(ignored, report)
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


#: Flags a --ray run cannot take (it upscales the images of one folder into another).
RAY_REFUSES = {"camera": "--camera", "adaptive": "--adaptive", "replay": "--replay", "frames": "--frames",
               "codec": "--codec", "crf": "--crf", "allow_frame_loss": "--allow-frame-loss"}


def _ray_workers(text: str | None):
    if text is None:
        return None
    low, _, high = text.partition("-")
    if _ascii_digits(low) and (not high or _ascii_digits(high)) and 1 <= int(low) <= int(high or low):
        return int(low) if not high else (int(low), int(high))
    raise MambaESRError(f"--ray-workers takes N or MIN-MAX (actors, 1 <= MIN <= MAX), e.g. 4 or 1-16; got {text!r}")


def _run_ray(args, report: _Report) -> int:
    """SRC -o DST --ray: the folder on Ray Data (mambaesr_runtime.distributed.upscale_dataset); the failures and a
    summary are printed, every row is in the results table (and in --json)."""
    try:
        refused = [flag for name, flag in RAY_REFUSES.items() if getattr(args, name) not in (None, False)]
        if refused:
            raise MambaESRError(f"--ray upscales the images of a folder; {', '.join(refused)} cannot go with it "
                                f"(run videos and cameras without --ray)")
        if len(args.inputs) != 1 or not args.output:
            hint = (f" (--ray took {args.ray!r} as the cluster's address: write SRC -o DST --ray, or --ray=ADDRESS)"
                    if args.ray and not args.inputs else "")
            raise MambaESRError(f"--ray takes one input folder and -o DST, a folder for the outputs: mambaesr-run "
                                f"SRC -o DST --ray [ADDRESS]{hint}")
        _check_arguments(args)
        workers = _ray_workers(args.ray_workers)
        from ..distributed import upscale_dataset

        options = {"model": args.model, "tier": args.tier, "backend": args.backend, "tile": args.tile,
                   "overlap": args.overlap, "precision": args.precision, "scale": args.scale,
                   "engines_dir": args.engines, "threads": args.threads,
                   "max_output_megapixels": args.max_megapixels, "outscale": args.outscale}
        run = upscale_dataset(args.inputs[0], args.output, args.profile or args.device or "cpu", upscaler=options,
                              fmt=FORMATS.get(args.format), quality=args.quality,
                              strip_metadata=args.strip_metadata, overwrite=args.overwrite,
                              address=args.ray or None, workers=workers, gpus_per_worker=args.ray_gpus,
                              progress=not args.quiet and sys.stderr.isatty())
    except KeyboardInterrupt as exc:
        run = getattr(exc, "run", None)
        if run is not None:
            _ray_report(args, report, run)
        raise
    except (MambaESRError, OSError) as exc:
        report.data["error"] = for_cli(exc, FLAGS)
        print(f"error: {report.data['error']}", file=sys.stderr)
        return 2
    except Exception as exc:  # Ray's own errors (a cluster that went away) end the run as "could not run"
        logging.getLogger(__name__).info("the Ray run failed", exc_info=True)
        report.data["error"] = f"the Ray run failed: {type(exc).__name__}: {' '.join(str(exc).split())[-300:]}"
        print(f"error: {report.data['error']} (-v shows where; a rerun resumes)", file=sys.stderr)
        return 2
    return _ray_report(args, report, run)


def _ray_report(args, report: _Report, run) -> int:
    report.data["engine"] = run.engine
    report.data["ray"] = {"address": run.address, "workers": list(run.workers), "attempts": run.attempts,
                          "images_per_second": round(run.images_per_second, 3), "results": run.results,
                          "results_parquet": run.results_parquet, "error": run.error}
    videos = _suffixes()[1]
    for row in run.rows():
        kind = "video" if os.path.splitext(row["input"])[1].lower() in videos else "image"
        report.item(row["input"], row["output"], kind, row["status"], row["seconds"] or 0.0,
                    error=None if row["error"] is None else for_cli(row["error"], FLAGS))
        if row["status"] == "failed":
            print(f"error: {for_cli(row['error'], FLAGS)}", file=sys.stderr)
    if run.error:
        print(f"warning: the Ray job failed and was run again ({run.attempts} runs): {run.error}", file=sys.stderr)
    total = run.done + run.skipped + run.failed + run.interrupted
    summary = (f"{run.done} of {total} images upscaled, {run.skipped} skipped (complete outputs), {run.failed} "
               f"failed in {run.seconds:.1f} s ({run.images_per_second:.2f} images/s on {run.workers[0]}-"
               f"{run.workers[1]} Ray workers); results: {run.results}")
    print(summary, file=sys.stderr if args.json else sys.stdout, flush=True)
    if run.failed:
        return 1 if run.done + run.skipped else 2
    return 0
def _say_ignored(ignored: list[tuple[Path, str]], report: _Report) -> None:
    """One line per folder and kind for what a folder run left out (subfolders, hidden and system files), and a
    "skipped" entry each in the --json report."""
    groups: dict[tuple[Path, str], list[Path]] = {}
    for path, why in ignored:
        report.item(path, None, "folder" if why.startswith("a subfolder") else "image", "skipped", 0.0, error=why)
        groups.setdefault((path.parent, why), []).append(path)
    for (folder, why), paths in groups.items():
        names = ", ".join(p.name for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        if why.startswith("a subfolder"):
            text = (f"{len(paths)} subfolder{'s' if len(paths) > 1 else ''} ({names}): a folder run reads only the "
                    f"files directly in it; give a subfolder as an input to upscale it")
        else:
            text = f"{len(paths)} hidden or system file{'s' if len(paths) > 1 else ''} ({names})"
        print(f"note: {folder}: skipped {text}", file=sys.stderr)


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
                                 codec=args.codec, crf=args.crf, allow_frame_loss=args.allow_frame_loss)
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
    """One line for a failed input (errors.describe_failure), in the CLI's flag names."""
    return for_cli(describe_failure(f"camera {src}" if isinstance(src, int) else src, exc), FLAGS)


if __name__ == "__main__":
    sys.exit(main())
