"""Evaluate a model on benchmark sets by the standard protocol: per image, per set, against bicubic and the seed's
table; what is measured is what ships (an ONNX file runs through the tiled runtime path).

A model source is a checkpoint (``.safetensors``/``.json``: PyTorch, whole image) or an engine file: an ONNX file or
a TensorRT plan, opened by the runtime's :class:`~..runtime.upscaler.Upscaler` exactly as ``mambaesr-run --model``
opens it and run through the tiles of its static shape (an ONNX file with dynamic height and width: the ``cpu``
profile's tile size, or ``tile``), blended as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..artifacts.names import BACKEND_OF_SUFFIX
from ..fileio import atomic_write, atomic_write_json
from ..imaging.imresize import imresize
from ..imaging.sets import DataError, list_images, load_benchmark, lr_size_error
from ..runtime.imageio import inspect_image
from ..runtime.tiling import upscale_tiled
from .metrics import psnr_y, ssim_y

#: The seed paper's student (370K), x4 PSNR / SSIM, for the comparison column.
SEED_TABLE = {"Set5": (28.28, 0.837), "Set14": (25.39, 0.727), "B100": (25.20, 0.693)}


def torch_runner(model, device: str = "cpu"):
    """A callable uint8 LR RGB -> float32 SR RGB in [0, 1] that runs ``model`` on the whole image (no tiles)."""
    from ..errors import require_torch

    torch = require_torch()

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255).to(device)
        with torch.no_grad():
            return model(x)[0].permute(1, 2, 0).float().cpu().numpy()

    return run


def make_upscaler(source: str | os.PathLike, overlap: int = 8, threads: int = 2, device: str = "cpu",
                  tile: int | None = None):
    """(callable uint8 LR RGB -> float32 SR RGB in [0, 1], scale, description) for a checkpoint, an ONNX file or a
    TensorRT plan; engines run through the tiles of their static shape (or ``tile`` for a dynamic-shape ONNX file),
    blended, as the runtime runs them."""
    source = Path(source)
    if BACKEND_OF_SUFFIX.get(source.suffix.lower(), "torch") != "torch":  # else a checkpoint, with or without suffix
        from ..runtime.upscaler import Upscaler

        sel = Upscaler("cpu", model=source, overlap=overlap, tile=tile, threads=threads).engine
        backend = sel.backend
        n, _, th, tw = backend.input_shape

        def run(lr: np.ndarray) -> np.ndarray:
            return upscale_tiled(backend.infer, lr.astype(np.float32) / 255, backend.scale, (th, tw), overlap, n,
                                 pad_value=backend.pad_value)

        return run, backend.scale, backend.describe() + f" tiles {th}x{tw} overlap {overlap}"
    from ..model.checkpoint import load_checkpoint

    model, info = load_checkpoint(source, device=device)
    return torch_runner(model, device), model.cfg.scale, f"pytorch {source.name} ({info.get('variant')}, whole image)"


def to_uint8(sr: np.ndarray) -> np.ndarray:
    return np.clip(np.round(sr * 255), 0, 255).astype(np.uint8)


def score_set(run, triples, scale: int, bicubic: bool = True) -> dict:
    """Per-image and mean PSNR/SSIM of ``run`` on (name, LR, HR) uint8 RGB triples; with ``bicubic``, the MATLAB
    bicubic reference too. The one place the evaluation protocol is applied (training validation uses it as well)."""
    keys = ("psnr", "ssim") + (("bicubic_psnr", "bicubic_ssim") if bicubic else ())
    images = {}
    for name, lr, hr in triples:
        sr = to_uint8(run(lr))
        images[name] = {"psnr": psnr_y(sr, hr, scale), "ssim": ssim_y(sr, hr, scale)}
        if bicubic:
            bic = imresize(lr, scale)
            images[name].update(bicubic_psnr=psnr_y(bic, hr, scale), bicubic_ssim=ssim_y(bic, hr, scale))
    result = {k: float(np.mean([v[k] for v in images.values()])) for k in keys}
    result["images"] = images
    return result


def check_benchmark(folder, scale: int = 4) -> None:
    """Refuse a ``<Set>/LR_bicubic/X<scale>`` image that is not 1/scale of its HR image, from the files' headers:
    before any image is decoded or run (``load_benchmark`` checks the decoded sizes again)."""
    folder = Path(folder)
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir():
        return
    for hr_path in list_images(folder / "HR"):
        lr_path = lr_dir / f"{hr_path.stem}x{scale}{hr_path.suffix}"
        if lr_path.is_file():
            hr, lr = inspect_image(hr_path), inspect_image(lr_path)
            error = lr_size_error(lr_path, (lr.width, lr.height), hr_path, (hr.width, hr.height), scale)
            if error:
                raise DataError(error)


def evaluate(source, sets: dict, overlap: int = 8, threads: int = 2, device: str = "cpu",
             tile: int | None = None) -> dict:
    """``sets``: {name: folder}. Returns {'model', 'runner', 'scale', 'sets': {set: {'psnr', 'ssim', 'bicubic_psnr',
    'bicubic_ssim', 'images': {name: {...}}}}}."""
    run, scale, desc = make_upscaler(source, overlap, threads, device, tile)
    for folder in sets.values():  # every set's LR sizes (headers only) before the first image is run
        check_benchmark(folder, scale)
    return {"model": str(source), "runner": desc, "scale": scale,
            "sets": {name: score_set(run, load_benchmark(folder, scale), scale) for name, folder in sets.items()}}


def markdown_table(result: dict) -> str:
    lines = [f"Model: `{result['model']}` — {result['runner']}", "",
             f"PSNR-Y (dB) / SSIM, x{result['scale']}, shave {result['scale']}.", "",
             "| set | images | ours | bicubic | seed student | ours - bicubic |", "|---|---|---|---|---|---|"]
    for name, r in result["sets"].items():
        seed = SEED_TABLE.get(name)
        lines.append(f"| {name} | {len(r['images'])} | {r['psnr']:.2f} / {r['ssim']:.4f} | "
                     f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                     f"{f'{seed[0]:.2f} / {seed[1]:.3f}' if seed else '-'} | {r['psnr'] - r['bicubic_psnr']:+.2f} dB |")
    return "\n".join(lines) + "\n"


def crop_sheet(source, folder, names: list[str] | None = None, crop: int = 96, overlap: int = 8,
               threads: int = 2, max_images: int = 4, tile: int | None = None) -> np.ndarray:
    """A BGR sheet: one row per image, (bicubic | ours | HR) HR-resolution crops from the image centre."""
    run, scale, _ = make_upscaler(source, overlap, threads, tile=tile)
    rows = []
    for name, lr, hr in load_benchmark(folder, scale):
        if names and name not in names:
            continue
        if len(rows) >= max_images:
            break
        sr, bic = to_uint8(run(lr)), imresize(lr, scale)
        c = min(crop, hr.shape[0], hr.shape[1])
        y, x = (hr.shape[0] - c) // 2, (hr.shape[1] - c) // 2
        cells = [im[y:y + c, x:x + c] for im in (bic, sr, hr)]
        cells = [cv2.resize(cell, (crop * 2, crop * 2), interpolation=cv2.INTER_NEAREST) for cell in cells]
        row = np.concatenate([np.pad(cell, ((4, 4), (4, 4), (0, 0)), constant_values=255) for cell in cells], 1)
        cv2.putText(row, name, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row[:, :, ::-1])
    header = np.full((24, rows[0].shape[1], 3), 255, np.uint8)
    for i, label in enumerate(("bicubic", "ours", "HR")):
        cv2.putText(header, label, (10 + i * rows[0].shape[1] // 3, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return np.concatenate([header] + rows, 0)


def write_report(result: dict, out_dir: str | os.PathLike, sheet: np.ndarray | None = None) -> Path:
    """results.md, results.json (and crops.png) in ``out_dir``; returns the folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # each file written to a temporary and renamed: an interrupted or failed run leaves the previous report whole
    table = markdown_table(result)
    atomic_write(out_dir / "results.md", lambda tmp: Path(tmp).write_text(table), suffix=".md")
    atomic_write_json(out_dir / "results.json", result, indent=1)
    if sheet is not None:
        def write_sheet(tmp):
            if not cv2.imwrite(tmp, sheet):
                raise OSError(f"OpenCV could not write the crop sheet {out_dir / 'crops.png'}")
        atomic_write(out_dir / "crops.png", write_sheet, suffix=".png")
    return out_dir
