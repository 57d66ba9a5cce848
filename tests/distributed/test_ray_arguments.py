"""``mambaesr-run --ray`` and ``upscale_dataset`` refuse what cannot work before Ray is imported or anything is read:
these run everywhere, with or without the ray extra (its absence is simulated where it is installed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mambaesr_runtime.cli.run import main
from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.runtime.imageio import write_image


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", np.full((8, 8, 3), 50, np.uint8))
    return src


def test_without_the_extra_the_message_names_the_install(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    if sys.version_info < (3, 10):  # no Ray release installs there: the message says which Python, not the extra
        assert "need Python >= 3.10; this is Python 3." in err and "Python 3.10+ environment" in err
    else:
        assert "pip install 'mambaesr-runtime[ray]'" in err and "Ray Data" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--ray", "IN", "-o", "OUT"], "--ray took 'IN' as the cluster's address"),
    (["IN", "--ray"], "--ray takes one input folder and -o DST"),
    (["IN", "IN", "-o", "OUT", "--ray"], "--ray takes one input folder and -o DST"),
    (["IN", "-o", "OUT", "--ray", "--frames", "3"], "--frames cannot go with it"),
    (["IN", "-o", "OUT", "--ray", "--adaptive"], "--adaptive cannot go with it"),
    (["IN", "-o", "OUT", "--ray", "--ray-workers", "3-1"], "--ray-workers takes N or MIN-MAX"),
    (["IN", "-o", "OUT", "--ray", "--ray-workers", "0"], "--ray-workers takes N or MIN-MAX"),
    (["IN", "-o", "OUT", "--ray", "--quality", "0"], "--quality must be from 1 to 100"),
])
def test_bad_ray_arguments_are_exit_2_with_the_fix(folder, tmp_path, capsys, argv, message):
    argv = [str(folder) if a == "IN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    assert message.replace("'IN'", repr(str(folder))) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": (3, 1)}, "workers must be"),
    ({"workers": 0}, "workers must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"upscaler": {"tiles": 64}}, "not tiles"),
    ({"fmt": ".gif"}, "fmt='.gif' is not a format"),
    ({"gpus_per_worker": -1}, "gpus_per_worker must be"),
])
def test_the_library_checks_its_arguments_before_importing_ray(folder, tmp_path, monkeypatch, kwargs, message):
    from mambaesr_runtime.distributed import upscale_dataset

    monkeypatch.setitem(sys.modules, "ray", None)  # never reached
    with pytest.raises(ConfigError, match=message):
        upscale_dataset(folder, tmp_path / "out", **kwargs)
