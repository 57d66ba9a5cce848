"""``mambaesr-export``: the engines of a device profile, verified, with manifests (needs the torch extra).

    mambaesr-export --list-devices
    mambaesr-export --device orin                 ONNX per tier (+ TensorRT plans where TensorRT is installed)
    mambaesr-export --device rpi5 -o engines/pi   ONNX Runtime artifacts (its int8 tier too)
    mambaesr-export --device cpu --precision int8 every tier's int8 QDQ graph (calibrated on ../shared/data/train)
    mambaesr-export --profile my_board.yaml --weights runs/latest/model_best.safetensors
    mambaesr-export --device orin --plans-only    on the device: plans from the copied ONNX files (no torch)
    mambaesr-export --device orin --adopt-plan engines/orin/student_x4_t64_b8_fp16.plan   a trtexec-built plan

Without TensorRT (any machine but the device) it writes and verifies the ONNX files and manifests, prints the
trtexec commands that build the same engines on the device, writes them to build_engines.sh, and exits 0.
With TensorRT, every plan is run next to ONNX Runtime fp32 on real tiles and a saturated one before it is installed;
a plan below 40 dB PSNR on any tile is refused. --adopt-plan applies the same check to a plan built by those
trtexec commands and writes its manifest, so the runtime loads it.
Exit codes: 0 done; 2 bad arguments, missing weights/dependencies or a failed check (nothing partial is left).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..artifacts.names import plan_name
from ..errors import MambaESRError
from ..fileio import atomic_write
from ..profiles import PRECISIONS, check_threads
from .flags import for_cli
from .signals import describe, exit_code, guarded_main

#: The export arguments the library's errors name, and the flags that set them here.
FLAGS = {"weights": "--weights", "tiers": "--tier", "simplify_graph=False": "--no-simplify", "force": "--force",
         "calibration_dir": "--calibration", "precision": "--precision"}


def _devices_table() -> str:
    from ..profiles import builtin_profiles, load_profile

    rows = [("device", "backends", "precision", "TensorRT", "tiers (variant tile/batch)", "description")]
    for name in builtin_profiles():
        p = load_profile(name)
        rows.append((name, ",".join(p.backends), p.precision, p.tensorrt or "-",
                     " ".join(f"{t.name}={t.variant}:{t.tile}/{t.batch}" for t in p.tiers), p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _plan_note(manifest) -> str:
    v = manifest.verification
    return (f"TensorRT {manifest.versions.get('tensorrt')}, {manifest.precision}, {v.get('plan_vs_ort_psnr_db')} dB vs "
            f"ONNX Runtime fp32 (worst tile {v.get('plan_vs_ort_min_tile_psnr_db')} dB), {v.get('infer_ms')} ms per "
            f"batch")


def main(argv: list[str] | None = None) -> int:
    return guarded_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--device", help="built-in device profile (see --list-devices)")
    target.add_argument("--profile", help="a device profile YAML file")
    parser.add_argument("--list-devices", action="store_true", help="print the built-in device profiles")
    parser.add_argument("--weights", action="append", default=[],
                        help="checkpoint (.safetensors with its .json) to use for its variant; repeatable "
                             "(default: the shipped weights)")
    parser.add_argument("--tier", action="append", help="export only this tier (repeatable)")
    parser.add_argument("-o", "--output", help="output folder (default engines/<device>)")
    parser.add_argument("--force", action="store_true", help="re-export even if the artifacts are up to date")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnx-simplifier")
    parser.add_argument("--onnx-only", action="store_true", help="stop after the verified ONNX (no TensorRT build)")
    parser.add_argument("--plans-only", action="store_true",
                        help="on the device: build TensorRT plans from ONNX files exported (and verified) on another "
                             "machine and copied into the output folder; needs TensorRT, not torch")
    parser.add_argument("--adopt-plan", action="append", metavar="PLAN",
                        help="on the device: check a plan built by the trtexec commands of build_engines.sh against "
                             "ONNX Runtime and write its manifest (repeatable); needs TensorRT, not torch")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="every chosen tier's precision (default: each tier's own, else the profile's); int8 also "
                             "makes each tier's int8 QDQ graph (ONNX Runtime static quantization, checked against "
                             "fp32)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="training images to calibrate int8 on (default ../shared/data/train)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for verification")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    try:
        if args.list_devices:
            print(_devices_table())
            return 0
        if not (args.device or args.profile):
            raise MambaESRError("say which device to export for: --device NAME (see --list-devices) or "
                                "--profile FILE.yaml")
        from ..profiles import load_profile

        check_threads(args.threads, "--threads")  # before the profile, the weights and any export work

        profile = load_profile(args.device or args.profile)
        from ..export.pipeline import export_profile

        for flag, given in (("--plans-only", args.plans_only), ("--adopt-plan", args.adopt_plan)):
            if given and (args.onnx_only or profile.tensorrt is None):
                raise MambaESRError(f"{flag} is about TensorRT plans; profile {profile.name} "
                                    + ("has no TensorRT target" if profile.tensorrt is None else "with --onnx-only is "
                                       "a contradiction"))
        if args.adopt_plan:
            from ..export.pipeline import adopt_plan

            if args.plans_only or args.weights or args.tier:
                raise MambaESRError("--adopt-plan takes the plans themselves; leave out --plans-only, --weights and "
                                    "--tier (the tier is found by the plan's name)")
            for plan in args.adopt_plan:
                art = adopt_plan(plan, profile, threads=args.threads)
                print(f"{art.tier.name:10s} {art.plan}  (adopted; {_plan_note(art.plan_manifest)})")
            return 0
        say = lambda m: print(m, file=sys.stderr, flush=True)
        if args.plans_only:
            from ..export.pipeline import build_plans

            if args.weights:
                raise MambaESRError("--plans-only builds plans from the copied ONNX files; leave out --weights")
            results = build_plans(profile, args.output, args.tier, args.force, threads=args.threads, progress=say,
                                  precision=args.precision)
        else:
            # export_profile looks for TensorRT itself when the profile targets it and a build is asked for.
            results = export_profile(profile, args.output, args.weights, args.tier, args.force,
                                     not args.no_simplify, build=not args.onnx_only, threads=args.threads,
                                     progress=say, precision=args.precision, calibration_dir=args.calibration)
    except KeyboardInterrupt as exc:  # Ctrl+C, SIGTERM or SIGHUP: the artifacts' temporaries are already removed
        print(f"{describe(exc)}; nothing partial was left behind", file=sys.stderr)
        return exit_code(exc)
    except (MambaESRError, OSError) as exc:
        print(f"error: {for_cli(exc, FLAGS)}", file=sys.stderr)
        return 2

    out = results[0].onnx.parent
    # each pad-aware graph's mask-free twin (for images that cover a whole tile) is listed and built like a tier
    results = [a for art in results for a in (art, art.interior) if a is not None]
    for art in results:
        v = art.manifest.verification
        state = "up to date" if art.reused else "exported"
        checks = f"ORT vs torch {v.get('ort_vs_torch_max_abs_err', float('nan')):.1e}"
        if "fp16_psnr_vs_fp32_db" in v:
            checks += f", fp16 {v['fp16_psnr_vs_fp32_db']} dB vs fp32"
        if "int8_vs_fp32_psnr_db" in v:
            checks = (f"int8 {v['int8_vs_fp32_psnr_db']} dB vs fp32 on real tiles (worst {v['int8_vs_fp32_min_tile_psnr_db']}"
                      f" dB; saturated tile {v['int8_vs_fp32_saturated_tile_psnr_db']} dB)")
        if "tensorrt_compat" in v:
            checks += f", TensorRT {v['tensorrt_compat']['target']} ops ok"
        if art.manifest.interior_of:
            checks += f", {v.get('interior_vs_pad_aware_max_abs_err', float('nan')):.1e} from the pad-aware graph"
        print(f"{art.tier.name:10s} {art.onnx}  ({state}; {checks})")
        if art.plan is not None:
            print(f"{'':10s} {art.plan}  ({_plan_note(art.plan_manifest)})")
    pending = [a for a in results if a.trtexec and a.plan is None]
    if pending:
        selector = f"--device {profile.name}" if args.device else f"--profile {args.profile}"
        adopt = f"mambaesr-export {selector} " + " ".join(
            f"--adopt-plan {plan_name(a.onnx.name, a.precision if a.precision == 'int8' else a.tier.precision_in(profile), profile.dla_core)}"
            for a in pending)
        script = out / "build_engines.sh"
        body = ("#!/bin/sh\n# Build the TensorRT engines of profile " + profile.name + " on the device itself "
                "(plans are tied to the TensorRT version and GPU that build them), with the trtexec of TensorRT 8.5 "
                "or 10.x\n# (11.x has no --fp16: there, run mambaesr-export " + selector + " --plans-only).\n"
                "# Or, with the TensorRT Python bindings installed: mambaesr-export " + selector + " --plans-only\n"
                "set -e\ncd \"$(dirname \"$0\")\"\n" + "\n".join(a.trtexec for a in pending) + "\n"
                "# The runtime loads a plan only with its manifest, written after the parity check against ONNX "
                "Runtime (needs\n# the TensorRT Python bindings and PyCUDA, as the runtime itself):\n# " + adopt
                + "\n")
        atomic_write(script, lambda tmp: Path(tmp).write_text(body))
        script.chmod(0o755)
        print(f"\nTensorRT is not installed here: the ONNX files and manifests are ready. On the "
              f"{profile.name} device, build the engines with (also in {script}):")
        print(f"  cd {out}")
        for a in pending:
            print(f"  {a.trtexec}")
        print(f"then check them and write their manifests (the runtime needs them):\n  {adopt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
