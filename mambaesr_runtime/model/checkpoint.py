"""Checkpoints: ``<name>.safetensors`` (weights) with ``<name>.json`` beside it (config, variant, sizes, training).

No pickles are ever loaded. Both files are written to temporary names and renamed (JSON last), so an interrupted save
leaves the previous checkpoint intact. The JSON records the weights file's sha256, so a damaged file is reported as
damaged instead of loading garbage. Reading the JSON needs no torch (the runtime uses :func:`read_checkpoint_meta`).
"""

from __future__ import annotations

import functools
import json
import os
import struct
from pathlib import Path

from ..errors import CheckpointError, ConfigError, require_torch
from ..fileio import atomic_write, atomic_write_json, read_json, sha256_file
from .config import VARIANTS, ModelConfig

FORMAT = "mambaesr-checkpoint"
FORMAT_VERSION = 1
#: Upper bounds on a checkpoint's model config, checked before anything is built: several times every variant (the
#: teacher is 96 / 8 / 2 / 192 / 16 / 2 / 32 / 192), far below what would take minutes or gigabytes to build. A
#: checksum covers only the weights, so the JSON config is untrusted until it has passed these and the weights' shapes.
CONFIG_LIMITS = {"embed_dim": 512, "num_blocks": 32, "mixers_per_block": 4, "inner_dim": 1024, "state_dim": 128,
                 "heads": 32, "chunk": 1024, "ffn_dim": 2048, "context_mixers": 32}
#: A safetensors header is a JSON table of tensor names, dtypes, shapes and offsets: small for any model of ours.
MAX_HEADER_BYTES = 16 << 20


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, meta) paths for ``path`` given as ``x.safetensors``, ``x.json`` or the stem ``x``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(model, path: str | os.PathLike, variant: str | None = None,
                    training: dict | None = None) -> tuple[Path, Path]:
    """Write ``model`` (a ``MambaESR``) as safetensors + JSON; return both paths.

    ``variant``: the variant name the config came from, if any. ``training``: a JSON-able summary (data, steps,
    hardware, wall time, validation PSNR) stored as-is.
    """
    require_torch()
    from safetensors.torch import save_file

    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "config": model.cfg.to_dict(),
        "param_count": int(sum(v.numel() for v in model.parameters())),
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "training": training,
    }
    atomic_write_json(meta, info)
    return weights, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's JSON, validated, with ``config`` parsed into a :class:`ModelConfig`. Needs no torch."""
    _weights, meta = checkpoint_paths(path)
    info = read_json(meta, "checkpoint config", "a checkpoint is a .safetensors file with its .json beside it (pass "
                     "either path, or the common stem); re-save a damaged one", CheckpointError)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{meta} is not a MambaESR checkpoint config (expected \"format\": \"{FORMAT}\")")
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta} has checkpoint format version {info.get('format_version')!r}; this version "
                              f"of mambaesr_runtime reads version {FORMAT_VERSION}")
    try:
        info["config"] = ModelConfig.from_dict(info.get("config") or {})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint config {meta} has an invalid model config: {exc}") from exc
    over = [f"{k} {getattr(info['config'], k)} (limit {limit})" for k, limit in CONFIG_LIMITS.items()
            if getattr(info["config"], k) > limit]
    if over:
        raise CheckpointError(f"checkpoint config {meta} asks for a model far larger than any MambaESR variant: "
                              f"{', '.join(over)}; the JSON was edited or belongs to something else. Restore it "
                              f"(or re-save the checkpoint with save_checkpoint)")
    return info


def read_weight_shapes(weights: str | os.PathLike) -> dict:
    """{tensor name: shape} from a safetensors file's header alone (its first 8 + N bytes; no tensor is read).
    Needs no torch."""
    weights = Path(weights)
    bad = (f"checkpoint weights {weights} are truncated or not a safetensors file ({{}}); restore the file or "
           f"re-save the checkpoint")
    try:
        size = weights.stat().st_size
        with open(weights, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(bad.format(f"{size} bytes"))
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise CheckpointError(bad.format(f"its header claims {n} bytes of a {size}-byte file"))
            table = json.loads(fh.read(n))
        shapes = {k: tuple(v["shape"]) for k, v in table.items() if k != "__metadata__"}
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(bad.format(f"unreadable header: {exc}")) from exc
    if not all(isinstance(d, int) and d >= 0 for shape in shapes.values() for d in shape):
        raise CheckpointError(bad.format("a tensor shape in its header is not a list of sizes"))
    return shapes


@functools.lru_cache(maxsize=32)
def _expected_shapes(cfg: ModelConfig) -> dict:
    torch = require_torch()
    from .net import build_model

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}


def _describe_mismatch(found: dict, cfg: ModelConfig) -> str:
    """Name the missing/unexpected/mis-shaped keys and the variant whose shapes the weights match, if any."""
    expected = _expected_shapes(cfg)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} keys with other shapes (e.g. {k}: file {found[k]}, config {expected[k]})")
    # The config's own scale first: the first match ends the search (each candidate is a meta-device build).
    scales = [cfg.scale] + [s for s in (2, 3, 4) if s != cfg.scale]
    like = next((f"{name} x{s}" for s in scales for name in VARIANTS
                 if _expected_shapes(VARIANTS[name].replace(scale=s)) == found), None)
    hint = (f"the weights match variant {like}: the JSON config does not belong to these weights" if like
            else "the weights match no built-in variant")
    return "; ".join(parts) + f"; {hint}"


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """Load a checkpoint into a fresh model; returns ``(model, meta)``. The model is in eval mode.

    Raises :class:`CheckpointError` naming the problem: missing file, bad JSON, corrupt or truncated weights,
    or weights that do not fit the config (with the missing/unexpected keys and the variant they look like).
    """
    require_torch()
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .net import build_model

    info = read_checkpoint_meta(path)  # the config within CONFIG_LIMITS
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} not found (its config {weights.with_suffix('.json')} "
                              f"exists); copy the .safetensors file beside it")
    cfg = info["config"]
    # Config against the weights' shapes (safetensors header vs the model built on the meta device: no memory)
    # before the checksum, the tensor load and the real build: an edited config costs milliseconds to refuse.
    found = read_weight_shapes(weights)
    if found != _expected_shapes(cfg):
        raise CheckpointError(f"checkpoint weights {weights} do not fit its config: {_describe_mismatch(found, cfg)}")
    if info.get("weights_sha256") and sha256_file(weights) != info["weights_sha256"]:
        raise CheckpointError(f"checkpoint weights {weights} are corrupt or were replaced: sha256 differs from the "
                              f"one recorded in its JSON; restore the file or re-save the checkpoint")
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint weights {weights} are truncated or not a safetensors file ({exc}); "
                              f"restore the file or re-save the checkpoint") from exc
    model = build_model(cfg)
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != {k: tuple(v.shape) for k, v in model.state_dict().items()}:  # the header lied about its tensors
        raise CheckpointError(f"checkpoint weights {weights} do not fit its config: {_describe_mismatch(found, cfg)}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), info
