"""Finding and opening the engine of a profile tier, following the profile's backend order with logged fallbacks.

Artifacts are found by name (``artifacts.names``) in, first, the export folder (``engines_dir``, else
``$MAMBAESR_ENGINES/<profile>``, else ``./engines/<profile>``) and then the files shipped with the package (the
student and fast ONNX files for the ``cpu`` profile's 264x264 tiles, batch 1, and their checkpoints):

- tensorrt:    ``<variant>_x<scale>_t<tile>_b<batch>_<precision>[_dla<N>].plan`` (built on the device by mambaesr-export)
- onnxruntime: ``<variant>_x<scale>_t<tile>_b<batch>.onnx`` (fp32; int8: ``..._b<batch>_int8.onnx``, the QDQ graph)
- torch:       ``<variant>_x<scale>.safetensors`` (any tile; needs the torch extra)

The scale is the engine's: any x2, x3 or x4 export of the tier is found (``scale`` picks one when a folder holds
several), and the upscaler follows what the opened engine does.

A backend that cannot run here (library missing, no artifact) is skipped with its reason logged and kept in
``EngineSelection.skipped``; a backend the caller named explicitly gets no fallback: its failure is the error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts.manifest import manifest_path, read_manifest
from ..artifacts.names import find_engine, interior_name, shipped_dir
from ..backends.base import Backend
from ..errors import BackendError, ConfigError, DependencyError, require_torch
from ..geometry import MIN_TILE, check_tiling
from ..profiles import BACKENDS, DeviceProfile, Tier

log = logging.getLogger(__name__)

#: What ONNX Runtime runs: the exported fp32 graph and the int8 QDQ graph made from it (no fp16 graphs are shipped).
ORT_PRECISIONS = ("fp32", "int8")


def search_dirs(profile: DeviceProfile, engines_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where a profile's artifacts are looked for, in order. A folder the caller named (``engines_dir``, or
    ``$MAMBAESR_ENGINES``) that is not a folder is an error: a typo must not fall back to other engines silently."""
    if engines_dir is not None:
        first = Path(engines_dir)
        if not first.is_dir():
            problem = "is a file, not a folder" if os.path.lexists(first) else "no such folder"
            raise ConfigError(f"engines_dir {first}: {problem}; give the folder mambaesr-export wrote "
                              f"(engines/{profile.name} by default), or leave engines_dir out to use that and the "
                              f"shipped engines")
    elif os.environ.get("MAMBAESR_ENGINES"):
        root = Path(os.environ["MAMBAESR_ENGINES"])
        if not root.is_dir():
            problem = "is a file, not a folder" if os.path.lexists(root) else "does not exist"
            raise ConfigError(f"MAMBAESR_ENGINES={root} {problem}; point it at the folder that holds one folder of "
                              f"engines per device (<it>/{profile.name}/...), or unset it to use ./engines/{profile.name}")
        first = root / profile.name
    else:
        first = Path("engines") / profile.name
    return [first, shipped_dir()]


@dataclass(frozen=True)
class EngineSelection:
    """The engine opened for a tier and why the backends before it were skipped."""

    backend: Backend
    kind: str
    """The backend's name: ``tensorrt``, ``onnxruntime`` or ``torch``."""
    path: Path
    tier: Tier
    precision: str
    skipped: tuple[tuple[str, str], ...]
    """(backend, reason) for each backend tried before this one."""
    interior: Path | None = None
    """The engine's mask-free twin (:func:`interior_twin`), run on images that cover a whole tile; ``None``: none."""
    small: EngineSelection | None = None
    """The tier's engine for images no larger than its ``small_tile`` (same backend), opened and closed with it."""


def interior_twin(kind: str, path: Path) -> Path | None:
    """The mask-free twin beside a pad-aware engine file (``artifacts.names.interior_name``), if there is one whose
    manifest says it is this engine's: same variant, weights, scale, shapes and precision, no padding value.

    A pad-aware engine's masks cost ~7 % of every tile; on an image at least one tile high and wide no tile holds
    padding, every mask is exactly 1, and the twin computes the same result without them. A twin that does not match
    is left out with a logged reason (the pad-aware engine is always correct, only slower)."""
    if kind not in ("onnxruntime", "tensorrt") or not manifest_path(path).is_file():
        return None
    try:
        twin = interior_name(path)
    except ConfigError:
        return None  # not an exported tier engine (a user's file): no twin by name
    if not twin.is_file() or not manifest_path(twin).is_file():
        return None
    try:
        main, made = read_manifest(path), read_manifest(twin)
    except ConfigError as exc:
        log.warning("mask-free twin %s left out: %s", twin.name, exc)
        return None
    if main.pad_value is None:
        return None
    same = ("variant", "scale", "input_shape", "output_shape", "precision", "weights_sha256", "kind")
    differ = [k for k in same if getattr(main, k) != getattr(made, k)]
    if made.interior_of is None or made.pad_value is not None or differ:
        log.warning("mask-free twin %s left out: its manifest does not match %s (%s); re-export both with "
                    "mambaesr-export", twin.name, path.name, ", ".join(differ) or "not a twin")
        return None
    return twin


