#!/usr/bin/env python3
"""Static check that every module runs on the Python versions it promises (no interpreter but this one is here).

    python scripts/check_python_versions.py             vermin per module group, then the rules below
    python scripts/check_python_versions.py --ast-only  the rules below only (the test suite runs this part)

Three groups of ``mambaesr_runtime`` modules:

- **device** (Python 3.8 - 3.13): everything a Jetson or a Pi imports: runtime, backends, profiles, manifests,
  monitor and policy, the ``--plans-only`` export path, the torch-free CLIs, and ``model/config.py`` /
  ``model/checkpoint.py``, which the runtime reads. JetPack 5 (L4T r35, TensorRT 8.5) ships Python 3.8, JetPack 6
  (r36) ships 3.10.
- **torch** (Python 3.9+): the modules that only run next to PyTorch (:data:`TORCH_ONLY`): the network and scan,
  training, export from a checkpoint.
- **ray** (Python 3.10+): the distributed run on Ray Data (:data:`RAY_ONLY`), whose current releases need 3.10; it
  runs on the cluster side, never on the device, and imports Ray lazily.

``tests/test_python_versions.py`` checks that importing the device modules imports none of the torch or ray ones
(nor torch or ray themselves), so the split cannot drift.

Checks:

1. ``vermin --target=3.8- --violations`` on the device group, ``--target=3.9-`` on the torch group and
   ``--target=3.10-`` on the ray group (PyPI ``vermin``): standard-library members, syntax and keyword arguments
   newer than the target.
2. ``from __future__ import annotations`` in every module that has annotations, so ``X | None`` and ``list[int]``
   in annotations stay unevaluated strings on 3.8 (vermin, run without ``--eval-annotations``, relies on it); and
   no ``typing.get_type_hints`` in device modules, which would evaluate them.
3. What vermin cannot see because it does not know types: ``X | Y`` of types outside annotations (PEP 604, 3.10:
   ``isinstance(x, list | tuple)`` raises ``TypeError`` on 3.9) and subscripted builtin or ``collections.abc``
   generics outside annotations (PEP 585, 3.9) in device modules.
4. No import of a standard-library module removed by Python 3.13 (PEP 594, ``distutils``, ``imp``).

Exit status 1 with one line per finding (``path:line: problem``); 0 when clean.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mambaesr_runtime"
DEVICE_TARGET, TORCH_TARGET, RAY_TARGET = "3.8", "3.9", "3.10"

#: Modules (relative to mambaesr_runtime/) that only run where PyTorch is installed; everything else is device code.
TORCH_ONLY = frozenset({
    "model/net.py", "model/scan.py", "training/loop.py", "training/state.py",
    "training/losses.py", "training/pipeline.py", "training/records.py", "cli/train.py", "cli/demo.py",
})
#: Modules that only run next to Ray (Python 3.10+): the cluster side. ``cli/run.py`` imports it only for --ray.
RAY_ONLY = frozenset({"distributed.py"})

#: Standard-library modules gone by Python 3.13 (3.12: asynchat, asyncore, distutils, imp, smtpd; 3.13: PEP 594).
REMOVED_BY_313 = frozenset({
    "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt", "distutils", "imghdr", "imp",
    "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau",
    "telnetlib", "uu", "xdrlib",
})
_BUILTIN_TYPES = frozenset({"bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
                            "memoryview", "object", "set", "str", "tuple", "type"})
_BUILTIN_GENERICS = frozenset({"dict", "frozenset", "list", "set", "tuple", "type"})
_GENERIC_MODULES = ("collections", "collections.abc", "contextlib", "re")


def module_groups(package: Path = PACKAGE) -> dict[str, list[Path]]:
    """``{"device": [...], "torch": [...], "ray": [...]}``: every ``.py`` file of the package in its group."""
    groups: dict[str, list[Path]] = {"device": [], "torch": [], "ray": []}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        groups["torch" if relative in TORCH_ONLY else "ray" if relative in RAY_ONLY else "device"].append(path)
    return groups


def _annotation_nodes(tree: ast.AST) -> list[ast.AST]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if arg is not None and arg.annotation is not None:
                    found.append(arg.annotation)
            if node.returns is not None:
                found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def _runtime_nodes(tree: ast.AST, skip: set[int]):
    """Every node outside annotations (annotations are strings under the ``__future__`` import)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if id(node) in skip:
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _is_type_like(node: ast.AST, generic_names: set[str]) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name):
        return node.id in _BUILTIN_TYPES or node.id in generic_names
    if isinstance(node, ast.Subscript):
        return _is_type_like(node.value, generic_names)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type_like(node.left, generic_names) or _is_type_like(node.right, generic_names)
    return False


