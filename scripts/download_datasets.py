#!/usr/bin/env python3
"""Download the standard x4 SR benchmarks (Set5, Set14, B100, Urban100) from their public sources.

    python scripts/download_datasets.py Set5 Set14 B100 --dest data/benchmarks

Every file is checked against its pinned sha256 and downloads resume where they stopped; LR_bicubic/X4 is made
locally with the MATLAB-exact imresize. Sources: mambaesr_runtime/evaluation/dataset_sources.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mambaesr_runtime.cli.flags import for_cli
from mambaesr_runtime.errors import MambaESRError
from mambaesr_runtime.evaluation.datasets import default_sources, download_sets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", default=["Set5", "Set14", "B100"])
    parser.add_argument("--dest", default="data/benchmarks")
    parser.add_argument("--sources", help="a sources JSON instead of the built-in one")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="fetch files without a pinned checksum (prints their sha256)")
    args = parser.parse_args(argv)
    try:
        sources = json.loads(Path(args.sources).read_text()) if args.sources else default_sources()
        counts = download_sets(args.sets, args.dest, sources, allow_unverified=args.allow_unverified,
                               progress=lambda msg: print(msg, file=sys.stderr))
    except (MambaESRError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {for_cli(exc, {'allow_unverified': '--allow-unverified'})}", file=sys.stderr)
        return 2
    for name, n in counts.items():
        print(f"{name}: {n} HR images in {args.dest}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
