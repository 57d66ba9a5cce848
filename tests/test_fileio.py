"""fileio: temporaries that fit the file system's name limit, and publishing that never replaces a file it did not
expect (the check-then-rename race: a file created at the destination while the work ran, two runs writing the
same output), with ``overwrite`` still replacing atomically, on file systems with and without hard links."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path

import pytest

from mambaesr_runtime import fileio


def write_text(text: str):
    return lambda tmp: Path(tmp).write_text(text)


def test_without_overwrite_a_file_created_during_the_write_is_kept(tmp_path):
    """Before: atomic_write renamed over whatever had appeared at the destination meanwhile."""
    dst = tmp_path / "out.txt"

    def write(tmp):
        Path(tmp).write_text("mine")
        dst.write_text("theirs")  # another program creates the output while this one is still writing

    with pytest.raises(FileExistsError):
        fileio.atomic_write(dst, write, overwrite=False)
    assert dst.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary left


def test_of_two_writers_to_the_same_output_exactly_one_wins(tmp_path):
    """Both pass any check made before the work (the output does not exist yet), both publish at once."""
    dst = tmp_path / "out.txt"
    barrier = threading.Barrier(2)
    outcomes = []

    def writer(name):
        def write(tmp):
            Path(tmp).write_text(name)
            barrier.wait()  # both temporaries complete before either publishes
        try:
            fileio.atomic_write(dst, write, overwrite=False)
            outcomes.append(("won", name))
        except FileExistsError:
            outcomes.append(("lost", name))

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o for o, _ in outcomes) == ["lost", "won"]
    assert dst.read_text() == next(n for o, n in outcomes if o == "won")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_overwrite_replaces_and_the_default_still_does(tmp_path):
    dst = tmp_path / "out.txt"
    dst.write_text("old")
    fileio.atomic_write(dst, write_text("new"), overwrite=True)
    assert dst.read_text() == "new"
    fileio.atomic_write(dst, write_text("newer"))  # JSON records, manifests: replacing is what they want
    assert dst.read_text() == "newer"
    with pytest.raises(FileExistsError):
        fileio.atomic_write(dst, write_text("no"), overwrite=False)
    assert dst.read_text() == "newer"


def test_a_dangling_link_at_the_destination_is_not_replaced(tmp_path):
    dst = tmp_path / "out.txt"
    dst.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        fileio.atomic_write(dst, write_text("x"), overwrite=False)
    assert dst.is_symlink() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("fallback", ["renameat2", "exclusive reservation"])
def test_without_hard_links_publishing_stays_exclusive(tmp_path, monkeypatch, fallback):
    """FAT, exFAT and some FUSE mounts refuse link(); the fallbacks must refuse an existing target just the same."""
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "link", no_links)
    calls = []
    real = fileio._rename_noreplace
    if fallback == "exclusive reservation":
        monkeypatch.setattr(fileio, "_rename_noreplace", lambda tmp, path: calls.append(False) or False)
    elif sys.platform != "linux":
        pytest.skip("renameat2 is Linux's")
    else:
        monkeypatch.setattr(fileio, "_rename_noreplace", lambda tmp, path: calls.append(real(tmp, path)) or calls[-1])
    dst = tmp_path / "out.txt"
    fileio.atomic_write(dst, write_text("first"), overwrite=False)
    assert dst.read_text() == "first"
    assert calls == [fallback == "renameat2"]  # the fallback under test is the one that published
    with pytest.raises(FileExistsError):
        fileio.atomic_write(dst, write_text("second"), overwrite=False)
    assert dst.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_renameat2_refuses_an_existing_target(tmp_path):
    if sys.platform != "linux":
        pytest.skip("renameat2 is Linux's")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        fileio._rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert fileio._rename_noreplace(str(tmp_path / "a"), str(tmp_path / "c")) in (True, False)
    assert (tmp_path / "b").read_text() == "b"


def test_a_long_valid_name_gets_a_temporary_that_fits(tmp_path):
    """Before: a 243-byte output name made '.<name>.<8 random>.png', 257 bytes: ENAMETOOLONG after the whole
    upscale."""
    limit = fileio.name_max(tmp_path)
    name = "é" * ((limit - 4) // 2) + ".png"  # multi-byte characters: the limit is in bytes, and never cut inside one
    assert len(os.fsencode(name)) <= limit
    assert fileio.name_too_long(tmp_path / name) is None
    seen = set()
    for _ in range(3):
        tmp = fileio.temporary_beside(tmp_path / name, ".png")
        assert len(os.fsencode(Path(tmp).name)) <= limit and Path(tmp).name.startswith(".é")
        assert tmp.endswith(".png") and tmp not in seen
        seen.add(tmp)
        os.unlink(tmp)
    fileio.atomic_write(tmp_path / name, write_text("x"), suffix=".png", overwrite=False)
    assert (tmp_path / name).read_text() == "x"


def test_a_name_that_can_never_be_created_is_named_up_front(tmp_path):
    name = "x" * (fileio.name_max(tmp_path) + 1) + ".png"
    problem = fileio.name_too_long(tmp_path / name)
    assert problem is not None and f"{len(name)} bytes long" in problem and "choose a shorter name" in problem


def test_temporaries_are_told_from_other_names(tmp_path):
    """A killed writer's temporary is never an input nor a finished output (the folder and Ray runs skip them),
    including one whose name part was shortened to fit NAME_MAX."""
    from mambaesr_runtime.fileio import is_temporary, temporary_beside

    for target in (tmp_path / "photo.png", tmp_path / ("p" * 250 + ".png")):
        name = os.path.basename(temporary_beside(target, ".png"))
        assert is_temporary(name) and is_temporary(name, ".png"), name
    assert not any(is_temporary(n) for n in ("photo.png", ".photo.png", ".hidden", "a.b.c.png", ".a.png.short.png"))
