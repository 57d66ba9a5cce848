"""SIGTERM and SIGHUP handled as Ctrl+C is: a command stopped by ``kill``, systemd or a closed terminal removes its
temporary output and exits 128 + the signal's number, as it does for SIGINT (130).

The handler raises :class:`Terminated`, a ``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` / ``finally``
on the way out (the atomic writers' temporaries, a video's half-written container) runs as it does for Ctrl+C. Only
a CLI's ``main`` installs it, for the length of the run; the library never touches signal handlers.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

#: The signals turned into :class:`Terminated` (those a platform lacks are left out: Windows has no SIGHUP).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The process got ``signum`` (SIGTERM or SIGHUP): unwind as for Ctrl+C, then exit ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number: 143 for SIGTERM, 129 for SIGHUP, 130 for SIGINT (a plain KeyboardInterrupt)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def describe(exc: KeyboardInterrupt) -> str:
    """``interrupted`` (Ctrl+C) or ``interrupted by SIGTERM``."""
    return f"interrupted by {exc.name}" if isinstance(exc, Terminated) else "interrupted"


@contextlib.contextmanager
def interrupt_on_termination():
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (once: a second signal
    while the first unwinds is ignored, so the cleanup finishes). A signal the process was started with ignored
    (``nohup`` ignores SIGHUP) stays ignored. The previous handlers come back at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal.signal works only in the main thread; a caller elsewhere keeps the defaults
        return
    raised = []

    def handler(signum, frame):
        if raised:
            return
        raised.append(signum)
        raise Terminated(signum)

    previous = {}
    for sig in SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def guarded_main(body, argv=None) -> int:
    """Run a CLI's ``body(argv)`` as ``mambaesr-run`` runs: stdout and stderr guarded (:mod:`.streams`: a reader
    that went away never fails a finished run), SIGTERM and SIGHUP unwinding as Ctrl+C does (temporaries removed by
    the writers' own cleanup). An interruption ``body`` does not handle itself is said in one line and exits 128 +
    the signal's number."""
    from .streams import guarded_streams

    with guarded_streams(), interrupt_on_termination():
        try:
            return body(argv)
        except KeyboardInterrupt as exc:
            print(f"\n{describe(exc)}", file=sys.stderr)
            return exit_code(exc)
