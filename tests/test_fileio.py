"""fileio's atomic writes: a visible file is always complete, and an exclusive publish never replaces a file."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from mambaesr_runtime import fileio
from mambaesr_runtime.fileio import atomic_write, is_temporary


def _write(text):
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    return write


def test_an_exclusive_publish_loses_to_an_existing_file_and_leaves_it(tmp_path):
    path = tmp_path / "a.png"
    atomic_write(path, _write("first"), suffix=".png", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, _write("second"), suffix=".png", exclusive=True)
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["a.png"]  # no temporary left either
    atomic_write(path, _write("third"), suffix=".png")  # not exclusive: replaces
    assert path.read_text() == "third"


def test_two_writers_racing_for_one_name_publish_once(tmp_path):
    """The second writer's target appears while it writes (the first one published meanwhile)."""
    path = tmp_path / "a.png"

    def racing(tmp):
        _write("loser")(tmp)
        atomic_write(path, _write("winner"), suffix=".png", exclusive=True)

    with pytest.raises(FileExistsError):
        atomic_write(path, racing, suffix=".png", exclusive=True)
    assert path.read_text() == "winner" and os.listdir(tmp_path) == ["a.png"]


def test_without_hard_links_it_falls_back_to_check_then_rename(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "link", no_links)
    path = tmp_path / "a.png"
    atomic_write(path, _write("first"), suffix=".png", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, _write("second"), suffix=".png", exclusive=True)
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["a.png"]


def test_temporaries_are_told_from_other_names(tmp_path):
    fd, tmp = tempfile.mkstemp(prefix=".photo.png.", suffix=".png", dir=tmp_path)  # what atomic_write makes
    os.close(fd)
    name = os.path.basename(tmp)
    assert is_temporary(name) and is_temporary(name, ".png")
    assert not any(is_temporary(n) for n in ("photo.png", ".photo.png", ".hidden", "a.b.c.png", ".a.png.short.png"))