def open_backend(kind: str, path: Path, tier: Tier, profile: DeviceProfile, precision: str,
                 threads: int | None) -> Backend:
    """Open ``path`` on backend ``kind``. ``tier`` gives the shape where the artifact has none of its own: the
    torch backend's tiles, and those of an ONNX file with dynamic height and width (static engine files carry
    theirs)."""
    if kind == "tensorrt":
        from ..backends.tensorrt import TrtBackend

        return TrtBackend(path)
    if kind == "onnxruntime":
        from ..backends.onnxruntime import OrtBackend

        return OrtBackend(path, threads if threads is not None else profile.threads,
                          list(profile.ort_providers), tile=tier.tile, batch=tier.batch)
    from ..backends.torch_backend import TorchBackend

    torch = require_torch()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return TorchBackend(path, (tier.batch, 3, tier.tile, tier.tile), device, precision)


def open_engine(profile: DeviceProfile, tier: Tier, backend: str | None = None, precision: str | None = None,
                engines_dir: str | os.PathLike | None = None, threads: int | None = None,
                scale: int | None = None) -> EngineSelection:
    """Open the engine for ``tier``: the named ``backend``, else the first of the profile's backends that works.

    ``precision``: what the caller asks for (``None``: the tier's, else the profile's). ``scale``: only an engine of
    this scale (``None``: whichever the folders hold). ONNX Runtime runs the fp32 graph and the int8 QDQ graph:
    asking it for fp16 explicitly is an error, not a silent change; a profile's fp16 falling back to ONNX Runtime is
    logged. int8 is never silently replaced: a missing int8 engine is an error naming the export command.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    if precision is not None and backend == "onnxruntime" and precision not in ORT_PRECISIONS:
        raise ConfigError(f"ONNX Runtime runs the exported fp32 graph (and int8 QDQ graphs); precision {precision} "
                          f"needs the tensorrt backend (or torch on a GPU)")
    if precision == "int8" and backend == "torch":
        raise ConfigError("int8 engines are QDQ ONNX graphs: run them with backend onnxruntime or tensorrt (the torch "
                          "backend runs the fp32 reference)")
    order = [backend] if backend else list(profile.backends)
    dirs = search_dirs(profile, engines_dir)
    skipped: list[tuple[str, str]] = []
    asked = precision or tier.precision  # an explicit request, or the tier's own precision: never replaced
    for kind in order:
        want = asked or profile.precision
        if kind == "onnxruntime" and want not in ORT_PRECISIONS:
            want = "fp32"  # the profile's fp16 names its TensorRT engines; ONNX Runtime runs the fp32 graph
        elif kind == "torch":
            if want == "int8":
                skipped.append((kind, "int8 engines are QDQ ONNX graphs, which the torch backend does not run"))
                log.info("backend torch skipped for tier %s: it runs no int8 engine", tier.name)
                continue
            if precision is None:
                want = "fp32"  # the profile's precision names its engines; the dev backend defaults to the reference
        try:
            name, path = find_engine(kind, tier, want, profile.dla_core, dirs, scale)
            if path is None:
                raise BackendError(f"no {name} in {', '.join(str(d) for d in dirs)}; make it with mambaesr-export "
                                   f"--device {profile.name}" + (" --precision int8" if want == "int8" else "")
                                   + (" on the device" if kind == "tensorrt" else ""))
            engine = open_backend(kind, path, tier, profile, want, threads)
            if scale is not None and engine.scale != scale:
                engine.close()
                raise BackendError(f"{path.name} upscales x{engine.scale}, not the x{scale} asked for")
        except (BackendError, DependencyError) as exc:
            if backend is not None:
                raise
            skipped.append((kind, str(exc)))
            log.info("backend %s skipped for tier %s: %s", kind, tier.name, exc)
            continue
        if want != (asked or profile.precision):
            log.info("tier %s runs %s on %s (the profile's %s applies to its TensorRT engines)", tier.name, want,
                     kind, profile.precision)
        return EngineSelection(engine, kind, path, tier, want, tuple(skipped), interior_twin(kind, path))
    reasons = "; ".join(f"{k}: {r}" for k, r in skipped)
    raise BackendError(f"no engine could be opened for tier {tier.name!r} of profile {profile.name!r} ({reasons})")


def with_overrides(tier: Tier, tile: int | None = None, overlap: int | None = None) -> Tier:
    """A tier with the caller's tile/overlap (tile size must then have an artifact of its own)."""
    tier = replace(tier, tile=tile if tile is not None else tier.tile,
                   overlap=overlap if overlap is not None else tier.overlap)
    check_tiling(tier.tile, tier.overlap, MIN_TILE, f"tier {tier.name}")
    small = tier.small_tile
    if small is not None and (small >= tier.tile or 2 * tier.overlap >= small):
        # the small-image engine is a shortcut, not a shape asked for: without it, small images take a whole tile
        log.info("tier %s: no %dx%d engine for small images with tile %d and overlap %d", tier.name, small, small,
                 tier.tile, tier.overlap)
        tier = replace(tier, small_tile=None)
    return tier
