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

Exit codes: 0 all done; 1 some inputs failed (the others were written); 2 bad arguments or nothing could run;
130 interrupted (nothing partial is left). Outputs are written atomically and never replace an existing file
unless --overwrite is given; inputs are never modified. A failing file is reported by name and the run goes on.
Without -o, outputs are named <name>_x4.<ext> beside their input, so a folder run skips files named like the output
of another file in the folder (a_x4.png beside a.png): running it twice never upscales its own outputs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import MambaESRError
from ..profiles import BACKENDS, PRECISIONS, builtin_profiles
from ..runtime.monitor import SOURCES
from .flags import deprecated_alias, for_cli

#: The Upscaler / monitor arguments the library's errors name, and the flags that set them here.
FLAGS = {"max_output_megapixels": "--max-megapixels", "overwrite": "--overwrite", "precision": "--precision",
         "model": "--model", "scale": "--scale", "tile": "--tile", "overlap": "--overlap", "source": "--telemetry",
         "replay": "--replay"}


def _suffixes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image, video) suffixes a folder run picks up: what the image writer and the video reader handle."""
    from ..runtime.imageio import WRITE_FORMATS
    from ..runtime.video import VIDEO_SUFFIXES

    return WRITE_FORMATS, VIDEO_SUFFIXES


def _own_output(f: Path, scale: int) -> bool:
    """``f`` is named like the default output of another file beside it (``a_x4.png`` beside ``a.png``)."""
    tag = f"_x{scale}"
    return f.stem.endswith(tag) and len(f.stem) > len(tag) and \
        os.path.lexists(f.with_name(f.stem[:-len(tag)] + f.suffix))


def _jobs(inputs: list[str], out: str | None, scale: int,
          skipped: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; raises MambaESRError for arguments that cannot work. Without ``out``, files of
    an input folder that are the default outputs of their neighbours are left out (and listed in ``skipped``)."""
    jobs = []
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs) or (out is not None and Path(out).is_dir())
    if many and out is not None and Path(out).suffix.lower() in _suffixes()[0]:
        raise MambaESRError(f"-o {out} looks like a file but several images are given; pass a folder")
    image_suffixes, video_suffixes = _suffixes()
    for item in inputs:
        src = Path(item)
        if src.is_dir():
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in image_suffixes + video_suffixes)
            if not files:
                raise MambaESRError(f"{src} holds no images or videos ({', '.join(image_suffixes + video_suffixes)})")
            if out is None:
                own = [f for f in files if _own_output(f, scale)]
                files = [f for f in files if f not in own]
                if skipped is not None:
                    skipped.extend(own)
        elif os.path.lexists(src):
            files = [src]  # a broken or looping link fails as that file, with its reason, not as a bad argument
        else:
            raise MambaESRError(f"{src}: no such file or folder")
        for f in files:
            if out is None:
                dst = f.with_name(f"{f.stem}_x{scale}{f.suffix}")
            elif many:
                dst = Path(out) / f.name
            else:
                dst = Path(out)
            jobs.append((f, dst))
    return jobs


class _Bar:
    """A one-line progress bar on stderr: files done and tiles of the current file."""

    def __init__(self, total_files: int):
        self.total, self.done = total_files, 0

    def tiles(self, name: str):
        def update(done, total):
            width = 30
            fill = int(width * done / total)
            print(f"\r[{self.done + 1}/{self.total}] {name} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} tiles",
                  end="", file=sys.stderr, flush=True)
        return update

    def frames(self, name: str):
        def update(done, total):
            of = f"/{total}" if total else ""
            print(f"\r[{self.done + 1}/{self.total}] {name} frame {done}{of}", end="", file=sys.stderr, flush=True)
        return update


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine selection and fallbacks")
    args = parser.parse_args(argv)
    deprecated_alias(sys.argv[1:] if argv is None else argv, "--monitor", "--telemetry")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _check_arguments(args) -> None:
    """Numbers the parser accepts as types but that cannot work: refused before anything is opened."""
    if args.scale is not None and args.scale < 1:
        raise MambaESRError(f"--scale must be a positive integer (the shipped models are x4), got {args.scale}")
    if args.frames is not None and args.frames < 1:
        raise MambaESRError(f"--frames must be at least 1, got {args.frames}")
    if args.camera is not None:
        cam = args.camera.strip()
        index = cam.lstrip("+-").isdigit()
        if (index and int(cam) < 0) or (not index and "appsink" not in cam):
            raise MambaESRError(f"--camera takes a camera index (0, 1, ...) or a GStreamer pipeline ending in "
                                f"appsink, got {args.camera!r}")


