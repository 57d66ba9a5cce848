"""Training packs and the GPU training command, on synthetic images (no ../shared needed): lossless, within budget,
verified before use; scripts/gpu_train.sh runs end to end on the CPU with a tiny budget so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from mambaesr_runtime.training.data import DataError, read_rgb
from mambaesr_runtime.training.pack import grid_cells, make_pack, verify_if_pack, verify_pack

ROOT = Path(__file__).resolve().parents[2]


def _photo(rng, h, w):
    """A smooth random colour image with some edges: compresses like a photo, not like noise."""
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 3) * 255
    img[h // 3:h // 2] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for folder, sizes in {"A": [(300, 420), (200, 200)], "B": [(180, 260), (40, 50)]}.items():
        (root / "train" / folder).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            cv2.imwrite(str(root / "train" / folder / f"{i}.png"), _photo(rng, h, w))
    (root / "Set5" / "HR").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "Set5" / "HR" / f"v{i}.png"), _photo(rng, 64, 48))
    return root


@pytest.fixture(scope="module")
def pack(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("packs") / "pack"
    make_pack([data / "train" / "A", data / "train" / "B"], [data / "Set5"], out, budget_mib=0.5, tile=96,
              min_tile=64)
    return out


def test_grid_cells_are_even_multiples_of_the_scale_and_never_too_small():
    assert grid_cells(100, 50, 96, 64, 4) == [(0, 0, 100, 0)][:0]  # 50 < 64: nothing fits
    cells = grid_cells(300, 420, 96, 64, 4)
    assert {(h, w) for _, _, h, w in cells} == {(100, 104)} and len(cells) == 3 * 4
    assert all(h % 4 == 0 and w % 4 == 0 and h >= 64 and w >= 64 for _, _, h, w in cells)


def test_pack_is_lossless_within_budget_and_says_what_it_left_out(pack, data):
    manifest = verify_pack(pack)
    assert manifest["bytes"] <= 0.5 * 2**20
    assert sum(f.stat().st_size for f in pack.rglob("*") if f.is_file() and f.name != "pack.json") == \
        manifest["bytes"]
    assert manifest["left_out"]["B"]["images_too_small"] == 1  # the 40 x 50 image
    for tile in manifest["tiles"][:5]:
        src = read_rgb(data / "train" / tile["folder"] / tile["source"])
        crop = src[tile["y"]:tile["y"] + tile["h"], tile["x"]:tile["x"] + tile["w"]]
        assert np.array_equal(read_rgb(pack / tile["file"]), crop)
    textures = [t["texture"] for t in manifest["tiles"]]
    assert textures == sorted(textures, reverse=True)  # most textured first
    assert len(list((pack / "lr_cache").iterdir())) == len(manifest["tiles"])  # every tile's LR, made once
    assert sorted(p.name for p in (pack / "val" / "Set5" / "HR").iterdir()) == ["v0.webp", "v1.webp"]


def test_a_damaged_or_changed_pack_is_refused_before_use(pack, tmp_path):
    import shutil

    bad = tmp_path / "pack"
    shutil.copytree(pack, bad)
    victim = next((bad / "train").rglob("*.webp"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="does not match its sha256"):
        verify_if_pack(bad / "train")
    victim.unlink()
    with pytest.raises(DataError, match="incomplete"):
        verify_pack(bad)


@pytest.mark.usefixtures("needs_torch")
def test_gpu_training_command_runs_on_the_cpu_within_its_budget(pack, tmp_path):
    """The GPU command end to end on the CPU: verifies the pack, sizes the schedule to its budget, stops by itself
    and leaves a tarball per run with the best checkpoint, metrics and curves."""
    out = tmp_path / "out"
    env = {**os.environ, "VARIANTS": "student", "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), str(pack), str(out), "45s",
                           "--variant", "tiny", "--batch", "2", "--patch", "16", "--eval-every", "25",
                           "--device", "cpu", "--warmup", "10"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [bundle] = list(out.glob("student_*.tar.gz"))
    with tarfile.open(bundle) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"model_best.safetensors", "model_best.json", "metrics.json", "curves.png", "train.log",
            "train_state.safetensors"} <= names
    [run] = list((out / "runs").glob("student_*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] > 45 and metrics["stopped"] in ("finished", "time budget")
    assert "steps fit in the time budget" in (run / "train.log").read_text()
    assert "done in" in proc.stdout
