"""The dataset downloader against a local HTTP server on 127.0.0.1 (no outside network): layout, checksums,
resume with HTTP Range, refusal of bad or unpinned files."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from mambaesr_runtime.evaluation.datasets import DownloadError, default_sources, download_sets, fetch
from mambaesr_runtime.imaging.imresize import imresize

ROOT = Path(__file__).resolve().parents[2]


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``files`` from memory, honouring ``Range: bytes=N-``; records every request."""

    def __init__(self, *args, files=None, log=None, **kw):
        self.files, self.log = files, log
        super().__init__(*args, **kw)

    def do_GET(self):
        body = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body) and rng:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


def _png(seed, shape=(16, 20, 3)):
    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture()
def server():
    pngs = {f"img{i}.png": _png(i) for i in range(3)}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/a.png", pngs["img0.png"])
        zf.writestr("set/b.png", pngs["img1.png"])
        zf.writestr("README.txt", "not extracted")
    files = {"/pack.zip": archive.getvalue(), "/single.png": pngs["img2.png"]}
    log = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, files=files, log=log))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    sha = lambda b: hashlib.sha256(b).hexdigest()
    sources = {"sets": {"Tiny": {
        "archives": [{"url": f"{base}/pack.zip", "sha256": sha(files["/pack.zip"]),
                      "members": {"set/a.png": "HR/a.png", "set/b.png": "HR/b.png"}}],
        "files": [{"url": f"{base}/single.png", "sha256": sha(files["/single.png"]), "dest": "HR/c.png"}]}}}
    yield base, files, log, sources
    httpd.shutdown()


def test_downloads_verifies_and_lays_out_hr_and_lr(server, tmp_path):
    base, files, log, sources = server
    assert download_sets(["Tiny"], tmp_path, sources) == {"Tiny": 3}
    root = tmp_path / "Tiny"
    assert sorted(p.name for p in (root / "HR").iterdir()) == ["a.png", "b.png", "c.png"]
    for name in ("a", "b", "c"):
        hr = cv2.imread(str(root / "HR" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        lr = cv2.imread(str(root / "LR_bicubic" / "X4" / f"{name}x4.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(lr, imresize(hr, 0.25))
    # a second run finds every file verified and makes no request
    before = len(log)
    download_sets(["Tiny"], tmp_path, sources)
    assert len(log) == before


def test_resumes_a_partial_download_with_a_range_request(server, tmp_path):
    base, files, log, sources = server
    body = files["/pack.zip"]
    dest = tmp_path / "pack.zip"
    (tmp_path / "pack.zip.part").write_bytes(body[:100])
    fetch(f"{base}/pack.zip", dest, hashlib.sha256(body).hexdigest())
    assert log[-1] == ("/pack.zip", "bytes=100-")
    assert dest.read_bytes() == body and not (tmp_path / "pack.zip.part").exists()


def test_checksum_mismatch_removes_the_part_and_keeps_no_file(server, tmp_path):
    base, *_ = server
    with pytest.raises(DownloadError, match="does not match the pinned"):
        fetch(f"{base}/single.png", tmp_path / "c.png", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_unpinned_files_are_refused_unless_allowed(server, tmp_path):
    base, files, log, _ = server
    with pytest.raises(DownloadError, match="no pinned sha256"):
        fetch(f"{base}/single.png", tmp_path / "c.png", None)
    assert not log
    got = fetch(f"{base}/single.png", tmp_path / "c.png", None, allow_unverified=True)
    assert got == hashlib.sha256(files["/single.png"]).hexdigest()


def test_missing_file_and_unknown_set_are_clear_errors(server, tmp_path):
    base, _, _, sources = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{base}/nope.png", tmp_path / "x.png", "0" * 64)
    with pytest.raises(DownloadError, match="unknown sets"):
        download_sets(["Urban200"], tmp_path, sources)


def test_builtin_sources_pin_the_team_copies(shared_data):
    """Every pinned HR checksum is the sha256 of our verified copy of that file (same bytes, same names)."""
    sources = default_sources()["sets"]
    for name, count in (("Set5", 5), ("Set14", 14), ("B100", 100)):
        files = sources[name]["files"]
        assert len(files) == count
        for entry in files:
            local = shared_data / "benchmarks" / name / entry["dest"]
            assert hashlib.sha256(local.read_bytes()).hexdigest() == entry["sha256"], local


def test_script_entry_point(server, tmp_path):
    base, _, _, sources = server
    src = tmp_path / "sources.json"
    import json
    src.write_text(json.dumps(sources))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_datasets.py"), "Tiny", "--dest",
                           str(tmp_path / "data"), "--sources", str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Tiny: 3 HR images" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_datasets.py"), "Nope", "--dest",
                          str(tmp_path / "data"), "--sources", str(src)], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown sets" in bad.stderr
