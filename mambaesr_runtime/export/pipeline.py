"""``mambaesr-export``'s pipeline: checkpoint -> static ONNX per tier -> onnxsim -> verify -> TensorRT plan + manifests.

For each tier of a device profile (needs torch, onnx and onnxsim):

1. load the tier variant's checkpoint (the shipped weights unless others are given);
2. export ONNX with the tier's static shape ``(batch, 3, tile, tile)`` and the profile's opset, then simplify it;
3. verify (:mod:`.parity`): ONNX Runtime vs PyTorch on random tiles and real image tiles (fp32 max abs error <=
   ``FP32_TOLERANCE``), and, for fp16 profiles, the model in half precision stays finite and within ``FP16_MIN_PSNR``
   dB of fp32;
4. for an int8 tier (``precision: int8``, or ``precision="int8"`` for every tier), quantize the verified graph with
   ONNX Runtime's static quantization (QDQ, per-channel weights: 7-bit for ONNX Runtime, full range in TensorRT's
   symmetric scheme; calibrated on a fixed, recorded sample of real
   training crops; :mod:`.int8_onnx`) into ``<stem>_int8.onnx``, written only if it stays within ``INT8_MIN_PSNR``
   dB of the fp32 graph on every parity tile;
5. for TensorRT profiles, check the graph against the parser's supported-op table of the profile's TensorRT;
6. if ``tensorrt`` imports, build the plan (timing cache reused across builds), run it next to ONNX Runtime fp32 on
   real tiles and a saturated one (:mod:`.plan_parity`), and install it with its manifest only if it is within
   40 dB on every tile; otherwise give the exact ``trtexec`` command that builds the same engine on the device
   (:func:`adopt_plan` then checks and installs such a plan the same way).

Every artifact gets an :class:`~mambaesr_runtime.artifacts.manifest.EngineManifest` beside it; re-running skips artifacts whose manifest says
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
from ..artifacts.manifest import EngineManifest, manifest_path, read_manifest, write_manifest
from ..artifacts.names import (
    artifact_stem,
    checkpoint_name,
    engine_name,
    find_engine,
    interior_name,
    onnx_name,
    plan_name,
    shipped_dir,
)
from ..errors import CheckpointError, ConfigError, ExportError, require_torch
from ..fileio import atomic_write, sha256_file
from ..model.config import SCALES
from ..profiles import DeviceProfile, Tier
from .onnx_export import forbidden_ops
from .parity import FP32_TOLERANCE, padded_tiles, real_tiles, verify_fp16, verify_fp32

log = logging.getLogger(__name__)

#: Where int8 calibration images are read from unless another folder is given (the training images, beside the
#: repository as in training).
DEFAULT_CALIBRATION_DIR = Path("../shared/data/train")


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
    precision: str = "fp32"
    """What the tier's engine computes in: ``onnx`` is its int8 QDQ graph for ``int8``."""
    fp32_onnx: Path | None = None
    """The verified fp32 graph an int8 one was made from (the parity reference of its plan)."""
    interior: TierArtifacts | None = None
    """The mask-free twin of a pad-aware fp32 engine (``..._interior.onnx``, and its plan), for images that cover a
    whole tile; ``None`` for graphs without masks and for int8 graphs."""


def resolve_weights(variants: set[str], given: list[str | os.PathLike] = (),
                    scale: int | None = None) -> dict[str, Path]:
    """Map each needed variant to a checkpoint: ``given`` ones (by the variant their config names) first, then the
    shipped ``weights/<variant>_x<scale>.safetensors``. ``scale``: the one every checkpoint must have (``None``: each
    its own). A variant with neither is an error that says what to do."""
    from ..model.checkpoint import checkpoint_paths, read_checkpoint_meta

    found: dict[str, Path] = {}
    for path in given:
        weights, _ = checkpoint_paths(path)
        meta = read_checkpoint_meta(path)
        if scale is not None and meta["config"].scale != scale:
            raise CheckpointError(f"{weights} is an x{meta['config'].scale} model; x{scale} was asked for")
        found.setdefault(meta["variant"], weights)
    for name in sorted(variants - set(found)):
        for s in [scale] if scale is not None else sorted(SCALES, reverse=True):
            if (shipped_dir() / checkpoint_name(name, s)).is_file():
                found[name] = shipped_dir() / checkpoint_name(name, s)
                break
    missing = sorted(variants - set(found))
    if missing:
        raise CheckpointError(f"no weights for variant(s) {missing}: give a checkpoint of each as weights=CHECKPOINT "
                              f"(train one with mambaesr-train), or export only some tiers=NAME")
    return {name: found[name] for name in variants}


