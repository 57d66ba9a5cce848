"""Child processes that a test stops with a signal."""

from __future__ import annotations

import signal
import subprocess

#: What the CLIs turn into an orderly stop: Ctrl+C, kill / systemd / docker stop, a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def spawn_signalable(argv, **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen_kwargs)`` with the stop signals at their default action in the child, as
    under a terminal, whatever this run inherited: a background job (CI) starts with SIGINT ignored and ``nohup``
    with SIGHUP ignored, an exec keeps only an ignored disposition, and the CLIs rightly keep an inherited SIG_IGN
    (so a test's signal would never stop them). Python then installs its own Ctrl+C handler in the child."""
    before = {sig: signal.signal(sig, signal.SIG_DFL) for sig in STOP_SIGNALS}
    try:
        return subprocess.Popen(argv, **popen_kwargs)
    finally:
        for sig, old in before.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
