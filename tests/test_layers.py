"""The import direction between the package's layers: a module imports only from layers below its own (and from its
own part), so that the dependency arrows run one way:

    model -> export -> artifacts (the artifact contract) <- backends <- runtime <- cli,  evaluation, training and
    distributed (the Ray Data run: runtime's Upscaler on a cluster, which the CLI's --ray calls) above

Every import counts, at module level or inside a function (a lazy import is still a dependency). A failure names the
module, the line and the upward import; move the shared code down (or the importer up) instead of widening the table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mambaesr_runtime"

#: (part, layer): a module belongs to the longest part its dotted name starts with. Parts on one layer do not import
#: each other (``export`` and ``runtime`` are siblings); the foundation's parts may, being one part in spirit.
LAYERS = {
    # foundation: errors, files, pure image maths, and the tiling geometry (profiles validate tiers with its rule)
    "errors": 0, "fileio": 0, "typed": 0, "imaging": 0, "geometry": 0,
    "model": 1,  # the reference model (its config is torch-free: profiles and the contract read it)
    "artifacts": 2,  # the torch-free artifact contract: names, manifests, TensorRT versions and logger
    "profiles": 3,
    "backends": 4,
    "export": 5, "runtime": 5,
    "evaluation": 6, "distributed": 6,
    "training": 7,
    "cli": 8,
}
FOUNDATION = 0


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _part(module: str) -> str | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def _imports(path: Path, module: str):
    """(line, imported module relative to the package) for every import of the package's own modules."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("mambaesr_runtime"):
                target = node.module[len("mambaesr_runtime."):] if "." in node.module else ""
            else:
                continue
            # ``from . import x`` / ``from .pkg import mod``: the names may be modules themselves
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            yield node.lineno, [n for n in names if _part(n)] or [target]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mambaesr_runtime."):
                    yield node.lineno, [alias.name[len("mambaesr_runtime."):]]


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _part(module)
        if source is None:
            continue  # the package root: the public API, which may lazily import anything
        for line, targets in _imports(path, module):
            for target in targets:
                part = _part(target)
                if part is None or part == source:
                    continue  # the package root (``__version__``) or the module's own part
                if LAYERS[part] < LAYERS[source] or LAYERS[part] == LAYERS[source] == FOUNDATION:
                    continue
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({source}, layer "
                                f"{LAYERS[source]}) imports {target} ({part}, layer {LAYERS[part]})")
    return problems


def test_every_module_imports_only_downwards():
    assert upward_imports() == []


def test_every_module_has_a_layer():
    parts = {_part(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert {name for name in top if _part(name) is None} == set()
    assert parts <= set(LAYERS)


@pytest.mark.parametrize("importer, imported", [("runtime.engines", "export.pipeline"),
                                                ("backends.tensorrt", "export.trt_compat"),
                                                ("evaluation.benchmark", "training.data"),
                                                ("model.checkpoint", "export.onnx_export"),
                                                ("artifacts.manifest", "profiles")])
def test_the_check_sees_an_upward_import(importer, imported):
    source, target = _part(importer), _part(imported)
    assert not (LAYERS[target] < LAYERS[source] or LAYERS[target] == LAYERS[source] == FOUNDATION)
