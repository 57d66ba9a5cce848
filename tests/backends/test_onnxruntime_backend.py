"""The ONNX Runtime backend refuses what is not the engine it claims to be: a file whose manifest records another
sha256 (checked once per file version, cached by size and mtime), graphs of the wrong rank or scale, absurd thread
counts."""

from __future__ import annotations

import os
import shutil

import pytest

import hostile
from mambaesr_runtime.artifacts.manifest import read_manifest
from mambaesr_runtime.artifacts.names import shipped_dir
from mambaesr_runtime.backends import base
from mambaesr_runtime.backends.onnxruntime import OrtBackend
from mambaesr_runtime.errors import BackendError, ConfigError
from mambaesr_runtime.fileio import sha256_file
from mambaesr_runtime.runtime.upscaler import Upscaler


@pytest.fixture()
def weights(tmp_path):
    """A copy of the shipped weights folder: the student's ONNX name now holds the fast model's graph."""
    folder = tmp_path / "weights"
    shutil.copytree(shipped_dir(), folder)
    return folder


def test_a_swapped_engine_under_a_shipped_name_is_refused(weights):
    """Before: the fast graph under the student's name ran, described as the student (the manifest's variant)."""
    student = weights / "student_x4_t264_b1.onnx"
    recorded = read_manifest(student).artifact_sha256
    shutil.copyfile(weights / "fast_x4_t264_b1.onnx", student)
    actual = sha256_file(student)
    with pytest.raises(BackendError, match=f"student_x4_t264_b1.onnx: its sha256 {actual[:16]}... is not the "
                                           f"{recorded[:16]}... recorded in student_x4_t264_b1.onnx.manifest.json"):
        OrtBackend(student, 1)
    with pytest.raises(BackendError, match="was replaced or damaged"):
        Upscaler(model=student)


def test_the_hash_is_computed_once_per_file_version(weights, monkeypatch):
    calls = []
    real = base.sha256_file
    monkeypatch.setattr(base, "sha256_file", lambda p: calls.append(p) or real(p))
    fast = weights / "fast_x4_t264_b1.onnx"
    for _ in range(3):
        OrtBackend(fast, 1).close()
    assert len(calls) == 1  # re-opening (a tier switch, a new Upscaler) costs a stat, not a hash
    data = bytearray(fast.read_bytes())
    data[-1] ^= 1  # same size; the modification time moves on
    fast.write_bytes(bytes(data))
    st = os.stat(fast)
    os.utime(fast, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(BackendError, match="was replaced or damaged"):
        OrtBackend(fast, 1)
    assert len(calls) == 2


@pytest.mark.parametrize("kind, words", [("two_d", "maps \\[4, 16\\] to \\[4, 16\\]; a MambaESR engine maps"),
                                         ("shrink", "maps 16x16 tiles to 8x8, not an integer upscale")])
def test_graphs_that_are_not_engines_are_refused_on_open(tmp_path, kind, words):
    with pytest.raises(BackendError, match=words):
        OrtBackend(hostile.onnx_graph(tmp_path / f"{kind}.onnx", kind), 1)


@pytest.mark.parametrize("threads", [-1, 100000, 2.5, True])
def test_absurd_thread_counts_are_refused_before_onnx_runtime_sees_them(tmp_path, threads):
    with pytest.raises(ConfigError, match="threads must be an integer from 0"):
        OrtBackend(shipped_dir() / "fast_x4_t264_b1.onnx", threads)
