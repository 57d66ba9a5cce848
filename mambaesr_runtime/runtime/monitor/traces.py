"""Telemetry traces: record what a monitor saw (JSON or CSV, written atomically) and replay it, frame by frame or at
the recorded pace, as a monitor (tests, benchmarks and ``mambaesr-monitor --replay``)."""

from __future__ import annotations

import bisect
import csv
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...fileio import atomic_write, atomic_write_json, read_json
from .telemetry import _FIELDS, Monitor, Telemetry

log = logging.getLogger(__name__)

TRACE_FORMAT = "mambaesr-telemetry-trace"

# ------------------------------------------------------------------------------------------------- traces


def load_trace(path: str | Path) -> list[Telemetry]:
    """Read a trace: JSON (what :func:`save_trace` writes, or a bare list of snapshots) or CSV.

    CSV columns are the :class:`Telemetry` field names, plus ``temp:<sensor>`` and ``rail:<name>`` for the two
    mappings; an empty cell is ``None``. Timestamps must not decrease.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trace {path} not found; record one with mambaesr-monitor --record {path.name}")
    if path.suffix.lower() == ".csv":
        samples = _read_csv(path)
    elif path.suffix.lower() == ".json":
        data = read_json(path, "trace", f"record one with mambaesr-monitor --record {path.name}", ConfigError)
        rows = data.get("samples") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ConfigError(f"trace {path} must be a list of snapshots or an object with a 'samples' list")
        samples = [Telemetry.from_dict(row, f"trace {path.name} sample {i}") for i, row in enumerate(rows)]
    else:
        raise ConfigError(f"trace {path}: unknown format {path.suffix!r}; valid suffixes are ['.json', '.csv']")
    if not samples:
        raise ConfigError(f"trace {path} holds no samples")
    for i in range(1, len(samples)):
        if samples[i].timestamp < samples[i - 1].timestamp:
            raise ConfigError(f"trace {path}: timestamp of sample {i} ({samples[i].timestamp}) is before sample "
                              f"{i - 1}'s ({samples[i - 1].timestamp}); timestamps must not decrease")
    return samples


_MAPPINGS = {"temp:": "temps_c", "rail:": "power_rails_w"}
_CSV_COLUMNS = [k for k, kind in _FIELDS.items() if kind != "mapping"]


def _read_csv(path: Path) -> list[Telemetry]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        bad = [c for c in columns if c not in _CSV_COLUMNS and not c.startswith(tuple(_MAPPINGS))]
        if bad:
            raise ConfigError(f"trace {path}: unknown columns {bad}; valid columns are {_CSV_COLUMNS} and "
                              f"'temp:<sensor>', 'rail:<name>'")
        samples = []
        for i, row in enumerate(reader):
            where = f"trace {path.name} row {i + 2}"
            data: dict[str, Any] = {}
            for column, cell in row.items():
                cell = (cell or "").strip()
                prefix = next((p for p in _MAPPINGS if column.startswith(p)), None)
                if prefix:
                    if cell:
                        data.setdefault(_MAPPINGS[prefix], {})[column[len(prefix):]] = _csv_number(cell, column, where)
                elif not cell:
                    data[column] = None
                elif _FIELDS[column] == "number":
                    data[column] = _csv_number(cell, column, where)
                elif _FIELDS[column] == "bool":
                    if cell.lower() not in ("true", "false", "1", "0"):
                        raise ConfigError(f"{where}: {column} is {cell!r}; valid values are true, false, 1, 0, empty")
                    data[column] = cell.lower() in ("true", "1")
                else:
                    data[column] = cell
            samples.append(Telemetry.from_dict(data, where))
        return samples


def _csv_number(cell: str, column: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ConfigError(f"{where}: {column} is {cell!r}, not a number (leave it empty for no reading)") from None


def save_trace(path: str | Path, samples: Sequence[Telemetry], **meta) -> Path:
    """Write ``samples`` atomically, as JSON (``meta`` kept beside them) or CSV, by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return atomic_write_json(path, {"format": TRACE_FORMAT, "version": 1, **meta,
                                        "samples": [s.to_dict() for s in samples]})
    if suffix != ".csv":
        raise ConfigError(f"trace {path}: unknown format {path.suffix!r}; valid suffixes are ['.json', '.csv']")
    temps = sorted({k for s in samples for k in (s.temps_c or {})})
    rails = sorted({k for s in samples for k in (s.power_rails_w or {})})
    header = _CSV_COLUMNS + [f"temp:{k}" for k in temps] + [f"rail:{k}" for k in rails]

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for s in samples:
                row = ["" if getattr(s, c) is None else _csv_cell(getattr(s, c)) for c in _CSV_COLUMNS]
                row += [_csv_cell((s.temps_c or {}).get(k)) for k in temps]
                row += [_csv_cell((s.power_rails_w or {}).get(k)) for k in rails]
                writer.writerow(row)

    return atomic_write(path, write, suffix=".csv")


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # repr: floats round-trip exactly


