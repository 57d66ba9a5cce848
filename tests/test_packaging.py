"""Packaging promises: the runtime install needs no torch; the README's test command is what CI runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_base_requirements_have_no_torch():
    requires = metadata.requires("mambaesr-runtime") or []
    base = [r for r in requires if "extra ==" not in r]
    assert base, "the runtime dependencies should be declared"
    assert not [r for r in base if re.match(r"torch\b", r)], base
    with_torch = [r for r in requires if re.match(r"torch\b", r)]
    assert with_torch and all("extra ==" in r for r in with_torch)


def test_importing_the_package_and_model_config_does_not_import_torch():
    code = ("import sys, mambaesr_runtime, mambaesr_runtime.model.config, mambaesr_runtime.errors; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines(), "the README's test command and .ci/run have drifted apart"
    assert "torch" not in commands[0] and "mambaesr-run" in commands[0]  # the main job needs no torch
    assert "torch==2.13.0" in commands[1]  # never an unpinned torch
    # every extra the commands install is one setup.py defines (pip only warns about a missing one, and its tests
    # would then skip in CI without a word)
    extras_require = (ROOT / "setup.py").read_text().split("extras_require=", 1)[1].split("entry_points=", 1)[0]
    for command in commands:
        for extra in re.search(r"\.\[([a-z0-9,]+)\]", command).group(1).split(","):
            assert f'"{extra}":' in extras_require, f"the README installs the extra {extra!r}, which setup.py lacks"


def test_dockerfiles_name_real_profiles_commands_and_extras():
    """The Dockerfiles cannot be built here (no Docker, no Jetson); check what they rely on exists."""
    from mambaesr_runtime.profiles import builtin_profiles

    eps = metadata.entry_points()  # a dict of groups on Python 3.9, EntryPoints (select) from 3.10
    group = eps.select(group="console_scripts") if hasattr(eps, "select") else eps["console_scripts"]
    scripts = {ep.name for ep in group}
    extras = set(metadata.metadata("mambaesr-runtime").get_all("Provides-Extra") or [])
    jetson, rpi = (ROOT / "Dockerfile.jetson").read_text(), (ROOT / "Dockerfile.rpi").read_text()
    device = re.search(r"ARG MAMBAESR_DEVICE=(\S+)", jetson).group(1)
    assert device in builtin_profiles() and "xavier-nx" in jetson
    assert {"mambaesr-export", "mambaesr-run"} <= scripts and "--plans-only" in jetson and "jetson" in extras
    assert re.search(r'"--device", "(\S+)"', rpi).group(1) in builtin_profiles()
    assert "torch" not in rpi.split("FROM", 1)[1].replace("no torch", "")  # the Pi image stays torch-free


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions with continuation lines joined (comments dropped)."""
    lines, current = [], ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [line for line in lines if line]


def test_dockerfiles_keep_jetpacks_opencv_and_document_both_jetson_bases():
    jetson, rpi = (ROOT / "Dockerfile.jetson").read_text(), (ROOT / "Dockerfile.rpi").read_text()
    assert re.search(r"^ARG L4T_BASE=nvcr.io/nvidia/l4t-jetpack:r36\.\d", jetson, re.MULTILINE)
    assert "--build-arg L4T_BASE=nvcr.io/nvidia/l4t-jetpack:r35.4.1" in jetson
    assert "Python 3.10" in jetson and "Python 3.8" in jetson  # r36 and r35, both within python_requires
    runs = " ".join(i for i in _instructions(jetson) if i.startswith("RUN"))
    assert "nvidia-opencv" in runs and "python3-libnvinfer" in runs and '".[jetson]"' in runs
    assert "opencv-python" not in runs and "[opencv]" not in runs  # nothing from PyPI shadows JetPack's cv2
    assert "gstreamer_status()" in runs  # the image build fails if its OpenCV has no GStreamer
    assert '".[opencv]"' in " ".join(_instructions(rpi))
    for name, text in (("Dockerfile.jetson", jetson), ("Dockerfile.rpi", rpi)):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                assert lines[i - 1].startswith("#") and not lines[i - 1].startswith("# hadolint"), (
                    f"{name}:{i + 1}: every hadolint exception is justified in the comment above it")


def test_ci_runs_the_static_checks_before_the_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/check_python_versions.py" in ci and "hadolint Dockerfile.jetson Dockerfile.rpi" in ci
    assert "ruff check ." in ci  # settings and the reason for each rule left out: pyproject.toml
    assert ci.index("check_python_versions") < ci.index(_readme_commands()[1])


def test_the_source_tree_page_names_every_module_and_folder():
    """docs/layout.md is how a newcomer finds a part from the tree alone: it must name every module."""
    import re

    layout = (ROOT / "docs" / "layout.md").read_text()
    start = layout.index("```")
    tree = layout[start:layout.index("```", start + 3)]
    package = ROOT / "mambaesr_runtime"
    missing = [str(p.relative_to(ROOT)) for p in package.rglob("*.py")
               if p.name != "__init__.py" and not re.search(rf"\b{p.stem}\b", tree)]
    missing += [str(d.relative_to(ROOT)) for d in package.rglob("*") if d.is_dir() and (d / "__init__.py").exists()
                and f"{d.name}/" not in tree]
    assert missing == [], f"README's tree does not mention {missing}"


def test_the_arm64_foreign_check_builds_what_dockerfile_rpi_builds():
    """scripts/foreign_check.sh arm64 is the Pi image's recipe run under qemu: the same Debian suite, the same apt
    packages, the same venv's pip command and the same entrypoint command, so the check and the image cannot drift."""
    script = (ROOT / "scripts" / "foreign_check.sh").read_text()
    steps = " ".join(_instructions((ROOT / "Dockerfile.rpi").read_text()))
    base = re.search(r"FROM debian:(\w+)-slim", steps).group(1)
    assert re.search(rf"arm64\) suite={base} arch=arm64", script), f"foreign_check's arm64 suite is not {base}"
    apt = re.search(r"apt-get install -y --no-install-recommends ((?:[\w.-]+ ?)+)", steps).group(1).split()
    assert sorted(re.search(r"^packages=(\S+)", script, re.MULTILINE).group(1).split(",")) == sorted(apt)
    pip = re.search(r'RUN pip install --no-cache-dir "([^"]+)"', steps).group(1)
    assert f'pip install -q "{pip}"' in script and "python3 -m venv" in steps and "python3 -m venv" in script
    entry = " ".join(json.loads(re.search(r"ENTRYPOINT (\[.*?\])", steps).group(1)))
    assert entry == "mambaesr-run --device rpi5" and f"{entry} $sample" in script