def tool_versions() -> dict:
    """Versions that decide what the exported graph looks like (a change means re-export)."""
    import onnx
    import onnxruntime
    import onnxsim

    torch = require_torch()
    return {"mambaesr": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxsim": getattr(onnxsim, "__version__", "unknown"), "onnxruntime": onnxruntime.__version__}


def simplify(src: Path, dst_tmp: str) -> None:
    import onnx
    import onnxsim

    model, ok = onnxsim.simplify(onnx.load(str(src)))
    if not ok:
        raise ExportError(f"onnx-simplifier could not validate the simplified {src.name}; re-export with "
                          f"simplify_graph=False")
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


def export_tier(model, weights: Path, profile: DeviceProfile, tier: Tier, out_dir: Path, versions: dict,
                force: bool = False, simplify_graph: bool = True, threads: int = 2,
                verify_inputs: np.ndarray | None = None, interior: bool = True) -> TierArtifacts:
    """Export, simplify and verify one tier's ONNX file into ``out_dir``; reuse it when up to date. A pad-aware
    graph also gets its mask-free twin (:func:`export_interior`) unless ``interior`` is false (an int8 tier: its
    graph is quantized from the fp32 one, and int8 graphs have no twin)."""
    scale = model.cfg.scale
    onnx_path = out_dir / f"{artifact_stem(tier.variant, scale, tier.tile, tier.batch)}.onnx"
    shape = (tier.batch, 3, tier.tile, tier.tile)
    weights_sha = sha256_file(weights)
    pad_value = model.engine_pad_value
    expect = {"kind": "onnx", "variant": tier.variant, "input_shape": shape, "opset": profile.opset,
              "weights_sha256": weights_sha, "versions": versions, "pad_value": pad_value}
    if not force and (found := _up_to_date(onnx_path, expect)) is not None:
        log.info("%s is up to date (same weights, same tools); skipped", onnx_path)
        art = TierArtifacts(tier, onnx_path, found, reused=True)
    else:
        started = time.perf_counter()
        was_pad_aware = model.pad_aware
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
        art = TierArtifacts(tier, onnx_path, manifest)
    if pad_value is not None and interior:
        art = replace(art, interior=export_interior(model, art, profile, force, simplify_graph, threads,
                                                    verify_inputs))
    return art


def export_interior(model, art: TierArtifacts, profile: DeviceProfile, force: bool = False,
                    simplify_graph: bool = True, threads: int = 2,
                    verify_inputs: np.ndarray | None = None) -> TierArtifacts:
    """The mask-free twin of a pad-aware tier graph (``art``): the same weights exported without the valid-map
    masks, verified against PyTorch like any graph and against the pad-aware graph on tiles without padding (it
    must agree within ``FP32_TOLERANCE``: on such tiles every mask is exactly 1). Reused when up to date."""
    main = art.manifest
    path = interior_name(art.onnx)
    tier = art.tier
    expect = {"kind": "onnx", "variant": main.variant, "input_shape": main.input_shape, "opset": main.opset,
              "weights_sha256": main.weights_sha256, "versions": main.versions, "pad_value": None,
              "interior_of": art.onnx.name}
    if not force and (found := _up_to_date(path, expect)) is not None:
        log.info("%s is up to date (same weights, same tools); skipped", path)
        return TierArtifacts(tier, path, found, reused=True)
    started = time.perf_counter()
    was_pad_aware = model.pad_aware
    model.set_pad_aware(False)
    try:
        verification = _export_verified(model, path, profile, tier, main.input_shape, verify_inputs, simplify_graph,
                                        threads, None)
    finally:
        model.pad_aware = was_pad_aware
    tiles = verify_inputs if verify_inputs is not None else real_tiles(tier.tile, tier.batch)
    verification["interior_vs_pad_aware_max_abs_err"] = check_interior(path, art.onnx, tiles, threads)
    manifest = replace(main, artifact=path.name, artifact_sha256=sha256_file(path), onnx_sha256=sha256_file(path),
                       build_time=_now(), pad_value=None, interior_of=art.onnx.name,
                       verification={**verification, "export_s": round(time.perf_counter() - started, 1),
                                     "host": platform.machine()})
    write_manifest(manifest, path.parent)
    log.info("exported %s, the mask-free twin of %s (%s)", path, art.onnx.name, verification)
    return TierArtifacts(tier, path, manifest)


def check_interior(interior: Path, pad_aware: Path, tiles: np.ndarray, threads: int = 2) -> float:
    """Max abs difference of the two graphs on ``tiles`` (no padding); above ``FP32_TOLERANCE`` the twin is
    removed (its manifest was never written) and an :class:`ExportError` says so."""
    from ..backends.onnxruntime import OrtBackend

    outs = []
    for path in (interior, pad_aware):
        with OrtBackend(path, threads) as backend:
            outs.append(backend.infer(tiles))
    err = float(np.abs(outs[0] - outs[1]).max())
    if not np.isfinite(err) or err > FP32_TOLERANCE:
        interior.unlink(missing_ok=True)
        raise ExportError(f"{interior.name} and {pad_aware.name} disagree by {err:.3g} (max abs) on tiles without "
                          f"padding, above {FP32_TOLERANCE:g}: the masks are not exactly 1 there; report it")
    return err


def export_int8(art: TierArtifacts, profile: DeviceProfile, calibration_dir: str | os.PathLike | None = None,
                force: bool = False, threads: int = 2, calibration_tiles: int | None = None) -> TierArtifacts:
    """The int8 QDQ graph of a tier from its verified fp32 ONNX (``art``), beside it as ``<stem>_int8.onnx`` with a
    manifest; reused when made from the same fp32 graph, calibration sample and tools. Quantization, node choice and
    the parity check are :mod:`.int8_onnx`'s (ONNX Runtime's tools); the graph is written only if it passes."""
    from .int8_onnx import (
        CALIBRATION_TILES,
        SCHEMES,
        calibration_sample,
        check_int8_parity,
        qdq_error_report,
        quantize_int8,
    )

    fp32 = art.manifest
    path = art.onnx.with_name(onnx_name(art.onnx.stem, "int8"))
    scheme = "tensorrt" if profile.tensorrt is not None else "onnxruntime"
    n, _, tile, _ = fp32.input_shape
    folder = Path(calibration_dir) if calibration_dir is not None else DEFAULT_CALIBRATION_DIR
    count = max(n, calibration_tiles or CALIBRATION_TILES)
    sample = calibration_sample(folder, tile, fp32.scale, fp32.pad_value, count)
    expect = {"kind": "onnx", "precision": "int8", "variant": fp32.variant, "input_shape": fp32.input_shape,
              "weights_sha256": fp32.weights_sha256, "versions": fp32.versions, "pad_value": fp32.pad_value}
    found = None if force else _up_to_date(path, expect)
    made = (found.verification.get("int8") or {}) if found is not None else {}
    if (found is not None and made.get("fp32_onnx_sha256") == fp32.artifact_sha256 and made.get("scheme") == scheme
            and (made.get("calibration") or {}).get("sha256") == sample.record["sha256"]):
        log.info("%s is up to date (same fp32 graph, calibration sample and tools); skipped", path)
        return replace(art, onnx=path, manifest=found, reused=True, precision="int8", fp32_onnx=art.onnx,
                       interior=None)

    started = time.perf_counter()
    info: dict = {}

    def write(tmp):
        info.update(quantize_int8(art.onnx, tmp, sample, scheme))
        info["parity"] = check_int8_parity(tmp, art.onnx, fp32.pad_value, threads)
        info["qdq_loss_debug"] = qdq_error_report(tmp, art.onnx, sample.tiles)
        if profile.tensorrt is not None:
            from .trt_compat import check_graph

            report = check_graph(tmp, profile.tensorrt)
            info["tensorrt_compat"] = {"target": profile.tensorrt, "ok": True, "ops": report.get("ops", {})}

    atomic_write(path, write, suffix=".onnx")
    sha = sha256_file(path)
    parity = info.pop("parity")
    verification = {**{k: v for k, v in fp32.verification.items() if k in ("ort_vs_torch_max_abs_err", "host")},
                    **parity, "int8": {**info, "fp32_onnx": art.onnx.name, "fp32_onnx_sha256": fp32.artifact_sha256,
                                       "calibration": {**sample.record, "tiles": len(sample.tiles)},
                                       "scheme_for": SCHEMES[scheme].why},
                    "quantize_s": round(time.perf_counter() - started, 1)}
    if "tensorrt_compat" in info:
        verification["tensorrt_compat"] = verification["int8"].pop("tensorrt_compat")
    manifest = replace(fp32, artifact=path.name, artifact_sha256=sha, onnx_sha256=sha, precision="int8",
                       tier=art.tier.name, build_time=_now(), verification=verification)
    write_manifest(manifest, path.parent)
    log.info("exported %s (%s dB vs fp32, worst tile %s dB)", path, parity["int8_vs_fp32_psnr_db"],
             parity["int8_vs_fp32_min_tile_psnr_db"])
    # no mask-free twin for int8: its own quantization would compute other integers than the tier's graph
    return replace(art, onnx=path, manifest=manifest, reused=False, precision="int8", fp32_onnx=art.onnx,
                   interior=None)


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
                padded, keep = padded_tiles(batches[1], pad_value)
                batches.append(padded)
            verification.update(verify_fp32(model, Path(tmp), batches, threads))
            if profile.precision == "fp16":
                torch = require_torch()
                device = "cuda" if torch.cuda.is_available() else "cpu"
                # fp16 on a CPU is slow: one real tile of the tier's shape there; the whole batch on a GPU.
                tiles = batches[1] if device == "cuda" else batches[1][:1]
                verification.update(verify_fp16(model, tiles, device))
                if pad_value is not None:  # and the image part of a padded one
                    padded_check = verify_fp16(model, padded if device == "cuda" else padded[:1], device, keep)
                    verification["fp16_padded_psnr_vs_fp32_db"] = padded_check["fp16_psnr_vs_fp32_db"]

        atomic_write(onnx_path, write, suffix=".onnx")
    return verification


def build_plan(art: TierArtifacts, profile: DeviceProfile, trt, cuda=None, force: bool = False,
               threads: int = 2, precision: str | None = None) -> TierArtifacts:
    """Build (or reuse) the TensorRT plan of a tier from its verified ONNX, check it against ONNX Runtime fp32 and
    install it with its manifest. A plan that fails the check is refused (:class:`ExportError`) and nothing is
    written: not the plan, not its manifest, not the timing cache."""
    from .plan_parity import check_plan_parity
    from .tensorrt_build import build_engine

    precision = precision or art.tier.precision_in(profile)
    plan = plan_name(art.onnx, precision, profile.dla_core)
    expect = {"kind": "plan", "onnx_sha256": art.manifest.onnx_sha256, "precision": precision,
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
                            precision=precision, workspace_mb=profile.workspace_mb,
                            dla_core=profile.dla_core, timing_cache=cache_copy, trt=trt, cuda=cuda)
        manifest = replace(art.manifest, kind="plan", artifact=plan.name, artifact_sha256=info["plan_sha256"],
                           precision=precision, dla_core=profile.dla_core, device=info.get("device"),
                           versions={**art.manifest.versions, "tensorrt": trt.__version__}, build_time=_now(),
                           verification={"built_by": "mambaesr-export", "build_s": round(info["build_seconds"], 1),
                                         "strongly_typed": info["strongly_typed"]})
        # an int8 plan is compared with the fp32 graph its QDQ graph was made from: parity is against fp32
        parity = check_plan_parity(candidate, manifest, art.fp32_onnx or art.onnx, trt=trt, cuda=cuda,
                                   threads=threads)
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
    from ..artifacts.tensorrt import require_pycuda, require_tensorrt, tensorrt_family
    from .plan_parity import check_plan_parity
    from .tensorrt_build import gpu_name

    plan = Path(plan_path)
    if not plan.is_file():
        raise ExportError(f"plan {plan} not found; build it with the trtexec commands in build_engines.sh first")
    trt, cuda = require_tensorrt(trt), require_pycuda(cuda)
    if tensorrt_family(trt.__version__) != profile.tensorrt:
        raise ExportError(f"TensorRT {trt.__version__} is installed but profile {profile.name} targets TensorRT "
                          f"{profile.tensorrt}; adopt plans on the device the profile describes")
    names = {engine_name("tensorrt", t.variant, s, t.tile, t.batch, t.precision_in(profile), profile.dla_core): t
             for t in profile.engine_tiers() for s in SCALES}
    twins = {interior_name(name).name: name for name in names}
    twin = plan.name in twins
    if twin:
        names[plan.name] = names[twins[plan.name]]
    if plan.name not in names:
        exported = [plan_name(onnx, t.precision_in(profile), profile.dla_core).name for t, onnx in
                    ((t, find_engine("onnxruntime", t, _onnx_precision(t, profile), None, [plan.parent])[1])
                     for t in profile.engine_tiers()) if onnx]
        raise ExportError(f"{plan.name} is not the name of a plan of profile {profile.name}; its tiers' plans are "
                          f"{sorted(exported or names)} (the names the trtexec commands in build_engines.sh write)")
    tier = names[plan.name]
    art = verified_onnx(profile, tier, plan.parent)
    if twin:
        if art.interior is None:
            raise ExportError(f"{plan.name} is the plan of a mask-free twin, but {interior_name(art.onnx).name} is "
                              f"not beside it; copy the exported folder whole")
        art = art.interior
    manifest = replace(art.manifest, kind="plan", artifact=plan.name, artifact_sha256=sha256_file(plan),
                       precision=tier.precision_in(profile), dla_core=profile.dla_core, device=gpu_name(cuda),
                       versions={**art.manifest.versions, "tensorrt": trt.__version__}, build_time=_now(),
                       verification={"built_by": "trtexec (adopted by mambaesr-export --adopt-plan)"})
    parity = check_plan_parity(plan, manifest, art.fp32_onnx or art.onnx, trt=trt, cuda=cuda, threads=threads)
    manifest = replace(manifest, verification={**manifest.verification, **parity})
    write_manifest(manifest, plan.parent)
    log.info("adopted %s: %s", plan, parity)
    return replace(art, plan=plan, plan_manifest=manifest)


def _onnx_precision(tier: Tier, profile: DeviceProfile) -> str:
    """The ONNX graph a tier's plan is built from: its int8 QDQ graph for int8, else the fp32 one."""
    return "int8" if tier.precision_in(profile) == "int8" else "fp32"


def verified_onnx(profile: DeviceProfile, tier: Tier, out_dir: Path) -> TierArtifacts:
    """An ONNX artifact exported elsewhere: present, intact (sha256 = manifest) and made for this tier's shape (an
    int8 tier: its int8 graph, with the fp32 graph it was made from beside it, the plan's parity reference)."""
    precision = _onnx_precision(tier, profile)
    if precision == "int8":
        fp32 = verified_onnx(profile, replace(tier, precision="fp32"), out_dir)
    name, onnx_path = find_engine("onnxruntime", tier, precision, None, [out_dir])
    hint = (f"export it on a machine with the torch extra (mambaesr-export --device {profile.name} --onnx-only) and "
            f"copy {out_dir} here")
    if onnx_path is None:
        raise ExportError(f"{out_dir / name} not found: {hint}")
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
    if manifest.precision != precision:
        raise ExportError(f"{onnx_path}'s manifest says precision {manifest.precision}, tier {tier.name} needs "
                          f"{precision}; {hint}")
    if precision == "int8":
        made_from = (manifest.verification.get("int8") or {}).get("fp32_onnx_sha256")
        if made_from != fp32.manifest.artifact_sha256:
            raise ExportError(f"{onnx_path} was quantized from another fp32 graph than {fp32.onnx.name}; {hint}")
        return TierArtifacts(tier, onnx_path, manifest, reused=True, precision="int8", fp32_onnx=fp32.onnx)
    art = TierArtifacts(tier, onnx_path, manifest, reused=True)
    twin = interior_name(onnx_path)
    if manifest.pad_value is not None and twin.is_file():
        art = replace(art, interior=verified_interior(art, twin, hint))
    return art


def verified_interior(art: TierArtifacts, twin: Path, hint: str) -> TierArtifacts:
    """The copied mask-free twin of ``art``'s graph: intact and made from the same weights for the same shape."""
    try:
        manifest = read_manifest(twin)
    except ConfigError as exc:
        raise ExportError(f"{exc}; {hint}") from exc
    main = art.manifest
    if sha256_file(twin) != manifest.artifact_sha256:
        raise ExportError(f"{twin} does not match its manifest's sha256 (changed or damaged in the copy); {hint}")
    if (manifest.interior_of != art.onnx.name or manifest.weights_sha256 != main.weights_sha256
            or manifest.input_shape != main.input_shape or manifest.pad_value is not None):
        raise ExportError(f"{twin} is not the mask-free twin of {art.onnx.name} (its manifest names "
                          f"{manifest.interior_of!r} and other weights or shapes); {hint}")
    return TierArtifacts(art.tier, twin, manifest, reused=True)


def find_tensorrt():
    """The ``tensorrt`` module, or ``None`` when it is not installed (then the export prints trtexec commands)."""
    from ..artifacts.tensorrt import require_tensorrt
    from ..errors import DependencyError

    try:
        return require_tensorrt()
    except DependencyError:
        return None


def _chosen(profile: DeviceProfile, tiers: list[str] | None, precision: str | None = None) -> list[Tier]:
    """The tiers to export (all, or those named), each followed by its small-image engine's (``small_tile``)."""
    chosen = list(profile.tiers) if not tiers else [profile.tier(name) for name in tiers]
    chosen = [e for t in chosen for e in (t, t.small()) if e is not None]
    if precision is not None:
        from ..profiles import PRECISIONS

        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is unknown; valid values are {list(PRECISIONS)}")
        chosen = [replace(t, precision=precision) for t in chosen]
    return chosen


def _out(profile: DeviceProfile, out_dir: str | os.PathLike | None) -> Path:
    return Path(out_dir) if out_dir is not None else Path("engines") / profile.name


def _with_plan(art: TierArtifacts, profile: DeviceProfile, trt, cuda, force: bool, threads: int, say) -> TierArtifacts:
    """A tier's verified ONNX -> the trtexec command that builds its plan, and the plan itself when ``trt`` is given."""
    from .tensorrt_build import trtexec_command

    precision = art.tier.precision_in(profile) if art.precision != "int8" else "int8"
    plan = plan_name(art.onnx, precision, profile.dla_core)
    # Paths relative to the output folder: the folder is what gets copied to the device.
    command = trtexec_command(Path(art.onnx.name), Path(plan.name), target=profile.tensorrt,
                              input_shape=art.manifest.input_shape, precision=precision,
                              workspace_mb=profile.workspace_mb, dla_core=profile.dla_core,
                              timing_cache=Path("timing.cache"))
    art = replace(art, trtexec=command)
    if trt is not None:
        what = "the mask-free twin's plan" if art.manifest.interior_of else "the TensorRT plan"
        say(f"{profile.name}/{art.tier.name}: building {what} and checking it against ONNX Runtime")
        art = build_plan(art, profile, trt, cuda, force, threads, precision)
    if art.interior is not None:
        art = replace(art, interior=_with_plan(art.interior, profile, trt, cuda, force, threads, say))
    return art


def export_profile(profile: DeviceProfile, out_dir: str | os.PathLike | None = None,
                   weights: list[str | os.PathLike] = (), tiers: list[str] | None = None, force: bool = False,
                   simplify_graph: bool = True, build: bool = True, trt=None, cuda=None, threads: int = 2,
                   progress=None, scale: int | None = None, precision: str | None = None,
                   calibration_dir: str | os.PathLike | None = None) -> list[TierArtifacts]:
    """Export every tier of ``profile`` (or those named in ``tiers``) into ``out_dir`` (``engines/<profile>``): the
    checkpoint's ONNX, verified, and for TensorRT profiles the plan (needs torch, onnx and onnxsim).

    ``weights``: checkpoints to use for their variants (default: the shipped ones); ``scale``: the scale they must
    have (default: theirs). ``trt``/``cuda``: the TensorRT and pycuda modules to build with (``None``: import them
    if installed; without TensorRT the result carries the ``trtexec`` command instead). ``build=False`` stops after
    the ONNX and its checks. ``progress(message)`` is called at each step. ``precision``: every chosen tier's
    (default: each tier's own, else the profile's); ``int8`` also makes each tier's int8 QDQ graph, calibrated on
    the images under ``calibration_dir`` (default ``../shared/data/train``).
    """
    from ..model.checkpoint import load_checkpoint

    say = progress or (lambda message: None)
    chosen, out = _chosen(profile, tiers, precision), _out(profile, out_dir)
    paths = resolve_weights({t.variant for t in chosen}, list(weights), scale)
    versions = tool_versions()
    if build and profile.tensorrt is not None and trt is None:
        trt = find_tensorrt()
    models = {}
    results = []
    # a small-image engine takes images smaller than its tile: always padded, so it needs no mask-free twin
    small_engines = {s.name for s in (t.small() for t in profile.tiers) if s is not None}
    for tier in chosen:
        if tier.variant not in models:
            models[tier.variant] = load_checkpoint(paths[tier.variant])[0].eval()
        say(f"{profile.name}/{tier.name}: {tier.variant} {tier.tile}x{tier.tile} batch {tier.batch} -> ONNX, verify")
        art = export_tier(models[tier.variant], paths[tier.variant], profile, tier, out, versions, force,
                          simplify_graph, threads,
                          interior=tier.precision_in(profile) != "int8" and tier.name not in small_engines)
        if tier.precision_in(profile) == "int8":
            say(f"{profile.name}/{tier.name}: int8 (ONNX Runtime static quantization, calibrated on "
                f"{calibration_dir or DEFAULT_CALIBRATION_DIR}), checked against fp32")
            art = export_int8(art, profile, calibration_dir, force, threads)
        if profile.tensorrt is not None and build:
            art = _with_plan(art, profile, trt, cuda, force, threads, say)
        results.append(art)
    return results


def build_plans(profile: DeviceProfile, out_dir: str | os.PathLike | None = None, tiers: list[str] | None = None,
                force: bool = False, trt=None, cuda=None, threads: int = 2, progress=None,
                precision: str | None = None) -> list[TierArtifacts]:
    """The device half of the Jetson flow (no torch): the ONNX files were exported and verified on another machine
    and copied into ``out_dir``; check each against its manifest, then build, check and install its TensorRT plan.
    ``trt``/``cuda`` as in :func:`export_profile` (``None``: TensorRT must be installed)."""
    from ..artifacts.tensorrt import require_tensorrt

    say = progress or (lambda message: None)
    trt = require_tensorrt(trt)
    out = _out(profile, out_dir)
    return [_with_plan(verified_onnx(profile, tier, out), profile, trt, cuda, force, threads, say)
            for tier in _chosen(profile, tiers, precision)]
