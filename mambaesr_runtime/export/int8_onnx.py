"""INT8: a verified fp32 ONNX graph -> a QDQ graph by ONNX Runtime's static quantization, calibrated on real training
crops, checked against the fp32 graph before it is written.

Everything here is ONNX Runtime's own tooling (``onnxruntime.quantization``): ``quant_pre_process`` (shape inference
and basic graph optimisations the quantizer expects), ``quantize_static`` (QDQ format, per-channel weights, MinMax
calibration over a fixed, recorded sample) and ``qdq_loss_debug`` (per-tensor SQNR of the quantized graph against the
fp32 one, recorded in the manifest). No hand-written graph pass: the only decision made here is *which nodes* are
quantized (:func:`choose_nodes`), given to ``quantize_static`` as ``nodes_to_quantize``.

Which nodes, measured on the shipped student (264x264 tile, ONNX Runtime 1.32, this 2-core CPU; the numbers are in
``benchmarks/results/int8.md``):

- Every Conv except the output conv (the one whose result only moves to the output: the pixel shuffle and the
  global residual). Convs alone were *slower* than fp32 (0.9x): each quantized conv was an island between fp32 ops,
  and its Quantize/Dequantize pairs plus the NCHW <-> NHWC transposes ONNX Runtime puts around ``QLinearConv`` cost
  more than the integer arithmetic saved.
- So the residual stream between them goes int8 too: the elementwise and data-movement ops (Add, Mul, LeakyRelu,
  Resize, Transpose) whose every computed input comes from a quantized node, grown to a fixpoint. That keeps whole
  chains (residual add -> valid-map mask -> conv -> LeakyReLU -> mask -> conv -> residual add) in uint8 NHWC, and
  measured 1.3-1.45x faster than fp32. The pad-aware valid-map convs are quantized as well: their 0/1 outputs are
  exact in uint8 (zero is always exactly representable), and a float mask between int8 ops cost a
  Dequantize/Transpose pair per use.
- The scan stays fp32: its RMS norm, the dt/decay path (Softplus, the exp of segment sums, the decay matmuls), the
  B/C/gate projections and the SiLU gate are never quantized (none of their inputs is a quantized node's output, so
  the growth never reaches them), nor are the input's valid-map arithmetic and the output conv and everything after
  it (the global residual and the pixel shuffle: quantizing the output itself cost 6 dB).

Two schemes, one node choice: ``onnxruntime`` (uint8 asymmetric activations, 7-bit symmetric per-channel weights:
ONNX Runtime's fast u8s8 kernels on x86 VNNI/AVX2 and ARM dot-product, the same integers with and without VNNI, see
:attr:`Scheme.reduce_range`; its s8s8 QDQ path ran at 0.7x of fp32)
and ``tensorrt`` (int8 activations with zero point 0 and float bias: what TensorRT's ONNX parser accepts, see
``tensorrt_ops.json``). A graph is refused unless it stays within :data:`INT8_MIN_PSNR` of the fp32 graph on every
parity tile (real image content, a saturated tile and, for pad-aware graphs, padded tiles).

Needs ``onnx`` and ``onnxruntime`` (imported when called); no torch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DependencyError, ExportError

__all__ = ["CALIBRATION_TILES", "INT8_MIN_PSNR", "SCHEMES", "CalibrationSample", "calibration_sample",
           "check_int8_parity", "choose_nodes", "quantize_int8"]

log = logging.getLogger(__name__)

#: The int8 graph's worst parity tile must be at least this close to the fp32 graph (PSNR, dB, outputs in [0, 1]).
INT8_MIN_PSNR = 40.0
#: Calibration tiles drawn from the training images (see :func:`calibration_sample`).
CALIBRATION_TILES = 16
#: Ops that carry the residual stream between quantized convs (see the module docstring).
_STREAM_OPS = ("Add", "Mul", "LeakyRelu", "Relu", "Resize", "Transpose")
#: Conv names that compute the scan's dt (the decay path) in the raster layout: never quantized.
_DECAY_CONVS = ("param_proj",)


@dataclass(frozen=True)
class Scheme:
    """How ``quantize_static`` is told to quantize for one consumer of the graph."""

    activations: str
    """``uint8`` or ``int8``."""
    symmetric_activations: bool
    quantize_bias: bool
    reduce_range: bool
    """7-bit weights (|w| <= 64): x86 without VNNI (AVX2, AVX-512F) multiplies u8 x s8 pairs into a saturating int16
    (``vpmaddubsw``), so full-range weights overflow there and the same graph loses 0.8 dB on Set5 (measured: the
    shipped student's int8 graph 31.50 dB on an AVX-512 VNNI Xeon, 30.74 dB on an AMD EPYC without VNNI). 255 x 64
    x 2 fits in int16: the graph computes the same integers on every CPU."""
    why: str


SCHEMES = {
    "onnxruntime": Scheme("uint8", False, True, True,
                          "uint8 asymmetric activations, 7-bit symmetric per-channel weights, int32 bias: ONNX "
                          "Runtime's u8s8 CPU kernels (VNNI, AVX2 without saturation, ARM dot product)"),
    "tensorrt": Scheme("int8", True, False, False,
                       "int8 activations with zero point 0, int8 symmetric per-channel weights, float bias: what the "
                       "TensorRT ONNX parser accepts (symmetric INT8 only; DequantizeLinear of int32 bias is refused)"),
}


def _quantization():
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError as exc:
        raise DependencyError("int8 export uses ONNX Runtime's quantization tools, which need the onnx package: "
                              "pip install onnx (or the export extra: pip install -e '.[export]')") from exc
    return onnx, quantization


# --- the calibration sample ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationSample:
    """Real LR training crops for calibration, and the record of exactly which (for the manifest)."""

    tiles: np.ndarray
    """float32 (n, 3, tile, tile) in [0, 1]; padding (outside the image) is the engine's pad value."""
    record: dict
    """``folder``, ``seed``, ``tile``, ``scale``, ``pad_value``, ``crops`` ([file relative to folder, LR y, LR x,
    LR h, LR w, padded]) and ``sha256`` of the tiles' bytes."""


def calibration_sample(folder: str | os.PathLike, tile: int, scale: int, pad_value: float | None,
                       count: int = CALIBRATION_TILES, seed: int = 0) -> CalibrationSample:
    """``count`` LR crops of ``tile`` x ``tile`` from the training images under ``folder``, made as training makes
    them (MATLAB bicubic x1/``scale`` of an HR crop). Half the tiles are random crops of images at least a tile
    large in LR (every other one with its bottom and right thirds padded: an image edge), half are whole images
    smaller than a tile, padded as the runtime pads them (``pad_value``; reflection for graphs that are not
    pad-aware): benchmark photos (Set5, B100) are that size. Files are drawn without replacement by ``seed`` (sizes
    from the file headers); deterministic for (folder contents, tile, scale, count, seed)."""
    from PIL import Image  # sizes from the headers only (the runtime's header check is a layer above export)

    from ..imaging.sets import DataError, list_images, make_pair, read_rgb

    folder = Path(folder)
    try:
        files = list_images(folder, skip_test_sets=True)
    except DataError as exc:
        raise ExportError(f"int8 calibration needs real training images: {exc}; give a folder of them as "
                          f"calibration_dir=FOLDER (the training images, e.g. ../shared/data/train)") from exc
    if count < 1:
        raise ExportError(f"calibration needs at least one tile, got count={count}")
    large, small = [], []
    for path in files:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image Pillow can size: skipped
            continue
        if height // scale >= 8 and width // scale >= 8:
            (large if min(height, width) // scale >= tile else small).append(path)
    rng = np.random.default_rng(seed)
    want_large = min(len(large), (count + 1) // 2)
    want_small = min(len(small), count - want_large)
    want_large = min(len(large), count - want_small)
    if want_large + want_small == 0:
        raise ExportError(f"no usable training images under {folder} (each needs at least {8 * scale} pixels a side)")
    chosen = ([(large[int(i)], True) for i in sorted(rng.choice(len(large), want_large, replace=False))]
              + [(small[int(i)], False) for i in sorted(rng.choice(len(small), want_small, replace=False))])
    tiles = np.empty((len(chosen), 3, tile, tile), np.float32)
    crops = []
    for i, (path, big) in enumerate(chosen):
        hr = read_rgb(path)
        lr_h, lr_w = min(tile, hr.shape[0] // scale), min(tile, hr.shape[1] // scale)
        y = int(rng.integers(0, hr.shape[0] // scale - lr_h + 1))
        x = int(rng.integers(0, hr.shape[1] // scale - lr_w + 1))
        lr, _ = make_pair(hr[y * scale:(y + lr_h) * scale, x * scale:(x + lr_w) * scale], scale)
        img = lr.astype(np.float32).transpose(2, 0, 1) / 255
        if big and i % 2 == 1:  # the edge of a large image: its top-left two thirds
            lr_h = lr_w = max(1, 2 * tile // 3)
            img = img[:, :lr_h, :lr_w]
        if pad_value is None:
            mode = "reflect" if tile - lr_h < lr_h and tile - lr_w < lr_w else "symmetric"
            tiles[i] = np.pad(img, ((0, 0), (0, tile - lr_h), (0, tile - lr_w)), mode=mode)
        else:
            tiles[i] = pad_value
            tiles[i, :, :lr_h, :lr_w] = img
        crops.append([path.relative_to(folder).as_posix(), y, x, lr_h, lr_w, (lr_h, lr_w) != (tile, tile)])
    record = {"folder": str(folder), "seed": seed, "tile": tile, "scale": scale, "pad_value": pad_value,
              "crops": crops, "sha256": hashlib.sha256(np.ascontiguousarray(tiles).tobytes()).hexdigest()}
    return CalibrationSample(tiles, record)


# --- which nodes -----------------------------------------------------------------------------------------------------

def _output_conv(graph) -> str | None:
    """The last Conv: the one whose output reaches the graph output without passing another Conv."""
    producer = {o: n for n in graph.node for o in n.output}
    seen, todo, found = set(), [o.name for o in graph.output], None
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            if found is not None and found != node.name:
                return None  # several convs feed the output directly: no single output conv
            found = node.name
            continue
        todo.extend(i for i in node.input if i)
    return found


def choose_nodes(model) -> dict:
    """The nodes of ``model`` (an ``onnx.ModelProto``, after ``quant_pre_process``) to quantize, by role, with what
    stays fp32 and why (see the module docstring). Returns ``{"quantize": [names], "roles": {role: [names]},
    "fp32": {what: reason}, "op_types": [...]}``."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    producer = {o: n for n in graph.node for o in n.output}
    out_conv = _output_conv(graph)
    # quantize_static takes nodes by name: an unnamed node (none in our exports) is left fp32
    convs = [n.name for n in graph.node if n.op_type == "Conv" and n.name and n.name != out_conv
             and not any(key in n.name for key in _DECAY_CONVS)]
    selected = set(convs)
    stream: list[str] = []
    changed = True
    while changed:  # grow along the residual stream: ops whose every computed input is a quantized node's output
        changed = False
        for node in graph.node:
            if node.op_type not in _STREAM_OPS or not node.name or node.name in selected:
                continue
            computed = [i for i in node.input if i and i not in constants]
            if computed and all(i in producer and producer[i].name in selected for i in computed):
                selected.add(node.name)
                stream.append(node.name)
                changed = True
    order = {n.name: i for i, n in enumerate(graph.node)}
    stream.sort(key=order.__getitem__)
    fp32 = {"the scan": "RMS norm, dt/decay path (Softplus, Exp of segment sums, decay matmuls), B/C/gate "
                        "projections, SiLU gate: never an input from a quantized node",
            "input valid map": "(x + 0.5) * 4 clipped: exact 0/1 in fp32, computed from the graph input"}
    if out_conv is not None:
        fp32[out_conv] = "the output conv and all after it (global residual, pixel shuffle): the output stays fp32"
    for name in sorted(n.name for n in graph.node if n.op_type == "Conv" and any(k in n.name for k in _DECAY_CONVS)):
        fp32[name] = "computes the scan's dt (decay path)"
    roles = {"conv": convs, "residual stream": stream}
    chosen = convs + stream
    return {"quantize": chosen, "roles": roles, "fp32": fp32,
            "op_types": sorted({n.op_type for n in graph.node if n.name in selected})}


# --- quantization ----------------------------------------------------------------------------------------------------

def _reader(name: str, tiles: np.ndarray, batch: int):
    """An ONNX Runtime ``CalibrationDataReader`` over ``tiles``: one static-shape batch per ``get_next``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{name: np.ascontiguousarray(tiles[i:i + batch])}
                                  for i in range(0, len(tiles) - batch + 1, batch)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


def quantize_int8(fp32_onnx: str | os.PathLike, out_path: str | os.PathLike, sample: CalibrationSample,
                  scheme: str = "onnxruntime") -> dict:
    """Quantize ``fp32_onnx`` into ``out_path`` (a plain, not yet checked write; the caller writes atomically) with
    ONNX Runtime's ``quant_pre_process`` + ``quantize_static``; return the node choice and settings for the
    manifest."""
    if scheme not in SCHEMES:
        raise ExportError(f"int8 scheme {scheme!r} is unknown; valid schemes are {sorted(SCHEMES)}")
    spec = SCHEMES[scheme]
    onnx, q = _quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_onnx))
    name = model.graph.input[0].name
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    if len(sample.tiles) < batch:
        raise ExportError(f"the calibration sample has {len(sample.tiles)} tiles, fewer than the engine's batch "
                          f"{batch}; give more calibration tiles")
    with tempfile.TemporaryDirectory(prefix="mambaesr-int8-") as work:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        choice = choose_nodes(onnx.load(str(pre)))
        activation = q.QuantType.QUInt8 if spec.activations == "uint8" else q.QuantType.QInt8
        q.quantize_static(
            str(pre), str(out_path), _reader(name, sample.tiles, batch), quant_format=q.QuantFormat.QDQ,
            per_channel=True, reduce_range=spec.reduce_range, activation_type=activation,
            weight_type=q.QuantType.QInt8, op_types_to_quantize=choice["op_types"], nodes_to_quantize=choice["quantize"],
            calibrate_method=q.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": spec.symmetric_activations, "WeightSymmetric": True,
                           "QuantizeBias": spec.quantize_bias})
    counts = {role: len(names) for role, names in choice["roles"].items()}
    log.info("quantized %s (%s): %s", Path(fp32_onnx).name, scheme, counts)
    return {"scheme": scheme, "scheme_note": spec.why, "format": "QDQ", "per_channel": True,
            "calibration_method": "MinMax", "activations": spec.activations,
            "symmetric_activations": spec.symmetric_activations, "quantize_bias": spec.quantize_bias,
            "reduce_range": spec.reduce_range,
            "nodes": choice["roles"], "node_counts": counts, "fp32": choice["fp32"]}


# --- checks against fp32 ---------------------------------------------------------------------------------------------

def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2, dtype=np.float64))
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(1.0 / mse))


def check_int8_parity(int8_onnx: str | os.PathLike, fp32_onnx: str | os.PathLike, pad_value: float | None,
                      threads: int = 2, min_psnr: float = INT8_MIN_PSNR) -> dict:
    """Run the int8 and the fp32 graph (ONNX Runtime, CPU) on the parity tiles of :mod:`.plan_parity` (real image
    content and the saturated tile; for a pad-aware graph also one batch of padded real tiles, compared on their
    image part). Returns the numbers for the manifest; raises :class:`ExportError` when a real or padded tile is
    below ``min_psnr`` or the int8 output is not finite (the caller then writes nothing).

    The saturated tile (1-pixel checkerboards of saturated colours) is measured and recorded but is not part of
    the bar: its activations lie far outside what any real image produces, so static int8 ranges calibrated on
    real images clip it (22 dB on the shipped student); calibrating on it as well would widen every range and cost
    every real image ~10 dB (measured: 49.7 -> 39.4 dB). That is the known cost of a static int8 tier, recorded
    in the manifest; the fp32 tier has no such case."""
    from ..backends.onnxruntime import OrtBackend
    from .parity import padded_tiles, real_tiles
    from .plan_parity import parity_tiles

    with OrtBackend(fp32_onnx, threads) as ref, OrtBackend(int8_onnx, threads) as q8:
        n, _, h, w = ref.input_shape
        tiles = parity_tiles(h, n)
        plain, keep = len(tiles), h
        if pad_value is not None:
            padded, keep = padded_tiles(real_tiles(h, n, seed=1), pad_value)
            tiles = np.concatenate([tiles, padded])
        outs, refs = [], []
        for start in range(0, len(tiles), n):
            batch = np.ascontiguousarray(tiles[start:start + n])
            outs.append(q8.infer(batch))
            refs.append(ref.infer(batch))
    out, want = np.concatenate(outs), np.concatenate(refs)
    name = Path(int8_onnx).name
    if not np.isfinite(out).all():
        raise ExportError(f"{name}: the int8 graph produces inf/NaN where fp32 does not; it was not written")
    side = keep * out.shape[-1] // w
    per_tile = [_psnr(o, r) if i < plain else _psnr(o[..., :side, :side], r[..., :side, :side])
                for i, (o, r) in enumerate(zip(out, want))]
    saturated = plain - 1
    real = [i for i in range(len(tiles)) if i != saturated]
    result = {"int8_vs_fp32_psnr_db": round(_psnr(out[:saturated], want[:saturated]), 2),
              "int8_vs_fp32_min_tile_psnr_db": round(min(per_tile[i] for i in real), 2),
              "int8_vs_fp32_saturated_tile_psnr_db": round(per_tile[saturated], 2),
              "int8_vs_fp32_max_abs_err": float(np.abs(out[:saturated] - want[:saturated]).max()),
              "parity_tiles": len(tiles), "parity_reference": "the verified fp32 ONNX on ONNX Runtime CPU",
              "parity_min_psnr_db": min_psnr,
              "parity_rule": "every real and padded tile >= parity_min_psnr_db; the saturated tile is recorded only"}
    if plain < len(tiles):
        result["int8_vs_fp32_padded_tile_psnr_db"] = round(min(per_tile[plain:]), 2)
    worst = min(real, key=per_tile.__getitem__)
    if per_tile[worst] < min_psnr:
        which = f"real tile {worst}" if worst < plain else f"padded tile {worst - plain} (its image part)"
        raise ExportError(f"{name}: the int8 graph is only {per_tile[worst]:.1f} dB PSNR from fp32 on {which} (real "
                          f"tiles: {result['int8_vs_fp32_psnr_db']} dB); an int8 engine must reach {min_psnr:g} dB on "
                          f"every real tile. Nothing was written. Use the fp32 tier, or fine-tune the weights with "
                          f"quantization in the loop")
    return result


def qdq_error_report(int8_onnx: str | os.PathLike, fp32_onnx: str | os.PathLike, tiles: np.ndarray,
                     worst: int = 5) -> dict:
    """``qdq_loss_debug`` on one calibration tile: for every tensor the int8 graph quantizes, its SQNR (dB) against
    the fp32 graph's tensor (``xmodel_err``: everything before it quantized too) and the SQNR of its own
    quantization alone (``qdq_err``); the ``worst`` tensors by ``xmodel_err`` and the median."""
    _quantization()  # the dependency check
    from onnxruntime.quantization import qdq_loss_debug as dbg

    saved = list(_STREAM_OPS) + ["Conv"]
    model_input = _input_name(fp32_onnx)
    with tempfile.TemporaryDirectory(prefix="mambaesr-qdqdebug-") as work:
        aug_f, aug_q = Path(work) / "f.onnx", Path(work) / "q.onnx"
        dbg.modify_model_output_intermediate_tensors(str(fp32_onnx), str(aug_f), op_types_for_saving=saved)
        dbg.modify_model_output_intermediate_tensors(str(int8_onnx), str(aug_q),
                                                     op_types_for_saving=saved + ["DequantizeLinear"])
        acts_f = dbg.collect_activations(str(aug_f), _reader(model_input, tiles[:1], 1))
        acts_q = dbg.collect_activations(str(aug_q), _reader(model_input, tiles[:1], 1))
    matched = dbg.create_activation_matching(acts_q, acts_f)
    errors = dbg.compute_activation_error({k: v for k, v in matched.items() if "post_qdq" in v and "float" in v})
    rows = sorted(((name, e["xmodel_err"], e.get("qdq_err")) for name, e in errors.items()
                   if e.get("xmodel_err") is not None and np.isfinite(e["xmodel_err"])), key=lambda r: r[1])
    return {"tool": "onnxruntime.quantization.qdq_loss_debug", "tensors": len(rows),
            "worst_xmodel_sqnr_db": [[n, round(float(x), 1), None if d is None else round(float(d), 1)]
                                     for n, x, d in rows[:worst]],
            "median_xmodel_sqnr_db": round(float(np.median([r[1] for r in rows])), 1) if rows else None,
            "columns": ["tensor", "xmodel_err (dB SQNR vs fp32)", "qdq_err (dB SQNR of its own rounding)"]}


def _input_name(path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name
