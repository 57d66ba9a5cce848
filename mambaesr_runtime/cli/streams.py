"""stdout and stderr that never fail a run: what a CLI prints is a report of work already done, so a reader that
went away (``mambaesr-run ... | head -1``), a stream closed at start (``2>&-``) or a file name that is not valid
UTF-8 must not turn written outputs into a failure (or a traceback).

- A closed pipe (``BrokenPipeError`` on a write or a flush; any ``OSError`` there alike): the stream's descriptor is pointed at ``os.devnull``
  (the standard way: the interpreter's own flush at exit then succeeds too) and the rest of its text is dropped;
  the run goes on and exits with its normal status.
- A stream closed when the process started (``sys.stderr is None``): its text is dropped. Without this, Python's
  ``print(..., file=None)`` writes to stdout, mixing progress and ``error:`` lines into the results.
- Text the stream's encoding cannot hold (a name read from a folder as ``b'\\xff.png'`` is the str ``'\\udcff.png'``):
  written back as its original bytes (surrogateescape) where the stream has a byte buffer, else with backslash
  escapes, never ``UnicodeEncodeError``.

Only a CLI's ``main`` installs the guards (:func:`guarded_streams`), for the length of the run; the library never
prints.
"""

from __future__ import annotations

import contextlib
import os
import sys


class GuardedStream:
    """A text stream forwarding to ``stream`` (``None``: a closed one) whose writes cannot raise for the reasons
    above. ``broken`` says whether its reader went away."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = stream is None

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:
                return self._write_escaped(text)
        except OSError:  # EPIPE: the reader went away; EBADF: the descriptor was closed under us
            self._drop()
            return len(text)

    def _write_escaped(self, text: str) -> int:
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        try:
            data = text.encode(encoding, "surrogateescape")  # a file name's own bytes, as ls shows them
        except UnicodeEncodeError:
            data = text.encode(encoding, "backslashreplace")
        buffer = getattr(self._stream, "buffer", None)
        if buffer is None:
            return self._stream.write(data.decode(encoding, "backslashreplace"))
        self._stream.flush()
        buffer.write(data)
        buffer.flush()
        return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except OSError:
            self._drop()

    def _drop(self) -> None:
        """The reader went away: send the descriptor to /dev/null, so nothing written later (nor the buffered text
        Python flushes at exit) fails again."""
        self.broken = True
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a real descriptor (a test's capture): dropping the text is enough
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            return
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass  # a descriptor closed under us: nothing will be written to it again anyway
        finally:
            os.close(devnull)

    def isatty(self) -> bool:
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def __getattr__(self, name):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_streams():
    """Within the block, ``sys.stdout`` and ``sys.stderr`` are :class:`GuardedStream` s (restored at the end)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = GuardedStream(sys.stdout), GuardedStream(sys.stderr)
    try:
        yield
    finally:
        out = sys.stdout
        with contextlib.suppress(Exception):
            out.flush()  # a reader that went away at the last line is found here, not by the interpreter at exit
        sys.stdout, sys.stderr = saved
