"""Shared by the benchmarks: the published peers (RLFN, SPAN) from ../shared/peers, interleaved timing and ONNX
Runtime's per-op profile.

On these shared machines an absolute time moves by +-30 % between runs, so every speed claim is a ratio to the peers
measured in the same process, one call of each contender per round (round-robin), median over rounds.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PEERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers"
PEERS = {"RLFN": "rlfn_x4.onnx", "SPAN": "span_x4.onnx"}
#: Op types that only move data. ``ReorderInput``/``ReorderOutput`` are ONNX Runtime's NCHW <-> NCHWc conversions.
DATA_MOVEMENT = ("Transpose", "Pad", "Slice", "Split", "Concat", "Gather", "ReorderInput", "ReorderOutput",
                 "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Resize", "Upsample")


def peer_paths() -> dict[str, Path]:
    """{name: ONNX path} of the peers; an error naming the folder when it is missing (they are not shipped)."""
    missing = [f for f in PEERS.values() if not (PEERS_DIR / f).is_file()]
    if missing:
        raise SystemExit(f"peer models {missing} not found in {PEERS_DIR}: speed is only quoted as a ratio to them, "
                         f"so this benchmark needs the team's ../shared folder beside the repository")
    return {name: PEERS_DIR / f for name, f in PEERS.items()}


def cpu() -> str:
    """The CPU's model name and its int8 dot-product instructions, which decide how ONNX Runtime runs an int8 graph
    (x86 VNNI: u8 x s8 into int32; x86 without it: a saturating int16 pair sum, see ``int8_onnx.Scheme``; ARM: dot
    product)."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                name = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        return name
    dot = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp") if f in flags]
    return f"{name}, int8 dot product: {'/'.join(dot) or 'none (no VNNI)'}"


def session(path: str | os.PathLike, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with the runtime's settings (``threads`` intra-op, one inter-op): the same for
    our graphs and the peers', so only the graphs differ."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(sess, x: np.ndarray):
    """A no-argument callable running ``sess`` on ``x``."""
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def round_robin(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """{key: [seconds per round]} for callables timed one after another in each round, so that every contender
    sees the same machine conditions; ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict, key: str, ref: str) -> float:
    """Median over rounds of the per-round ratio ``key / ref`` (pairs from the same round share conditions)."""
    return statistics.median(a / b for a, b in zip(times[key], times[ref]))


def op_profile(path: str | os.PathLike, x: np.ndarray, threads: int, runs: int = 3) -> dict:
    """Share of ONNX Runtime kernel time per op type on input ``x`` (``runs`` profiled runs after a warm-up):
    ``{"ops": {op: {"share", "nodes"}}, "data_movement_share": float}``."""
    with tempfile.TemporaryDirectory(prefix="mambaesr-prof-") as tmp:
        sess = session(path, threads, profile_prefix=str(Path(tmp) / "prof"))
        run = runner(sess, x)
        for _ in range(runs + 1):
            run()
        events = json.loads(Path(sess.end_profiling()).read_text())
    total, nodes = collections.Counter(), collections.defaultdict(set)
    first_run = None
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if first_run is None:
            first_run = e["name"]
        op = e["args"]["op_name"]
        total[op] += e["dur"]
        nodes[op].add(e["name"])
    kernel = sum(total.values()) or 1
    ops = {op: {"share": dur / kernel, "nodes": len(nodes[op])} for op, dur in total.most_common()}
    return {"ops": ops, "data_movement_share": sum(v["share"] for k, v in ops.items() if k in DATA_MOVEMENT)}


def write_table(md: Path, block: str, begin: str, end: str, title: str) -> None:
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) into the results file ``md`` in place of the
    block between those markers, keeping the prose around it; a new file gets ``title`` as its heading."""
    text = md.read_text() if md.is_file() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = f"# {title}\n\n{block}\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