class TraceRecorder:
    """Collects snapshots and writes them atomically with :meth:`save` (what was recorded so far, any time)."""

    def __init__(self, path: str | Path, **meta):
        self.path, self.meta = Path(path), meta
        self.samples: list[Telemetry] = []

    def add(self, sample: Telemetry) -> None:
        self.samples.append(sample)

    def save(self) -> Path:
        return save_trace(self.path, self.samples, **self.meta)


def record_trace(monitor: Monitor, path: str | Path, count: int, interval_s: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 on_sample: Callable[[Telemetry], None] | None = None) -> list[Telemetry]:
    """Sample ``monitor`` ``count`` times, ``interval_s`` apart, and write the trace atomically (also when
    interrupted: what was sampled until then)."""
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    recorder = TraceRecorder(path, monitor=monitor.describe(), interval_s=interval_s)
    try:
        for i in range(count):
            if i:
                sleep(interval_s)
            sample = monitor.sample()
            recorder.add(sample)
            if on_sample is not None:
                on_sample(sample)
    finally:
        if recorder.samples:
            recorder.save()
    return recorder.samples


class ReplayMonitor:
    """Plays a recorded trace, in order.

    ``mode="frame"``: each ``sample()`` returns the next snapshot with its recorded timestamp, so a run over it is
    deterministic (tests, benchmarks). ``mode="time"``: ``sample()`` returns the snapshot due at the time elapsed
    since the first call, timestamps moved onto ``clock``. Past the end it holds the last snapshot (``exhausted``
    turns true), or starts over with ``loop=True`` (timestamps keep increasing).
    """

    name = "replay"

    def __init__(self, trace: str | Path | Iterable[Telemetry], mode: str = "frame", loop: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in ("frame", "time"):
            raise ConfigError(f"replay mode is {mode!r}; valid values are ['frame', 'time']")
        if isinstance(trace, (str, Path)):
            self._label, samples = Path(trace).name, load_trace(trace)
        else:
            self._label, samples = "in-memory trace", list(trace)
            if not samples:
                raise ConfigError("a replay needs at least one snapshot")
        self.samples, self.mode, self.loop, self._clock = samples, mode, loop, clock
        self._times = [s.timestamp - samples[0].timestamp for s in samples]
        gaps = [b - a for a, b in zip(self._times, self._times[1:]) if b > a]
        # One loop lasts the trace plus one typical gap, so the replayed clock never stands still at the seam.
        self._span = self._times[-1] + (statistics.median(gaps) if gaps else 1.0)
        self.position = 0
        self.exhausted = False
        self._start: float | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self) -> Telemetry:
        n = len(self.samples)
        if self.mode == "frame":
            lap, i = divmod(self.position, n)
            if lap and not self.loop:
                lap, i = 0, n - 1
                self.exhausted = True
            self.position += 1
            s = self.samples[i]
            stamp = s.timestamp + lap * self._span
        else:
            now = self._clock()
            if self._start is None:
                self._start = now
            elapsed = now - self._start
            lap = 0
            if self.loop:
                lap, elapsed = divmod(elapsed, self._span)
            elif elapsed >= self._span:
                self.exhausted = True
            i = max(0, bisect.bisect_right(self._times, elapsed) - 1)
            self.position = i
            s = self.samples[i]
            stamp = self._start + lap * self._span + self._times[i]
        return dataclasses.replace(s, timestamp=stamp, source=f"replay ({s.source or self._label})")

    def describe(self) -> str:
        return f"replay {self._label} ({len(self.samples)} snapshots, by {self.mode}{', looping' if self.loop else ''})"

    def close(self) -> None:
        pass
