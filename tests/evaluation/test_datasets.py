"""The dataset downloader against a local HTTP server on 127.0.0.1 (no outside network): layout, checksums,
resume with HTTP Range, refusal of bad or unpinned files."""

from __future__ import annotations

import hashlib
import io
import json
import os
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
    """Serves ``files`` from memory, honouring ``Range: bytes=N-``; records every request. A path in ``cut`` (path ->
    bytes) gets its full Content-Length announced but only that many bytes sent before the connection drops."""

    def __init__(self, *args, files=None, log=None, cut=None, **kw):
        self.files, self.log, self.cut = files, log, cut if cut is not None else {}
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
        self.wfile.write(body[start:start + self.cut.pop(self.path, len(body))])

    def log_message(self, *args):
        pass


CUT: dict = {}  # path -> bytes to send before dropping the connection (consumed by the next request for it)


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
    CUT.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, files=files, log=log, cut=CUT))
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
    _base, _files, log, sources = server
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
    base, files, log, _sources = server
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
    _base, _, _, sources = server
    src = tmp_path / "sources.json"
    src.write_text(json.dumps(sources))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_datasets.py"), "Tiny", "--dest",
                           str(tmp_path / "data"), "--sources", str(src)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Tiny: 3 HR images" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_datasets.py"), "Nope", "--dest",
                          str(tmp_path / "data"), "--sources", str(src)], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown sets" in bad.stderr


# -- hostile sources and planted paths (issue 14) ----------------------------------------------------------------

def test_a_planted_part_link_is_refused_and_its_target_untouched(server, tmp_path):
    """Before: the download was appended to whatever a pre-existing <dest>.part link pointed at."""
    base, files, _, _ = server
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "c.png.part").symlink_to(victim)
    with pytest.raises(DownloadError, match="c.png.part is not a plain file"):
        fetch(f"{base}/single.png", tmp_path / "c.png", hashlib.sha256(files["/single.png"]).hexdigest())
    assert victim.read_text() == "precious\n" and not (tmp_path / "c.png").exists()
    (tmp_path / "c.png.part").unlink()
    os.link(victim, tmp_path / "c.png.part")  # a hard link is as good as a symbolic one to an attacker
    with pytest.raises(DownloadError, match="hard link to another file"):
        fetch(f"{base}/single.png", tmp_path / "c.png", hashlib.sha256(files["/single.png"]).hexdigest())
    assert victim.read_text() == "precious\n"


def test_planted_tmp_links_beside_members_are_never_followed(server, tmp_path):
    """Before: extraction wrote <member>.tmp, so a link planted under that name had its target overwritten."""
    _base, files, _, sources = server
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    hr = tmp_path / "data" / "Tiny" / "HR"
    hr.mkdir(parents=True)
    (hr / "a.png.tmp").symlink_to(victim)
    assert download_sets(["Tiny"], tmp_path / "data", sources) == {"Tiny": 3}
    assert victim.read_text() == "precious\n"
    assert (hr / "a.png").read_bytes() == zipfile.ZipFile(io.BytesIO(files["/pack.zip"])).read("set/a.png")


@pytest.mark.parametrize("where, value", [
    ("file", "../../escaped.png"), ("file", "/tmp/escaped-abs.png"), ("member", "../escaped.png"),
    ("member", "HR/../../escaped.png"), ("set", "../escaped"), ("archive", "/pack.zip/..")])
def test_sources_cannot_write_outside_dest(server, tmp_path, where, value):
    """Before: a sources file whose dest or member names held ../ or an absolute path wrote outside --dest (exit 0)."""
    base, _files, _log, sources = server
    spec = json.loads(json.dumps(sources))
    tiny = spec["sets"]["Tiny"]
    if where == "file":
        tiny["files"][0]["dest"] = value
    elif where == "member":
        tiny["archives"][0]["members"]["set/a.png"] = value
    elif where == "set":
        spec["sets"] = {value: tiny}
    else:
        tiny["archives"][0]["url"] = base + value
    dest = tmp_path / "a" / "b" / "data"
    with pytest.raises(DownloadError, match="leaves the destination folder|does not end in a file name"):
        download_sets([value if where == "set" else "Tiny"], dest, spec)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents]
    assert outside == [] and not Path("/tmp/escaped-abs.png").exists()


def test_a_link_inside_dest_cannot_lead_outside(server, tmp_path):
    _base, _, _, sources = server
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data" / "Tiny").mkdir(parents=True)
    (tmp_path / "data" / "Tiny" / "HR").symlink_to(elsewhere)
    with pytest.raises(DownloadError, match="outside .*data \\(a link in the way\\)"):
        download_sets(["Tiny"], tmp_path / "data", sources)
    assert list(elsewhere.iterdir()) == []


def test_a_truncated_unverified_transfer_never_becomes_the_file(server, tmp_path):
    """Before: with --allow-unverified, a transfer cut short became the final file (Content-Length never checked)."""
    base, files, log, _ = server
    body = files["/single.png"]
    CUT["/single.png"] = 100
    with pytest.raises(DownloadError, match=f"ended at byte 100 of the {len(body)} the server announced; run again "
                                            f"to resume"):
        fetch(f"{base}/single.png", tmp_path / "c.png", None, allow_unverified=True)
    assert not (tmp_path / "c.png").exists() and (tmp_path / "c.png.part").stat().st_size == 100
    fetch(f"{base}/single.png", tmp_path / "c.png", None, allow_unverified=True)
    assert (tmp_path / "c.png").read_bytes() == body and log[-1] == ("/single.png", "bytes=100-")


def test_a_dropped_connection_on_a_pinned_file_keeps_the_part_and_resumes(server, tmp_path):
    """Before: the short part failed its checksum and was deleted, so resuming never happened."""
    base, files, log, _ = server
    body = files["/pack.zip"]
    CUT["/pack.zip"] = 150
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(f"{base}/pack.zip", tmp_path / "pack.zip", hashlib.sha256(body).hexdigest())
    assert (tmp_path / "pack.zip.part").read_bytes() == body[:150]
    CUT["/pack.zip"] = 100  # dropped again, mid-resume
    with pytest.raises(DownloadError, match=f"ended at byte 250 of the {len(body)}"):
        fetch(f"{base}/pack.zip", tmp_path / "pack.zip", hashlib.sha256(body).hexdigest())
    fetch(f"{base}/pack.zip", tmp_path / "pack.zip", hashlib.sha256(body).hexdigest())
    assert (tmp_path / "pack.zip").read_bytes() == body
    assert [r for p, r in log if p == "/pack.zip"] == [None, "bytes=150-", "bytes=250-"]
    assert not (tmp_path / "pack.zip.part").exists()
