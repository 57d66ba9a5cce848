"""``mambaesr-export``'s pipeline: checkpoint -> static ONNX per tier -> onnxsim -> verify -> TensorRT plan + manifests.

For each tier of a device profile (needs torch, onnx and onnxsim):

1. load the tier variant's checkpoint (the shipped weights unless others are given);
2. export ONNX with the tier's static shape ``(batch, 3, tile, tile)`` and the profile's opset, then simplify it;
3. verify: ONNX Runtime vs PyTorch on random tiles and real image tiles (fp32 max abs error <= ``FP32_TOLERANCE``),
   and, for fp16 profiles, the model in half precision stays finite and within ``FP16_MIN_PSNR`` dB of fp32;
4. for TensorRT profiles, check the graph against the parser's supported-op table of the profile's TensorRT;
5. if ``tensorrt`` imports, build the plan (timing cache reused across builds), run it next to ONNX Runtime fp32 on
   real tiles and a saturated one (:mod:`.plan_parity`), and install it with its manifest only if it is within
   40 dB on every tile; otherwise give the exact ``trtexec`` command that builds the same engine on the device
   (:func:`adopt_plan` then checks and installs such a plan the same way).

Every artifact gets an :class:`~.manifest.EngineManifest` beside it; re-running skips artifacts whose manifest says
they were made from the same weights by the same tool versions. Every file is written atomically.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CheckpointError, ConfigError, ExportError, require_torch
from ..fileio import atomic_write, package_dir, sha256_file
from ..profiles import DeviceProfile, Tier
from .manifest import (
    PAD_VALUE,
    EngineManifest,
    artifact_stem,
    manifest_path,
    plan_name,
    read_manifest,
    write_manifest,
)
from .onnx_export import forbidden_ops

log = logging.getLogger(__name__)

#: ONNX Runtime vs PyTorch, fp32: the largest absolute difference on outputs in [0, 1] that passes.
FP32_TOLERANCE = 1e-4
#: The model run in fp16 must stay within this PSNR of its fp32 output on real tiles (and finite).
FP16_MIN_PSNR = 40.0


@dataclass(frozen=True)
class TierArtifacts:
    """What the export produced (or found up to date) for one tier."""

    tier: Tier
    onnx: Path
    manifest: EngineManifest
    plan: Path | None = None
    plan_manifest: EngineManifest | None = None
    trtexec: str | None = None
    """The trtexec command that builds the plan on the device (TensorRT profiles without TensorRT here)."""
    reused: bool = False
    """True when an up-to-date ONNX artifact was found and nothing was re-exported."""
    notes: tuple[str, ...] = field(default_factory=tuple)


def shipped_weights_dir() -> Path:
    return package_dir("mambaesr_runtime") / "weights"


def resolve_weights(variants: set[str], given: list[str | os.PathLike] = (), scale: int = 4) -> dict[str, Path]:
    """Map each needed variant to a checkpoint: ``given`` ones (by the variant their config names) first, then the
    shipped ``weights/<variant>_x<scale>.safetensors``. A variant with neither is an error that says what to do."""
    from ..model.checkpoint import checkpoint_paths, read_checkpoint_meta

    found: dict[str, Path] = {}
    for path in given:
        weights, _ = checkpoint_paths(path)
        meta = read_checkpoint_meta(path)
        if meta["config"].scale != scale:
            raise CheckpointError(f"{weights} is an x{meta['config'].scale} model; this profile exports x{scale}")
        found.setdefault(meta["variant"], weights)
    for name in sorted(variants - set(found)):
        shipped = shipped_weights_dir() / f"{name}_x{scale}.safetensors"
        if shipped.is_file():
            found[name] = shipped
    missing = sorted(variants - set(found))
    if missing:
        raise CheckpointError(f"no weights for variant(s) {missing}: pass --weights with a checkpoint of each (train "
                              f"one with mambaesr-train), or export only some tiers with --tier")
    return {name: found[name] for name in variants}


def tool_versions() -> dict:
    """Versions that decide what the exported graph looks like (a change means re-export)."""
    import onnx
    import onnxruntime
    import onnxsim

    torch = require_torch()
    return {"mambaesr": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxsim": getattr(onnxsim, "__version__", "unknown"), "onnxruntime": onnxruntime.__version__}


def real_tiles(tile: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` tiles of real image content (the shipped sample, reflected up to ``tile`` if smaller), with flips
    and transposes so they differ: float32 (count, 3, tile, tile) in [0, 1]."""
    from ..runtime.imageio import decode, read_image

    img = decode(read_image(package_dir("mambaesr_runtime") / "data" / "sample.png")).rgb
    if min(img.shape[:2]) < tile:
        pad = max(0, tile - img.shape[0]), max(0, tile - img.shape[1])
        img = np.pad(img, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="reflect" if max(pad) < min(img.shape[:2])
                     else "symmetric")
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, tile, tile), np.float32)
    for i in range(count):
        y = rng.integers(0, img.shape[0] - tile + 1)
        x = rng.integers(0, img.shape[1] - tile + 1)
        crop = img[y:y + tile, x:x + tile]
        crop = np.rot90(crop, i % 4)
        out[i] = (crop[:, ::-1] if (i // 4) % 2 else crop).transpose(2, 0, 1)
    return out


def verify_fp32(model, onnx_path: Path, inputs: list[np.ndarray], threads: int = 2) -> dict:
    """Max abs error between ONNX Runtime and PyTorch over batches ``inputs``; raises above ``FP32_TOLERANCE``."""
    from .parity import compare_with_torch

    errors = [compare_with_torch(model, onnx_path, x, threads)["max_abs_err"] for x in inputs]
    worst = max(errors)
    if not np.isfinite(worst) or worst > FP32_TOLERANCE:
        raise ExportError(f"{onnx_path.name}: ONNX Runtime and PyTorch disagree by {worst:.3g} (max abs, fp32), "
                          f"above {FP32_TOLERANCE:g}; the export or simplification changed the model. Re-export "
                          f"with --no-simplify to tell which, and report it")
    return {"ort_vs_torch_max_abs_err": worst, "ort_vs_torch_batches": len(inputs)}


def verify_fp16(model, tiles: np.ndarray, device: str = "cpu") -> dict:
    """Run the model in half precision on ``tiles``: it must stay finite and within ``FP16_MIN_PSNR`` of fp32."""
    torch = require_torch()
    import copy

    x = torch.from_numpy(tiles).to(device)
    with torch.no_grad():
        ref = model.to(device).float()(x).clamp(0, 1)
        half = copy.deepcopy(model).half()
        out = half(x.half()).float()
    if not torch.isfinite(out).all():
        raise ExportError("the model produces inf/NaN in fp16; build this profile's engines with precision fp32 "
                          "(a profile with precision: fp32) or retrain")
    mse = float(((out.clamp(0, 1) - ref) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
    if psnr < FP16_MIN_PSNR:
        raise ExportError(f"in fp16 the model's output is only {psnr:.1f} dB PSNR from fp32 (need >= "
                          f"{FP16_MIN_PSNR:g}); build with precision fp32 or retrain")
    return {"fp16_psnr_vs_fp32_db": round(psnr, 2), "fp16_tiles": int(tiles.shape[0]), "fp16_device": device}


def simplify(src: Path, dst_tmp: str) -> None:
    import onnx
    import onnxsim

    model, ok = onnxsim.simplify(onnx.load(str(src)))
    if not ok:
        raise ExportError(f"onnx-simplifier could not validate the simplified {src.name}; re-export with "
                          f"--no-simplify")
    onnx.save(model, dst_tmp)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")  # datetime.UTC is 3.11+


def _up_to_date(path: Path, expect: dict) -> EngineManifest | None:
    """The existing manifest of ``path`` if the artifact is intact and made from the same inputs by the same tools."""
    if not path.is_file() or not manifest_path(path).is_file():
        return None
    try:
        found = read_manifest(path)
    except ConfigError:
        return None
    same = all(getattr(found, k) == v for k, v in expect.items())
    return found if same and sha256_file(path) == found.artifact_sha256 else None


def engine_pad_value(model) -> float | None:
    """What the engines of ``model`` are padded with: line-scan models export pad-aware (the runtime fills what
    overhangs an image with PAD_VALUE and the graph keeps every scan and conv from seeing it, as for the whole
    image); others (raster) are padded by reflection (``None``)."""
    return PAD_VALUE if model.cfg.scan_layout == "lines" else None


def export_tier(model, weights: Path, profile: DeviceProfile, tier: Tier, out_dir: Path, versions: dict,
                force: bool = False, simplify_graph: bool = True, threads: int = 2,
                verify_inputs: np.ndarray | None = None) -> TierArtifacts:
    """Export, simplify and verify one tier's ONNX file into ``out_dir``; reuse it when up to date."""
    scale = model.cfg.scale
    onnx_path = out_dir / f"{artifact_stem(tier.variant, scale, tier.tile, tier.batch)}.onnx"
    shape = (tier.batch, 3, tier.tile, tier.tile)
    weights_sha = sha256_file(weights)
    pad_value = engine_pad_value(model)
    expect = {"kind": "onnx", "variant": tier.variant, "input_shape": shape, "opset": profile.opset,
              "weights_sha256": weights_sha, "versions": versions, "pad_value": pad_value}
    if not force and (found := _up_to_date(onnx_path, expect)) is not None:
        log.info("%s is up to date (same weights, same tools); skipped", onnx_path)
        return TierArtifacts(tier, onnx_path, found, reused=True)

    started = time.perf_counter()
    was_pad_aware = getattr(model, "pad_aware", False)
    if pad_value is not None:
        model.set_pad_aware(True)
    try:
        verification = _export_verified(model, onnx_path, profile, tier, shape, verify_inputs, simplify_graph,
                                        threads, pad_value)
    finally:
        model.pad_aware = was_pad_aware
    manifest = EngineManifest(
        kind="onnx", artifact=onnx_path.name, artifact_sha256=sha256_file(onnx_path), variant=tier.variant,
        scale=scale, input_shape=shape, output_shape=(tier.batch, 3, tier.tile * scale, tier.tile * scale),
        precision="fp32", opset=profile.opset, onnx_sha256=sha256_file(onnx_path), weights_sha256=weights_sha,
        profile=profile.name, tier=tier.name, tensorrt_target=profile.tensorrt, versions=versions,
        build_time=_now(), verification={**verification, "export_s": round(time.perf_counter() - started, 1),
                                         "host": platform.machine()}, pad_value=pad_value)
    write_manifest(manifest, out_dir)
    log.info("exported %s (%s)", onnx_path, verification)
    return TierArtifacts(tier, onnx_path, manifest)


def _export_verified(model, onnx_path: Path, profile: DeviceProfile, tier: Tier, shape: tuple, verify_inputs,
                     simplify_graph: bool, threads: int, pad_value: float | None) -> dict:
    """Export, simplify, check and verify one tier's graph into ``onnx_path`` (atomically); the verification."""
    import onnx

    from .onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="mambaesr-export-") as work:
        raw = Path(work) / "raw.onnx"
        export_onnx(model, raw, tier.tile, tier.tile, tier.batch, opset=profile.opset)

        verification: dict = {}

        def write(tmp):
            if simplify_graph:
                simplify(raw, tmp)
            else:
                Path(tmp).write_bytes(raw.read_bytes())
            graph = onnx.load(tmp)
            verification["nodes"] = len(graph.graph.node)
            if profile.tensorrt is not None:
                from .trt_compat import check_graph

                report = check_graph(graph, profile.tensorrt)
                verification["tensorrt_compat"] = {"target": profile.tensorrt, "ok": True,
                                                   "ops": report.get("ops", {})}
            rng = np.random.default_rng(0)
            batches = [rng.random(shape, dtype=np.float32),
                       verify_inputs if verify_inputs is not None else real_tiles(tier.tile, tier.batch)]
            if pad_value is not None:  # the padded path too: real tiles whose bottom and right thirds are padding
                padded = batches[1].copy()
                padded[..., 2 * tier.tile // 3:, :] = pad_value
                padded[..., 2 * tier.tile // 3:] = pad_value
                batches.append(padded)
            verification.update(verify_fp32(model, Path(tmp), batches, threads))
            if profile.precision == "fp16":
                torch = require_torch()
                device = "cuda" if torch.cuda.is_available() else "cpu"
                # fp16 on a CPU is slow: one real tile of the tier's shape there; the whole batch on a GPU.
                tiles = batches[1] if device == "cuda" else batches[1][:1]
                verification.update(verify_fp16(model, tiles, device))

        atomic_write(onnx_path, write, suffix=".onnx")
    return verification


def build_plan(art: TierArtifacts, profile: DeviceProfile, trt, cuda=None, force: bool = False,
               threads: int = 2) -> TierArtifacts:
    """Build (or reuse) the TensorRT plan of a tier from its verified ONNX, check it against ONNX Runtime fp32 and
    install it with its manifest. A plan that fails the check is refused (:class:`ExportError`) and nothing is
    written: not the plan, not its manifest, not the timing cache."""
    from .plan_parity import check_plan_parity
    from .tensorrt_build import build_engine

    plan = plan_name(art.onnx, profile.precision, profile.dla_core)
    expect = {"kind": "plan", "onnx_sha256": art.manifest.onnx_sha256, "precision": profile.precision,
              "dla_core": profile.dla_core}
    found = None if force else _up_to_date(plan, expect)
    if (found is not None and found.versions.get("tensorrt") == trt.__version__
            and "plan_vs_ort_psnr_db" in found.verification):
        log.info("%s is up to date; skipped", plan)
        return replace(art, plan=plan, plan_manifest=found)
    cache = art.onnx.parent / "timing.cache"
    # Built and checked in a scratch folder beside the plan (same file system: the install is a rename).
    with tempfile.TemporaryDirectory(prefix=f".{plan.name}.", dir=plan.parent) as work:
        candidate, cache_copy = Path(work) / plan.name, Path(work) / cache.name
        if cache.is_file():
            shutil.copyfile(cache, cache_copy)
        info = build_engine(art.onnx, candidate, target=profile.tensorrt, input_shape=art.manifest.input_shape,
                            precision=profile.precision, workspace_mb=profile.workspace_mb,
                            dla_core=profile.dla_core, timing_cache=cache_copy, trt=trt, cuda=cuda)
        manifest = replace(art.manifest, kind="plan", artifact=plan.name, artifact_sha256=info["plan_sha256"],
                           precision=profile.precision, dla_core=profile.dla_core, device=info.get("device"),
                           versions={**art.manifest.versions, "tensorrt": trt.__version__}, build_time=_now(),
                           verification={"built_by": "mambaesr-export", "build_s": round(info["build_seconds"], 1),
                                         "strongly_typed": info["strongly_typed"]})
        parity = check_plan_parity(candidate, manifest, art.onnx, trt=trt, cuda=cuda, threads=threads)
        manifest = replace(manifest, verification={**manifest.verification, **parity})
        _install_plan(candidate, plan, manifest)
        if info["timing_cache"] is not None and cache_copy.is_file():
            os.replace(cache_copy, cache)
    return replace(art, plan=plan, plan_manifest=manifest)


def _install_plan(candidate: Path, plan: Path, manifest: EngineManifest) -> None:
    """Move a checked plan into place, then write its manifest. The old manifest goes first: an interruption leaves
    the old pair, or a plan without a manifest (which the runtime refuses), never a plan with another's manifest."""
    manifest_path(plan).unlink(missing_ok=True)
    os.replace(candidate, plan)
    write_manifest(manifest, plan.parent)


def adopt_plan(plan_path: str | os.PathLike, profile: DeviceProfile, trt=None, cuda=None,
               threads: int = 2) -> TierArtifacts:
    """Write the manifest of a plan built outside mambaesr-export (the ``trtexec`` commands of ``build_engines.sh``)
    after the same parity check as :func:`build_plan`, so the runtime will load it.

    The plan must carry the name those commands give it, beside the verified ONNX it was built from (the tier is
    found by that name). It is run on this device with the installed TensorRT, which the manifest records with this
    GPU. A plan that fails the check gets no manifest (:class:`ExportError`); the plan file itself is left alone.
    """
    from .plan_parity import check_plan_parity
    from .tensorrt_build import gpu_name
    from .trt_compat import require_pycuda, require_tensorrt, tensorrt_family

    plan = Path(plan_path)
    if not plan.is_file():
        raise ExportError(f"plan {plan} not found; build it with the trtexec commands in build_engines.sh first")
    trt, cuda = require_tensorrt(trt), require_pycuda(cuda)
    if tensorrt_family(trt.__version__) != profile.tensorrt:
        raise ExportError(f"TensorRT {trt.__version__} is installed but profile {profile.name} targets TensorRT "
                          f"{profile.tensorrt}; adopt plans on the device the profile describes")
    names = {plan_name(f"{artifact_stem(t.variant, 4, t.tile, t.batch)}.onnx", profile.precision,
                       profile.dla_core).name: t for t in profile.tiers}
    if plan.name not in names:
        raise ExportError(f"{plan.name} is not the name of a plan of profile {profile.name}; its tiers' plans are "
                          f"{sorted(names)} (the names the trtexec commands in build_engines.sh write)")
    art = verified_onnx(profile, names[plan.name], plan.parent)
    manifest = replace(art.manifest, kind="plan", artifact=plan.name, artifact_sha256=sha256_file(plan),
                       precision=profile.precision, dla_core=profile.dla_core, device=gpu_name(cuda),
                       versions={**art.manifest.versions, "tensorrt": trt.__version__}, build_time=_now(),
                       verification={"built_by": "trtexec (adopted by mambaesr-export --adopt-plan)"})
    parity = check_plan_parity(plan, manifest, art.onnx, trt=trt, cuda=cuda, threads=threads)
    manifest = replace(manifest, verification={**manifest.verification, **parity})
    write_manifest(manifest, plan.parent)
    log.info("adopted %s: %s", plan, parity)
    return replace(art, plan=plan, plan_manifest=manifest)


def verified_onnx(profile: DeviceProfile, tier: Tier, out_dir: Path) -> TierArtifacts:
    """An ONNX artifact exported elsewhere: present, intact (sha256 = manifest) and made for this tier's shape."""
    onnx_path = out_dir / f"{artifact_stem(tier.variant, 4, tier.tile, tier.batch)}.onnx"
    hint = (f"export it on a machine with the torch extra (mambaesr-export --device {profile.name} --onnx-only) and "
            f"copy {out_dir} here")
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} not found: {hint}")
    try:
        manifest = read_manifest(onnx_path)
    except ConfigError as exc:
        raise ExportError(f"{exc}; {hint}") from exc
    if sha256_file(onnx_path) != manifest.artifact_sha256:
        raise ExportError(f"{onnx_path} does not match its manifest's sha256 (changed or damaged in the copy); {hint}")
    try:
        import onnx
    except ImportError:  # the TensorRT parser reads the file either way; the op check then ran where it was made
        onnx = None
    if onnx is not None and (bad := forbidden_ops(onnx.load(str(onnx_path)))):
        raise ExportError(f"{onnx_path} contains {bad}, which TensorRT runs as sequential loops (or not at all); "
                          f"re-export it with this version of mambaesr_runtime ({hint})")
    shape = (tier.batch, 3, tier.tile, tier.tile)
    if manifest.input_shape != shape or manifest.variant != tier.variant:
        raise ExportError(f"{onnx_path}'s manifest says {manifest.variant} {manifest.input_shape}, tier {tier.name} "
                          f"needs {tier.variant} {shape}; {hint}")
    return TierArtifacts(tier, onnx_path, manifest, reused=True)


def find_tensorrt():
    """The ``tensorrt`` module, or ``None`` when it is not installed (then the export prints trtexec commands)."""
    from ..errors import DependencyError
    from .trt_compat import require_tensorrt

    try:
        return require_tensorrt()
    except DependencyError:
        return None


def export_profile(profile: DeviceProfile, out_dir: str | os.PathLike | None = None,
                   weights: list[str | os.PathLike] = (), tiers: list[str] | None = None, force: bool = False,
                   simplify_graph: bool = True, build: bool = True, trt=None, cuda=None, threads: int = 2,
                   progress=None, plans_only: bool = False) -> list[TierArtifacts]:
    """Export every tier of ``profile`` (or those named in ``tiers``) into ``out_dir`` (``engines/<profile>``).

    ``plans_only``: the device half of the Jetson flow. The ONNX files were exported and verified on another machine
    (with torch) and copied here; check them against their manifests and build the TensorRT plans (no torch needed).

    ``trt``/``cuda``: the TensorRT and pycuda modules to build with (``None``: import them if installed).
    ``build=False`` stops after the ONNX and its checks. ``progress(message)`` is called at each step.
    """
    say = progress or (lambda message: None)
    chosen = list(profile.tiers) if not tiers else [profile.tier(name) for name in tiers]
    out = Path(out_dir) if out_dir is not None else Path("engines") / profile.name
    scale = 4
    if plans_only:
        if trt is None:
            from .trt_compat import require_tensorrt

            trt = require_tensorrt()
    else:
        paths = resolve_weights({t.variant for t in chosen}, list(weights), scale)
        versions = tool_versions()
    if build and profile.tensorrt is not None and trt is None:
        trt = find_tensorrt()

    models = {}
    results = []
    for tier in chosen:
        if plans_only:
            art = verified_onnx(profile, tier, out)
        else:
            from ..model.checkpoint import load_checkpoint

            if tier.variant not in models:
                models[tier.variant] = load_checkpoint(paths[tier.variant])[0].eval()
            say(f"{profile.name}/{tier.name}: {tier.variant} {tier.tile}x{tier.tile} batch {tier.batch} -> ONNX, "
                f"verify")
            art = export_tier(models[tier.variant], paths[tier.variant], profile, tier, out, versions, force,
                              simplify_graph, threads)
        if profile.tensorrt is not None and build:
            from .tensorrt_build import trtexec_command

            plan = plan_name(art.onnx, profile.precision, profile.dla_core)
            # Paths relative to the output folder: the folder is what gets copied to the device.
            command = trtexec_command(Path(art.onnx.name), Path(plan.name), target=profile.tensorrt,
                                      input_shape=art.manifest.input_shape, precision=profile.precision,
                                      workspace_mb=profile.workspace_mb, dla_core=profile.dla_core,
                                      timing_cache=Path("timing.cache"))
            art = replace(art, trtexec=command)
            if trt is not None:
                say(f"{profile.name}/{tier.name}: building the TensorRT plan and checking it against ONNX Runtime")
                art = build_plan(art, profile, trt, cuda, force, threads)
        results.append(art)
    return results
