"""The distributed run on a real local Ray (``ray.init(num_cpus=2)``, no mocks), on real images (crops of the shipped
sample photo in four kinds, a truncated PNG, an existing output, temporaries a killed writer left): every good
output is bit-identical to ``mambaesr-run``'s with the same model and arguments, the results table has exactly one
row per input, a rerun resumes, and a worker killed mid-run (``ray.kill``, at a moment a hook chooses, so no sleep
race) neither loses nor duplicates an output. The ``fast`` tier (tier ``light`` of profile ``cpu``, one 264x264 tile
per image here) keeps each image well under a second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="needs Ray Data, the ray extra: pip install 'mambaesr-runtime[ray]' "
                                        "(Python >= 3.10)")
pytest.importorskip("ray.data", reason="needs Ray Data, the ray extra: pip install 'mambaesr-runtime[ray]'")

import cv2  # after the skip: without Ray nothing here runs
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from mambaesr_runtime.cli.run import main
from mambaesr_runtime.distributed import EARLIER, RESULT_COLUMNS, upscale_dataset
from mambaesr_runtime.fileio import package_dir

# Ray Data's own context warns about its renamed settings whenever it is copied to a worker: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

ROOT = Path(__file__).resolve().parents[2]
#: The same model and arguments for the CLI and Ray runs: the fast model, one ONNX Runtime thread per process.
ARGS = ["--tier", "light", "--threads", "1", "-q"]
UPSCALER = {"tier": "light", "threads": 1}
GOOD = ["crop.jpg", "gray16.png", "keep.png", "photo.png", "rgba.png"]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module (starting one costs seconds). The workers import this checkout's package and,
    by value, this module's hooks and actors (a test module is not importable on a worker)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if saved is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = saved


def _photo() -> np.ndarray:
    return cv2.imread(str(package_dir("mambaesr_runtime") / "data" / "sample.png"), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Five good images of four kinds (an EXIF-rotated JPEG, 16-bit gray, RGBA, RGB), a truncated PNG, and what
    must not be taken as an input: a temporary a killed writer left, a text file."""
    folder = tmp_path_factory.mktemp("in")
    photo = _photo()
    cv2.imwrite(str(folder / "photo.png"), photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees; the output comes out upright, its EXIF orientation 1
    exif[0x010F] = "MambaESR test camera"
    Image.fromarray(photo[8:88, 16:112, ::-1].copy()).save(folder / "crop.jpg", quality=90, exif=exif)
    gray = cv2.cvtColor(photo[:48, :64], cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    cv2.imwrite(str(folder / "gray16.png"), gray)
    alpha = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([photo[32:96, 32:96], alpha]))
    cv2.imwrite(str(folder / "keep.png"), photo[64:, :64])
    data = (folder / "photo.png").read_bytes()
    (folder / "corrupt.png").write_bytes(data[:len(data) // 2])
    (folder / ".photo.png.k1ll3d00.png").write_bytes(data[:100])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """What ``mambaesr-run`` writes for the folder, same model and arguments (it fails the corrupt file, exit 1)."""
    out = tmp_path_factory.mktemp("reference")
    assert main([str(inputs), "-o", str(out), *ARGS]) == 1
    return out


def _prepared_dst(tmp_path: Path) -> Path:
    """An output folder holding a complete output from before (keep.png: other pixels, so a rewrite would show)
    and a temporary a killed writer left beside photo.png's output-to-be."""
    dst = tmp_path / "out"
    dst.mkdir()
    cv2.imwrite(str(dst / "keep.png"), np.full((8, 8, 3), 7, np.uint8))
    (dst / ".photo.png.d34dbeef.png").write_bytes(b"\x89PNG half")
    return dst


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("mambaesr-results-")}


def _rows(results: str) -> list[dict]:
    return [json.loads(line) for line in Path(results).read_text().splitlines()]


def test_a_folder_on_ray_is_bit_identical_to_mambaesr_run(cluster, inputs, reference, tmp_path, capsys):
    dst = _prepared_dst(tmp_path)
    kept = (dst / "keep.png").read_bytes()
    code = main([str(inputs), "-o", str(dst), *ARGS, "--ray", "--ray-workers", "2", "--json"])
    report = json.loads(capsys.readouterr().out)  # stdout holds the JSON document only
    assert code == 1 and report["exit_code"] == 1  # the corrupt file failed, the rest was written
    written = _outputs(dst)
    assert sorted(written) == GOOD  # no temporary left, nothing for the corrupt file, notes.txt or the hidden file
    for name in GOOD:
        if name != "keep.png":
            assert written[name] == (reference / name).read_bytes(), f"{name} differs from mambaesr-run's output"
    assert written["keep.png"] == kept  # the existing complete output was skipped, not rewritten
    rows = _rows(report["ray"]["results"])
    assert sorted(r["input"] for r in rows) == sorted(str(inputs / n) for n in GOOD + ["corrupt.png"])
    by_name = {Path(r["input"]).name: r for r in rows}
    assert by_name["keep.png"]["status"] == "skipped" and "complete output" in by_name["keep.png"]["error"]
    assert by_name["corrupt.png"]["status"] == "failed"
    assert "corrupt.png: the PNG is truncated" in by_name["corrupt.png"]["error"] or \
        "corrupt.png: not a readable image" in by_name["corrupt.png"]["error"]
    for name in ("crop.jpg", "gray16.png", "photo.png", "rgba.png"):
        row = by_name[name]
        assert row["status"] == "done" and row["output"] == str(dst / name) and row["seconds"] > 0
        assert "fast_x4_t264_b1.onnx" in row["engine"] and row["error"] is None and row["worker"]
    assert set(rows[0]) == set(RESULT_COLUMNS)
    assert pq.read_table(report["ray"]["results_parquet"]).to_pylist() == rows  # the same table, as Parquet
    assert (report["done"], report["skipped"], report["failed"]) == (4, 1, 1)
    assert report["engine"]["variant"] == "fast" and report["ray"]["workers"] == [2, 2]
    assert {Path(i["input"]).name for i in report["inputs"]} == set(GOOD) | {"corrupt.png"}


def test_a_rerun_skips_complete_outputs_and_redoes_missing_and_incomplete_ones(cluster, inputs, reference,
                                                                              tmp_path):
    dst = tmp_path / "out"
    shutil.copytree(reference, dst)
    (dst / "photo.png").unlink()  # never written (the run was stopped)
    whole = (dst / "rgba.png").read_bytes()
    (dst / "rgba.png").write_bytes(whole[:len(whole) // 3])  # cut short by something that does not write atomically
    (dst / ".photo.png.ab12cd34.png").write_bytes(b"half")
    before = {n: os.stat(dst / n).st_mtime_ns for n in ("crop.jpg", "gray16.png", "keep.png")}
    run = upscale_dataset(inputs, dst, upscaler=UPSCALER, workers=1)
    assert (run.done, run.skipped, run.failed) == (2, 3, 1)
    assert _outputs(dst) == _outputs(reference)
    assert {n: os.stat(dst / n).st_mtime_ns for n in before} == before  # complete outputs untouched
    rows = {Path(r["input"]).name: r for r in run.rows()}
    assert rows["rgba.png"]["status"] == "done" and "incomplete output was replaced" in rows["rgba.png"]["note"]
    assert rows["photo.png"]["status"] == "done" and rows["keep.png"]["status"] == "skipped"


class Gate:
    """The test's side of the hook: records every stage a worker reports and holds the worker at one chosen
    moment (the ``n``-th report of ``stage``), once, until the test has killed it."""

    def __init__(self, stage: str, n: int):
        self.stage, self.n, self.seen, self.events, self.held = stage, n, 0, [], None

    def arrive(self, actor, stage: str, source: str) -> bool:
        self.events.append((stage, Path(source).name))
        if stage == self.stage and self.held is None:
            self.seen += 1
            if self.seen == self.n:
                self.held = (actor, source)
                return True
        return False

    def holding(self):
        return self.held

    def log(self):
        return self.events


def _gated_hook(gate):
    def hook(stage, source):
        if ray.get(gate.arrive.remote(ray.get_runtime_context().current_actor, stage, source)):
            time.sleep(600)  # held here until killed: the kill lands at this moment, never by a race
    return hook


def _kill_when_held(gate, no_restart: bool, dst: Path, seen: dict) -> threading.Thread:
    def kill():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            held = ray.get(gate.holding.remote())
            if held is not None:
                actor, source = held
                output = dst / Path(source).name
                seen["source"], seen["stat"] = source, os.stat(output) if output.exists() else None
                seen["before"] = ray.get(gate.log.remote())
                ray.kill(actor, no_restart=no_restart)
                return
            time.sleep(0.05)
    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stage, no_restart", [
    ("start", True),        # killed for good before its 3rd image: the run fails, the driver runs the rest again
    ("published", False),   # killed after publishing its 2nd output, before the row: Ray restarts it, retries
])
def test_a_worker_killed_mid_run_loses_and_duplicates_no_output(cluster, inputs, reference, tmp_path, stage,
                                                                no_restart):
    dst = _prepared_dst(tmp_path)
    kept = (dst / "keep.png").read_bytes()
    gate = ray.remote(num_cpus=0)(Gate).remote(stage, 3 if stage == "start" else 2)
    seen: dict = {}
    killer = _kill_when_held(gate, no_restart, dst, seen)
    run = upscale_dataset(inputs, dst, upscaler=UPSCALER, workers=1, on_image=_gated_hook(gate))
    killer.join(5)
    events = ray.get(gate.log.remote())
    held = Path(seen["source"]).name
    published_before = sum(1 for s, _ in seen["before"] if s == "published")
    assert published_before >= 1 and sum(1 for s, _ in events if s == "published") > published_before  # mid-run
    assert [s for s, n in events if n == held].count("start") == 2  # the killed image ran again
    written = _outputs(dst)
    assert sorted(written) == GOOD and written["keep.png"] == kept
    for name in ("crop.jpg", "gray16.png", "photo.png", "rgba.png"):
        assert written[name] == (reference / name).read_bytes()
    rows = list(run.rows())
    assert len(rows) == len({r["input"] for r in rows}) == 6 and run.duplicates == 0  # one final row per input
    assert (run.done, run.skipped, run.failed) == (4, 1, 1)
    row = next(r for r in rows if r["input"] == seen["source"])
    if stage == "start":
        assert run.attempts == 2 and run.error  # Ray's words for the failure (2.60: "killed by `ray.kill`")
        assert seen["stat"] is None and row["note"] is None  # it had not been written: the second run wrote it
    else:
        assert run.attempts == 1 and run.error is None  # Ray itself retried the task on the restarted actor
        after = os.stat(dst / held)
        assert (after.st_ino, after.st_mtime_ns) == (seen["stat"].st_ino, seen["stat"].st_mtime_ns)  # once
        assert row["status"] == "done" and row["note"] == EARLIER


def _crashing_hook(name: str):
    def hook(stage, source):
        if stage == "start" and Path(source).name == name:
            os._exit(1)  # the worker process dies, as a segfault in a decoder would kill it
    return hook


def test_an_image_that_kills_its_worker_every_time_fails_alone(cluster, inputs, reference, tmp_path):
    dst = tmp_path / "out"
    run = upscale_dataset(inputs, dst, upscaler=UPSCALER, workers=1, max_starts=2,
                          on_image=_crashing_hook("gray16.png"))
    rows = {Path(r["input"]).name: r for r in run.rows()}
    assert rows["gray16.png"]["status"] == "failed" and "worker died each of the 2 times" in \
        rows["gray16.png"]["error"]
    assert (run.done, run.failed, run.attempts) == (4, 2, 1)
    assert sorted(_outputs(dst)) == ["crop.jpg", "keep.png", "photo.png", "rgba.png"]


def test_a_pyarrow_filesystem_takes_the_same_path(cluster, inputs, reference, tmp_path):
    """The write path for URIs and filesystem objects (_ArrowStore: listing, reads through Ray, temporary + move,
    tables), run for real on a pyarrow SubTreeFileSystem over local disk. S3/GCS themselves are not tested here."""
    import pyarrow.fs as pafs

    shutil.copytree(inputs, tmp_path / "in")
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    run = upscale_dataset("in", "out", upscaler=UPSCALER, workers=1, filesystem=fs)
    assert (run.done, run.failed) == (5, 1)
    assert _outputs(tmp_path / "out") == _outputs(reference)
    assert run.results.startswith("out/mambaesr-results-") and len(list(run.rows())) == 6
    uri = upscale_dataset(f"file://{tmp_path / 'in'}", f"file://{tmp_path / 'out'}", upscaler=UPSCALER, workers=1)
    assert (uri.skipped, uri.failed, uri.done) == (5, 1, 0)  # file:// is the local store: everything is there


def test_pipes_link_loops_and_colliding_names_are_rows_not_hangs(cluster, tmp_path):
    """A FIFO would block a reader forever and a loop of links cannot be read: the driver names them from the
    listing (the CLI's words); two inputs whose outputs share a name (a.jpg, a.png with --format png): one fails."""
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _photo()[:40, :40])
    cv2.imwrite(str(src / "a.jpg"), _photo()[40:80, :40])
    os.mkfifo(src / "pipe.png")
    (src / "loop.png").symlink_to(src / "loop2.png")
    (src / "loop2.png").symlink_to(src / "loop.png")
    run = upscale_dataset(src, tmp_path / "out", upscaler=UPSCALER, workers=1, fmt=".png")
    rows = {Path(r["input"]).name: r for r in run.rows()}
    assert "pipe.png: not a regular file (a device, pipe or socket)" in rows["pipe.png"]["error"]
    assert "loop.png: a loop of symbolic links" in rows["loop.png"]["error"]
    assert "loop2.png: a loop of symbolic links" in rows["loop2.png"]["error"]
    assert [rows[n]["status"] for n in ("a.jpg", "a.png")] == ["done", "failed"]  # listed in name order
    assert "its output" in rows["a.png"]["error"] and "is also the output of" in rows["a.png"]["error"]
    assert (run.done, run.failed) == (1, 4) and sorted(_outputs(tmp_path / "out")) == ["a.png"]


@pytest.mark.parametrize("case, message", [
    ("same", "is SRC itself"),
    ("missing", "no such folder"),
    ("file", "is a file: --ray takes a folder"),
    ("empty", "holds no images"),
])
def test_bad_folders_are_refused_before_any_work(cluster, inputs, tmp_path, capsys, case, message):
    src = {"same": inputs, "missing": tmp_path / "nope", "file": inputs / "photo.png", "empty": tmp_path}[case]
    dst = inputs if case == "same" else tmp_path / "out"
    before = sorted(os.listdir(inputs))
    assert main([str(src), "-o", str(dst), *ARGS, "--ray"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(inputs)) == before and not (tmp_path / "out").exists()


def test_an_unreachable_cluster_is_named_with_the_fix(inputs, tmp_path):
    """In a fresh process (this one has joined the test's Ray): a TCP check first, since ray.init on a dead
    address retries for minutes."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mambaesr_runtime.cli.run", str(inputs), "-o",
                             str(tmp_path / "out"), "--ray", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, check=False,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.stderr and "ray start --head" in result.stderr
    assert time.monotonic() - start < 60 and not (tmp_path / "out").exists()

