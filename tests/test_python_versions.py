"""The device side runs on Python 3.8-3.13, the torch side on 3.9+; only this interpreter is here, so the promise is
checked statically (scripts/check_python_versions.py; .ci/run adds vermin) and by what importing actually loads."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_python_versions", ROOT / "scripts" / "check_python_versions.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def test_every_module_passes_the_rules_of_its_group():
    groups = check.module_groups()
    assert groups["device"] and groups["torch"]
    problems = [p for group, files in groups.items() for f in files for p in check.ast_problems(f, group)]
    assert problems == []


def test_the_groups_hold_what_the_design_says():
    device = {p.relative_to(check.PACKAGE).as_posix() for p in check.module_groups()["device"]}
    # What a Jetson imports: runtime, backends, profiles, manifests, monitor/policy, the --plans-only path, the
    # torch-free CLIs, and the model config/checkpoint readers.
    assert {"runtime/upscaler.py", "runtime/monitor/telemetry.py", "runtime/monitor/sources.py", "runtime/policy.py",
            "backends/tensorrt.py", "profiles.py",
            "artifacts/manifest.py", "artifacts/names.py", "artifacts/tensorrt.py", "export/parity.py",
            "export/pipeline.py", "export/tensorrt_build.py", "export/trt_compat.py",
            "cli/run.py", "cli/export.py", "cli/monitor.py", "cli/eval.py", "model/config.py",
            "model/checkpoint.py"} <= device
    assert not {"model/net.py", "model/scan.py", "training/loop.py", "distributed.py"} & device
    assert [p.relative_to(check.PACKAGE).as_posix() for p in check.module_groups()["ray"]] == ["distributed.py"]


def test_importing_the_device_modules_loads_no_torch_only_or_ray_module():
    names = [("mambaesr_runtime." + p.relative_to(check.PACKAGE).with_suffix("").as_posix().replace("/", "."))
             .replace(".__init__", "") for p in check.module_groups()["device"]]
    others = ["mambaesr_runtime." + m[:-3].replace("/", ".") for m in sorted(check.TORCH_ONLY | check.RAY_ONLY)]
    code = (f"import importlib, sys\nfor name in {names!r}:\n    importlib.import_module(name)\n"
            f"loaded = [m for m in {others!r} + ['torch', 'ray'] if m in sys.modules]\n"
            f"assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("source, problem", [
    ("def f(x):\n    return isinstance(x, list | tuple)\n", r"isinstance\(x, A \| B\) needs Python 3.10"),
    ("Shape = tuple[int, int]\n", r"`tuple\[...\]` outside an annotation needs Python 3.9"),
    ("from collections.abc import Callable\nHook = Callable[[int], None]\n", r"`Callable\[...\]` outside"),
    ("Maybe = int | None\n", r"`X \| Y` of types outside an annotation needs Python 3.10"),
    ("def f(x: int | None) -> None:\n    pass\n", r"no `from __future__ import annotations`"),
    ("from __future__ import annotations\nimport typing\nhints = typing.get_type_hints(object)\n",
     "get_type_hints evaluates"),
    ("import distutils.version\n", "imports distutils.version, which Python 3.13 no longer has"),
])
def test_the_rules_catch_newer_constructs(tmp_path, source, problem):
    path = tmp_path / "mod.py"
    path.write_text(source)
    found = check.ast_problems(path, "device")
    assert len(found) == 1 and re.search(problem, found[0]), found


def test_annotations_under_the_future_import_are_fine_and_torch_modules_may_use_39(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from __future__ import annotations\n\ndef f(x: list[int] | None) -> dict[str, int]:\n"
                    "    return {}\n\nCACHE: dict[str, int] = {}\n")
    assert check.ast_problems(path, "device") == []
    path.write_text("from __future__ import annotations\nShape = tuple[int, int]\n")
    assert check.ast_problems(path, "torch") == []


def test_python_requires_says_what_the_device_side_runs_on():
    setup = (ROOT / "setup.py").read_text()
    assert f'python_requires=">={check.DEVICE_TARGET}"' in setup
    for minor in range(8, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in setup
