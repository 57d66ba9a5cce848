"""Experiment records: ``runs/<kind>_<YYYYmmdd-HHMMSS>/`` with config, metrics, git commit and diff, log, checkpoints
and a plot of the curves; ``runs/latest`` points to the newest run."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np

from ..errors import MambaESRError
from ..fileio import atomic_write_json

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunRecord:
    """One run folder. Create with :meth:`create` (new) or :meth:`resume` (existing)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handler = None

    @classmethod
    def create(cls, root: str | os.PathLike, kind: str) -> RunRecord:
        root = Path(root)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{kind}_{stamp}"
        n = 1
        while path.exists():  # two runs in the same second
            n += 1
            path = root / f"{kind}_{stamp}-{n}"
        path.mkdir(parents=True)
        record = cls(path)
        record._write_git_info()
        latest = root / "latest"
        tmp = root / f".latest.{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(path.name)
        os.replace(tmp, latest)
        return record

    @classmethod
    def resume(cls, path: str | os.PathLike) -> RunRecord:
        path = Path(path)
        if path.is_symlink():
            path = path.resolve()
        if not (path / "config.json").is_file():
            raise MambaESRError(f"{path} is not a run folder (no config.json); pass runs/<kind>_<timestamp> or "
                                f"runs/latest")
        return cls(path)

    def _write_git_info(self) -> None:
        """The commit and uncommitted diff of the code that ran (best effort: not every install is a checkout)."""
        here = Path(__file__).resolve().parent
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, check=False, capture_output=True, text=True,
                                    timeout=10).stdout.strip()
            diff = subprocess.run(["git", "diff", "HEAD"], cwd=here, check=False, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            commit, diff = "", ""
        (self.path / "git.json").write_text(json.dumps({"commit": commit or None, "dirty": bool(diff)}) + "\n")
        if diff:
            (self.path / "git.diff").write_text(diff)

    def write_config(self, config: dict) -> None:
        (self.path / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    def config(self) -> dict:
        path = self.path / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics, indent=1)

    def attach_log(self) -> None:
        self._handler = logging.FileHandler(self.path / "train.log")
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger("mambaesr_runtime").addHandler(self._handler)
        logging.getLogger("mambaesr_runtime").setLevel(logging.INFO)

    def detach_log(self) -> None:
        if self._handler is not None:
            logging.getLogger("mambaesr_runtime").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def plot_curves(self, curves: dict) -> Path:
        """curves.png: training loss (log scale, left) and validation PSNR per set (right), drawn with OpenCV."""
        path = self.path / "curves.png"
        cv2.imwrite(str(path), render_curves(curves))
        return path


def _panel(series: dict, title: str, size=(420, 300), log_y=False) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, title, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    pts = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items() if len(x)}
    pts = {k: (x, np.log10(np.maximum(y, 1e-12)) if log_y else y) for k, (x, y) in pts.items()}
    if not pts:
        return img
    xs = np.concatenate([x for x, _ in pts.values()])
    ys = np.concatenate([y for _, y in pts.values()])
    ys = ys[np.isfinite(ys)]
    if not len(ys):
        return img
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = ys.min(), max(ys.max(), ys.min() + 1e-6)
    left, top, right, bottom = 50, 30, w - 10, h - 30
    cv2.rectangle(img, (left, top), (right, bottom), (160, 160, 160), 1)
    for frac, val in ((0, y0), (1, y1)):
        label = f"{10 ** val:.3g}" if log_y else f"{val:.2f}"
        cv2.putText(img, label, (2, int(bottom - frac * (bottom - top)) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {int(x1)}", (right - 80, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    colours = [(200, 80, 0), (0, 140, 0), (0, 0, 200), (150, 0, 150), (0, 150, 150)]
    for i, (name, (x, y)) in enumerate(pts.items()):
        px = left + (x - x0) / (x1 - x0) * (right - left)
        py = bottom - (y - y0) / (y1 - y0) * (bottom - top)
        poly = np.stack([px, py], 1).astype(np.int32)[np.isfinite(py)]
        colour = colours[i % len(colours)]
        if len(poly) > 1:
            cv2.polylines(img, [poly], False, colour, 1, cv2.LINE_AA)
        elif len(poly):
            cv2.circle(img, tuple(int(v) for v in poly[0]), 3, colour, -1)
        cv2.putText(img, name, (left + 6, top + 16 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    return img


def render_curves(curves: dict) -> np.ndarray:
    train = curves.get("train", [])
    val = curves.get("val", [])
    loss = _panel({"loss": ([e["step"] for e in train], [e["loss"] for e in train])}, "training loss", log_y=True)
    sets = [k for k in (val[0] if val else {}) if isinstance(val[0][k], dict)]
    psnr = _panel({k: ([e["step"] for e in val], [e[k]["psnr"] for e in val]) for k in sets},
                  "validation PSNR-Y (dB)")
    return np.concatenate([loss, psnr], axis=1)


def latest_summary(root: str | os.PathLike = "runs") -> str:
    """One line about ``runs/latest``: its last validation PSNR per set and their mean (the seed's summary)."""
    latest = Path(root) / "latest"
    if not latest.exists():
        raise MambaESRError(f"no runs under {root} yet (no {latest})")
    metrics_path = latest.resolve() / "metrics.json"
    if not metrics_path.is_file():
        return f"{latest.resolve().name}: no metrics yet"
    metrics = json.loads(metrics_path.read_text())
    val = metrics.get("curves", {}).get("val", [])
    if not val:
        return f"{latest.resolve().name}: step {metrics.get('steps')}, no validation yet"
    last = val[-1]
    sets = ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in last.items() if isinstance(v, dict))
    return (f"{latest.resolve().name}: step {last['step']}: {sets}; latest average PSNR {last['mean_psnr']:.2f} dB "
            f"(best {metrics.get('best_val_psnr') or float('nan'):.2f})")
