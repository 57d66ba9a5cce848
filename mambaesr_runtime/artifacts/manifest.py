"""The engine manifest: a JSON file beside every exported ONNX file and TensorRT plan (torch-free).

It records what an artifact is (variant, scale, static shapes, precision, tier, device profile), where it came from
(checkpoint and ONNX sha256, exporter versions, build time) and what it was verified to do. The runtime reads it to
refuse an artifact that does not suit the running system: a TensorRT plan only runs on the TensorRT version and GPU
that built it, so a mismatch is an error that says how to rebuild, never a crash inside TensorRT.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendError, ConfigError
from ..fileio import atomic_write_json, read_json
from ..typed import check_keys

FORMAT = "mambaesr-engine-manifest"
FORMAT_VERSION = 1
KINDS = ("onnx", "plan")
SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class EngineManifest:
    """What one artifact (ONNX file or TensorRT plan) is and how it was made."""

    kind: str
    """``"onnx"`` or ``"plan"`` (a serialized TensorRT engine)."""
    artifact: str
    """File name of the artifact, relative to the manifest's folder."""
    artifact_sha256: str
    variant: str
    """Model variant (``teacher``, ``student``, ``fast``, ``tiny``)."""
    scale: int
    input_shape: tuple[int, int, int, int]
    """Static input shape (N, 3, h, w): N tiles of h x w LR pixels."""
    output_shape: tuple[int, int, int, int]
    precision: str
    """``fp32``, ``fp16`` or ``int8``: what the engine computes in (ONNX files are fp32 graphs)."""
    opset: int
    onnx_sha256: str
    """The ONNX graph the artifact is (or was built from)."""
    weights_sha256: str
    """The checkpoint's safetensors file."""
    profile: str
    """Device profile name (``orin``, ``rpi5``, ...)."""
    tier: str
    """Tier name within the profile."""
    tensorrt_target: str | None
    """TensorRT family the profile targets (``"8.5"`` / ``"10"``), ``None`` for ONNX Runtime profiles."""
    versions: dict = field(default_factory=dict)
    """Versions of the tools that made the artifact: mambaesr, torch, onnx, onnxsim, onnxruntime, tensorrt."""
    device: str | None = None
    """GPU the plan was built on (TensorRT plans are not portable across GPUs); ``None`` for ONNX."""
    dla_core: int | None = None
    build_time: str = ""
    """UTC, ISO 8601."""
    verification: dict = field(default_factory=dict)
    """Measured checks: ORT vs torch max abs error, fp16 PSNR vs fp32, TensorRT compatibility, timing."""
    pad_value: float | None = None
    """What the runtime fills a tile that overhangs the image with: ``None``, reflection (any graph); a number
    (:data:`~mambaesr_runtime.geometry.PAD_VALUE`), for a pad-aware graph that treats such pixels as outside the image."""
    interior_of: str | None = None
    """For the mask-free twin of a pad-aware engine (``..._interior...``): the file name of that engine. The twin is
    the same network without the valid-map masks, so it equals the engine on every tile that holds no padding and
    the runtime runs it on images that cover a whole tile (the masks cost ~7 % of a tile's time)."""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> EngineManifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{source} is not a MambaESR engine manifest (format {FORMAT!r} expected)")
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{source} has manifest format_version {data.get('format_version')!r}; this version "
                              f"reads {FORMAT_VERSION}. Re-export the artifact with mambaesr-export")
        body = check_keys({k: v for k, v in data.items() if k not in ("format", "format_version")}, cls, source)
        if body["kind"] not in KINDS:
            raise ConfigError(f"{source}: kind is {body['kind']!r}; valid values are {list(KINDS)}")
        for key in ("input_shape", "output_shape"):
            shape = body[key]
            if not (isinstance(shape, (list, tuple)) and len(shape) == 4 and all(
                    isinstance(d, int) and d > 0 for d in shape)):
                raise ConfigError(f"{source}: {key} must be 4 positive integers (N, C, H, W), got {shape!r}")
            body[key] = tuple(shape)
        return cls(**body)


def manifest_path(artifact: str | os.PathLike) -> Path:
    """``engine.plan`` -> ``engine.plan.manifest.json`` (beside the artifact)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def write_manifest(manifest: EngineManifest, folder: str | os.PathLike) -> Path:
    """Write the manifest beside its artifact in ``folder`` atomically; return its path."""
    return atomic_write_json(manifest_path(Path(folder) / manifest.artifact), manifest.to_dict())


def read_manifest(artifact: str | os.PathLike) -> EngineManifest:
    """The manifest of ``artifact`` (the ONNX/plan path); a clear error when it is missing or malformed."""
    path = manifest_path(artifact)
    data = read_json(path, "engine manifest", "every engine needs its manifest beside it; re-export with "
                     "mambaesr-export", ConfigError)
    return EngineManifest.from_dict(data, str(path))


def check_plan_compatible(manifest: EngineManifest, tensorrt_version: str, device: str | None) -> None:
    """Refuse a plan built by another TensorRT version or on another GPU, with the command that rebuilds it.

    TensorRT deserialises a plan only with the exact version that built it (and for the GPU it was tuned on); the
    alternative is an opaque failure or a crash inside TensorRT.
    """
    if manifest.kind != "plan":
        raise BackendError(f"{manifest.artifact} is a {manifest.kind} artifact, not a TensorRT plan")
    rebuild = f"rebuild it on this device: mambaesr-export --device {manifest.profile}"
    built = manifest.versions.get("tensorrt")
    if built != tensorrt_version:
        raise BackendError(f"{manifest.artifact} was built with TensorRT {built}, this system has TensorRT "
                           f"{tensorrt_version}; plans only load in the version that built them: {rebuild}")
    if manifest.device is not None and device is not None and manifest.device != device:
        raise BackendError(f"{manifest.artifact} was built on {manifest.device!r}, this is {device!r}; plans are "
                           f"tuned for one GPU: {rebuild}")