def ast_problems(path: Path, group: str) -> list[str]:
    """Findings of rules 2-4 for one file (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.resolve().relative_to(ROOT).as_posix() if ROOT in path.resolve().parents else str(path)
    problems = []
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations = _annotation_nodes(tree)
    if annotations and not future:
        problems.append(f"{where}:{annotations[0].lineno}: has annotations but no `from __future__ import "
                        f"annotations`: `X | None` / `list[int]` in them would be evaluated on 3.8/3.9")
    generic_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in _GENERIC_MODULES:
            generic_names.update(a.asname or a.name for a in node.names if a.name[:1].isupper())
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in REMOVED_BY_313:
                    problems.append(f"{where}:{node.lineno}: imports {name}, which Python 3.13 no longer has")
    if group != "device":
        return problems
    skip = {id(n) for n in annotations}
    type_checks = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                   and n.func.id in ("isinstance", "issubclass") and len(n.args) == 2]
    checked_types = {id(inner) for call in type_checks for inner in ast.walk(call.args[1])}  # reported once, below
    for node in _runtime_nodes(tree, skip):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in checked_types and (
                _is_type_like(node.left, generic_names) or _is_type_like(node.right, generic_names)):
            problems.append(f"{where}:{node.lineno}: `X | Y` of types outside an annotation needs Python 3.10; "
                            f"use a tuple (isinstance) or typing.Union/Optional")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "isinstance", "issubclass") and len(node.args) == 2 and any(
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(node.args[1])):
            problems.append(f"{where}:{node.lineno}: {node.func.id}(x, A | B) needs Python 3.10; pass a tuple")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and (
                node.value.id in _BUILTIN_GENERICS or node.value.id in generic_names):
            problems.append(f"{where}:{node.lineno}: `{node.value.id}[...]` outside an annotation needs Python "
                            f"3.9; use typing.{node.value.id.capitalize()} or move it into an annotation")
        elif (isinstance(node, ast.Name) and node.id == "get_type_hints") or (
                isinstance(node, ast.Attribute) and node.attr == "get_type_hints") or (
                isinstance(node, ast.ImportFrom) and any(a.name == "get_type_hints" for a in node.names)):
            problems.append(f"{where}:{node.lineno}: get_type_hints evaluates the string annotations, which use "
                            f"3.10 syntax; read the fields another way")
    return problems


def run_vermin(files: list[Path], target: str) -> int:
    vermin = shutil.which("vermin")
    if vermin is None:
        print("vermin is not installed: pip install vermin (or run with --ast-only)", file=sys.stderr)
        return 2
    # Without --eval-annotations: annotations are strings (rule 2 guarantees the __future__ import).
    command = [vermin, f"--target={target}-", "--violations", "--no-tips", "--quiet", *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"vermin --target={target}- found constructs newer than Python {target}:", file=sys.stderr)
        print((result.stdout + result.stderr).strip(), file=sys.stderr)
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ast-only", action="store_true", help="skip vermin")
    args = parser.parse_args(argv)
    groups = module_groups()
    problems = [p for group, files in groups.items() for f in files for p in ast_problems(f, group)]
    for line in problems:
        print(line, file=sys.stderr)
    status = 1 if problems else 0
    if not args.ast_only:
        for group, target in (("device", DEVICE_TARGET), ("torch", TORCH_TARGET), ("ray", RAY_TARGET)):
            status = max(status, run_vermin(groups[group], target))
    if status == 0:
        print(f"python versions ok: {len(groups['device'])} device modules (>= {DEVICE_TARGET}), "
              f"{len(groups['torch'])} torch modules (>= {TORCH_TARGET}), {len(groups['ray'])} ray modules "
              f"(>= {RAY_TARGET})")
    return status


if __name__ == "__main__":
    sys.exit(main())
