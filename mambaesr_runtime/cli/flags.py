"""Library errors name the API's arguments (``overwrite=True``, ``max_output_megapixels``, ``source='psutil'``); a
command line names its own flags. Each CLI translates the messages it prints with its table of argument -> flag."""

from __future__ import annotations

import re
import sys


def for_cli(message: object, flags: dict[str, str]) -> str:
    """``message`` with ``arg=True`` -> ``--flag``, ``arg='value'`` -> ``--flag value`` and (for arguments whose name
    has an underscore, so never an ordinary word) a bare ``arg`` -> ``--flag``, for each ``arg`` in ``flags``."""
    text = str(message)
    for arg, flag in flags.items():
        text = re.sub(rf"\b{arg}=True\b", flag, text)
        text = re.sub(rf"\b{arg}=(['\"]?)([^'\"\s,;)]+)\1", lambda m, f=flag: f"{f} {m.group(2)}", text)
        if "_" in arg:
            text = re.sub(rf"\b{arg}\b", flag, text)
    return text


def deprecated_alias(argv: list[str], old: str, new: str) -> None:
    """Say on stderr that ``old`` (still accepted, as an alias) is now ``new``."""
    if any(a == old or a.startswith(old + "=") for a in argv):
        print(f"note: {old} is now called {new}; the old name still works but may go", file=sys.stderr)
