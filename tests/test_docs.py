"""The README and the pages under docs/: short, linked, and every command they show accepted by the real command.

Each ``mambaesr-*`` line of a ``bash`` block is split as a shell would (comments, ``&&`` chains, redirections and
pipes dropped) and handed to that command's own ``main``, stopped right after its argument parser accepted the line:
a flag renamed or removed, a choice no longer offered or a subcommand gone fails here, in the page that shows it.
What a command then does is tested by each command's own tests (tests/cli)."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {"mambaesr-run": "run", "mambaesr-export": "export", "mambaesr-eval": "eval",
            "mambaesr-monitor": "monitor", "mambaesr-train": "train", "mambaesr-demo": "demo"}
README_MAX_LINES = 250


def _shown_commands():
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                for part in " ".join(shlex.quote(w) if w not in ("&&", "|", ">") else w for w in words).split("&&"):
                    argv = shlex.split(re.split(r" (?:\||>) ", part)[0])
                    if argv and argv[0] in COMMANDS:
                        yield pytest.param(argv, id=f"{page.name}: {' '.join(argv)[:70]}")


class _Accepted(BaseException):  # not an Exception: no command's error handling may swallow it
    pass


@pytest.mark.parametrize("argv", list(_shown_commands()))
def test_every_command_shown_is_accepted_by_its_parser(argv, monkeypatch):
    try:
        module = importlib.import_module(f"mambaesr_runtime.cli.{COMMANDS[argv[0]]}")
    except ImportError as exc:  # pragma: no cover - a device install without torch
        pytest.skip(f"{argv[0]} cannot be imported here: {exc}")
    parse = argparse.ArgumentParser.parse_args

    def accept(self, args=None, namespace=None):
        parse(self, args, namespace)  # exits 2 with the parser's message when the line is not accepted
        raise _Accepted

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", accept)
    with pytest.raises(_Accepted):
        module.main(argv[1:])


def test_the_pages_show_every_command():
    shown = {p.values[0][0] for p in _shown_commands()}
    assert shown == set(COMMANDS), f"no page shows {set(COMMANDS) - shown}"


def test_the_readme_stays_a_user_guide_and_every_relative_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < README_MAX_LINES, "move the detail to a page under docs/ and link it"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
    linked = set(re.findall(r"\]\(docs/([^)#]+)", readme))
    assert linked == {p.name for p in PAGES[1:]}, "every page under docs/ is linked from the README"
