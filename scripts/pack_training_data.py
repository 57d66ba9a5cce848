#!/usr/bin/env python3
"""Make the compact training pack a lent GPU trains from (it receives only the checkout plus a few tens of MiB).

    python scripts/pack_training_data.py [--out .data_cache/pack] [--budget-mib 40]

Cuts the default training folders (those ``mambaesr-train`` uses) into lossless WebP tiles, most textured first,
until the budget is spent; adds Set5 and Set14 for validation and the LR of every tile; writes ``pack.json`` with
the sha256 of every file and what was kept and left out, per folder. Training verifies the sums before use. The pack
folder is git-ignored (``.data_cache/``): carry it to the GPU machine, never commit it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mambaesr_runtime.cli.train import DEFAULT_EVAL, DEFAULT_TRAIN, DEFAULT_VAL
from mambaesr_runtime.imaging.sets import load_benchmark
from mambaesr_runtime.training.pack import make_pack

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-dir", action="append", dest="train_dirs", help="HR folder (default: mambaesr-train's)")
    p.add_argument("--val-dir", action="append", dest="val_dirs", help="benchmark folder (default: Set5, Set14)")
    p.add_argument("--out", type=Path, default=ROOT / ".data_cache" / "pack")
    p.add_argument("--budget-mib", type=float, default=40.0)
    p.add_argument("--tile", type=int, default=384, help="HR tile side to aim for (default 384)")
    p.add_argument("--min-tile", type=int, default=256, help="smallest HR tile side (default 256: 64-pixel LR crops)")
    args = p.parse_args(argv)
    train_dirs = args.train_dirs or [d for d in DEFAULT_TRAIN if Path(d).is_dir()]
    val_dirs = args.val_dirs or DEFAULT_VAL
    guard = {Path(d).name: load_benchmark(d) for d in dict.fromkeys(list(val_dirs) + DEFAULT_EVAL) if Path(d).is_dir()}
    manifest = make_pack(train_dirs, val_dirs, args.out, args.budget_mib, args.tile, args.min_tile, refuse=guard)
    print(f"pack {args.out}: {manifest['bytes'] / 2**20:.1f} MiB, {len(manifest['tiles'])} tiles, "
          f"validation {', '.join(manifest['val_sets'])}")
    for folder, kept in manifest["kept"].items():
        print(f"  kept {folder}: {kept['tiles']} tiles, {kept['hr_megapixels']} HR megapixels")
    for folder, left in manifest["left_out"].items():
        print(f"  left out of {folder}: {left['tiles_over_budget']} tiles over the budget, "
              f"{left['images_too_small']} images smaller than {args.min_tile} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
