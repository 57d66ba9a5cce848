"""PSNR/SSIM of the published peers (RLFN, SPAN in ../shared/peers) by our own evaluation protocol, so that the gap
we quote between our weights and theirs is measured the same way on the same files.

    python benchmarks/peers_quality.py [--sets ../shared/data/benchmarks/{Set5,Set14,B100}]

Each LR image goes through the peer's ONNX whole (their graphs have dynamic shapes; ONNX Runtime CPU), then
``evaluation.benchmark.score_set`` (the one place the protocol lives: Y of MATLAB rgb2ycbcr, uint8 output, shave 4).
Writes benchmarks/results/peers_quality.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

from mambaesr_runtime.evaluation.benchmark import score_set
from mambaesr_runtime.imaging.sets import load_benchmark

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
RESULTS = Path(__file__).resolve().parent / "results"


def whole_image_runner(path: Path, threads: int):
    sess = peers.session(path, threads)
    name = sess.get_inputs()[0].name

    def run(lr: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32) / 255
        return sess.run(None, {name: x})[0][0].transpose(1, 2, 0)

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", type=Path, default=[BENCH / s for s in ("Set5", "Set14", "B100")])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "peers_quality")
    args = p.parse_args(argv)
    sets = {folder.name: load_benchmark(folder) for folder in args.sets}
    results = {name: {s: score_set(whole_image_runner(path, args.threads), triples, 4, bicubic=(name == "RLFN"))
                      for s, triples in sets.items()} for name, path in peers.peer_paths().items()}
    lines = ["# The peers by our evaluation protocol", "",
             "PSNR-Y (dB) / SSIM, x4, shave 4, whole images through ONNX Runtime, scored by "
             "`evaluation.benchmark.score_set`. Command: `python benchmarks/peers_quality.py`.", "",
             "| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[s]['psnr']:.2f} / {r[s]['ssim']:.4f}" for s in sets) + " |")
    lines.append("| bicubic | " + " | ".join(f"{results['RLFN'][s]['bicubic_psnr']:.2f} / "
                                            f"{results['RLFN'][s]['bicubic_ssim']:.4f}" for s in sets) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {n: {s: {k: v for k, v in r[s].items() if k != "images"} for s in r} for n, r in results.items()},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
