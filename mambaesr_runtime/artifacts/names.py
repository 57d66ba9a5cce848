"""How artifacts are named and found: one place for the file-name patterns, the shipped folder and the suffixes.

- ONNX:        ``<variant>_x<scale>_t<tile>_b<batch>.onnx`` (``mambaesr-export``; the int8 QDQ graph of the same tier:
               ``..._b<batch>_int8.onnx``)
- TensorRT:    ``<variant>_x<scale>_t<tile>_b<batch>_<precision>[_dla<N>].plan`` (built on the device)
- interior:    ``..._b<batch>_interior.onnx`` / ``..._b<batch>_interior_<precision>.plan``: the mask-free twin of a
               pad-aware engine, for images that cover a whole tile (no tile of theirs holds padding)
- checkpoint:  ``<variant>_x<scale>.safetensors`` (+ ``.json``; the torch backend runs it at any tile)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError
from ..fileio import package_dir
from ..model.config import SCALES

#: What an int8 (QDQ) ONNX graph's stem ends with.
INT8_SUFFIX = "_int8"
#: What marks the mask-free twin of a pad-aware engine (right after the ``_b<batch>`` of the tier's stem).
INTERIOR_MARK = "_interior"
#: Which backend runs a file, by its suffix (``.engine`` is trtexec's usual name for a plan).
BACKEND_OF_SUFFIX = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".safetensors": "torch"}


def shipped_dir() -> Path:
    """The weights and ONNX files shipped inside the package (``mambaesr_runtime/weights``)."""
    return package_dir("mambaesr_runtime") / "weights"


def backend_for(path: str | os.PathLike) -> str:
    """The backend that runs ``path`` (``onnxruntime``, ``tensorrt`` or ``torch``), from its suffix."""
    kind = BACKEND_OF_SUFFIX.get(Path(path).suffix.lower())
    if kind is None:
        raise ConfigError(f"{path}: unknown engine type; give one of {sorted(BACKEND_OF_SUFFIX)}")
    return kind


def artifact_stem(variant: str, scale: int, tile: int, batch: int) -> str:
    """The file-name stem shared by a tier's artifacts: ``student_x4_t136_b1`` (the runtime finds engines by it)."""
    return f"{variant}_x{scale}_t{tile}_b{batch}"


def plan_name(onnx_path: str | os.PathLike, precision: str, dla_core: int | None = None) -> Path:
    """``student_x4_t136_b1.onnx`` -> ``student_x4_t136_b1_fp16.plan`` (``_dla0`` added for a DLA core); an int8 plan
    is built from the tier's int8 graph: ``student_x4_t136_b1_int8.onnx`` -> ``student_x4_t136_b1_int8.plan``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    if stem.endswith(INT8_SUFFIX):
        stem = stem[:-len(INT8_SUFFIX)]
    dla = f"_dla{dla_core}" if dla_core is not None else ""
    return onnx_path.with_name(f"{stem}_{precision}{dla}.plan")


def interior_name(artifact: str | os.PathLike) -> Path:
    """The mask-free twin of a pad-aware engine file: ``student_x4_t264_b1.onnx`` -> ``student_x4_t264_b1_interior.onnx``,
    ``student_x4_t64_b8_fp16.plan`` -> ``student_x4_t64_b8_interior_fp16.plan`` (what :func:`plan_name` makes of the
    twin's ONNX). A name without the tier's ``_b<batch>`` is an error: only exported engines have twins."""
    artifact = Path(artifact)
    match = re.match(r"^(.*_b\d+)(.*)$", artifact.name)
    if match is None or INTERIOR_MARK in artifact.name:
        raise ConfigError(f"{artifact.name} is not an exported tier engine (<variant>_x<s>_t<tile>_b<batch>...)")
    return artifact.with_name(match.group(1) + INTERIOR_MARK + match.group(2))


def onnx_name(stem: str, precision: str = "fp32") -> str:
    """A tier's ONNX file: the fp32 graph ``<stem>.onnx``, or its int8 QDQ graph ``<stem>_int8.onnx``."""
    return f"{stem}{INT8_SUFFIX}.onnx" if precision == "int8" else f"{stem}.onnx"


def checkpoint_name(variant: str, scale: int) -> str:
    """``student_x4.safetensors``: a variant's checkpoint (the shipped ones, and what ``--weights`` defaults to)."""
    return f"{variant}_x{scale}.safetensors"


def engine_name(backend: str, variant: str, scale: int, tile: int, batch: int, precision: str = "fp32",
                dla_core: int | None = None) -> str:
    """The file a tier's engine has on ``backend``."""
    stem = artifact_stem(variant, scale, tile, batch)
    if backend == "tensorrt":
        return plan_name(f"{stem}.onnx", precision, dla_core).name
    if backend == "onnxruntime":
        return onnx_name(stem, precision)
    return checkpoint_name(variant, scale)


def find_engine(kind: str, tier, precision: str, dla_core: int | None, dirs: list[Path],
                scale: int | None = None) -> tuple[str, Path | None]:
    """(the name looked for, the first file in ``dirs`` that is the engine of ``tier`` (a profile tier: variant,
    tile, batch) on backend ``kind``). Without ``scale`` an export at any scale matches; a folder holding the tier at
    several scales is an error naming them."""
    scales = [scale] if scale is not None else sorted(SCALES, reverse=True)
    names = [engine_name(kind, tier.variant, s, tier.tile, tier.batch, precision, dla_core) for s in scales]
    wanted = names[0] + (f" (or its {', '.join(f'x{s}' for s in scales[1:])} version)" if len(scales) > 1 else "")
    for folder in dirs:
        found = [Path(folder) / name for name in names if (Path(folder) / name).is_file()]
        if len(found) > 1:
            raise ConfigError(f"{folder} holds {', '.join(p.name for p in found)}: tier {tier.name} has engines at "
                              f"several scales there; ask for one scale")
        if found:
            return wanted, found[0]
    return wanted, None