def _run(args) -> int:
    skipped: list[Path] = []
    try:
        _check_arguments(args)
        if args.camera is not None:
            if args.inputs or not args.output:
                raise MambaESRError("--camera N takes no input files and needs -o out.mp4")
            jobs = [(int(args.camera) if args.camera.isdigit() else args.camera, Path(args.output))]
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
                            max_output_megapixels=args.max_megapixels)
        if args.adaptive or args.replay:
            from ..runtime.adaptive import AdaptiveController

            source = "replay" if args.replay and args.telemetry == "auto" else args.telemetry
            upscaler.controller = AdaptiveController.open(upscaler.profile, source, replay=args.replay,
                                                          start_tier=upscaler.tier)
            print(f"adaptive: {upscaler.controller.describe()}", file=sys.stderr)
        if args.camera is None:
            jobs = _jobs(args.inputs, args.output, upscaler.scale, skipped)
        if args.output and any(dst.parent == Path(args.output) for _, dst in jobs):
            Path(args.output).mkdir(parents=True, exist_ok=True)  # an output folder may be new
    except (MambaESRError, OSError) as exc:
        print(f"error: {for_cli(exc, FLAGS)}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(__name__).info("setup failed", exc_info=True)
        print(f"error: could not start: {type(exc).__name__}: {' '.join(str(exc).split())[-300:]} (-v shows where)",
              file=sys.stderr)
        return 2
    for f in skipped:
        print(f"skipped {f}: named like the output of {f.name.replace(f'_x{upscaler.scale}.', '.', 1)} beside it "
              f"(an earlier run's result); pass it on its own or use -o to upscale it anyway", file=sys.stderr)
    if not jobs:
        print("error: nothing to do: every file given is an earlier run's output", file=sys.stderr)
        upscaler.close()
        return 2
    if args.verbose:
        print(upscaler.describe(), file=sys.stderr)
    bar, failed = _Bar(len(jobs)), 0
    with upscaler:
        for src, dst in jobs:
            live = not isinstance(src, Path)  # a camera index or a GStreamer pipeline
            name = (f"camera {src}" if isinstance(src, int) else "GStreamer pipeline") if live else src.name
            try:
                if live or src.suffix.lower() in _suffixes()[1]:
                    from ..runtime.video import upscale_video

                    _, n = upscale_video(upscaler, src, dst, args.overwrite, args.frames,
                                         None if args.quiet else bar.frames(name))
                    note = f" ({n} frames)"
                else:
                    upscaler.upscale_file(src, dst, args.overwrite, None if args.quiet else bar.tiles(name))
                    note = ""
                if not args.quiet:
                    print(file=sys.stderr)
                print(f"{name if live else src} -> {dst}{note}")
            except KeyboardInterrupt:
                print(f"\ninterrupted: {dst} was not written", file=sys.stderr)
                return 130
            except Exception as exc:  # noqa: BLE001 - one bad file never ends the run; it is reported and counted
                if not args.quiet:
                    print(file=sys.stderr)
                print(f"error: {_describe_failure(src, exc)}", file=sys.stderr)
                failed += 1
            bar.done += 1
    if upscaler.controller is not None:
        upscaler.controller.close()
        for e in upscaler.controller.events:
            print(f"tier switch at frame/file {e.frame}: {e.from_tier} -> {e.to_tier} ({e.reason})", file=sys.stderr)
        print(f"adaptive: {len(upscaler.controller.events)} tier switches", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(jobs)} inputs failed", file=sys.stderr)
        return 1 if failed < len(jobs) else 2
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
