"""``mambaesr-monitor``: live telemetry and the engine tier the adaptive policy would choose on this device.

    mambaesr-monitor --device orin                       refreshes in place until Ctrl-C
    mambaesr-monitor --device orin --record trace.json   ... and records what it saw (written atomically)
    mambaesr-monitor --device orin --replay trace.json   plays a recorded trace through the policy
    mambaesr-monitor --telemetry psutil --count 5        five samples, then exit (scripts, CI)

The policy starts on the heaviest tier. No frames run here, so latency is not measured: the tier shown is what
temperature, power and free memory alone would choose. Exit codes: 0 done; 2 bad arguments or no telemetry source.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from ..errors import MambaESRError
from .flags import deprecated_alias, for_cli
from .signals import Terminated, describe, exit_code, guarded_main

#: The monitor arguments the library's errors name, and the flags that set them here.
FLAGS = {"source": "--telemetry", "replay": "--replay"}

CLEAR_PANEL = "\x1b[{n}F\x1b[J"  # cursor up n lines to column 0, then clear to the end of the screen


def _value(value, fmt: str, unit: str = "") -> str:
    return "--" if value is None else f"{value:{fmt}}{unit}"


def _limit(value, unit: str, word: str) -> str:
    return f"[{word} {value:g} {unit}]" if value is not None else "[not watched]"


def panel(profile, t, decision, index: int, count: int | None, source: str) -> list[str]:
    """The lines shown for one sample (pure: the tests read them)."""
    th = profile.telemetry
    hottest = f" ({t.hottest})" if t.hottest else ""
    rails = ", ".join(f"{k} {v:.1f} W" for k, v in sorted((t.power_rails_w or {}).items()))
    total = f"{index + 1}/{count}" if count else f"{index + 1}"
    tier = decision.tier
    clocks = "--" if t.jetson_clocks is None else ("on" if t.jetson_clocks else "off")
    temperature = _value(t.temp_max_c, ".1f", " °C") + hottest
    loads = f"{_value(t.cpu_percent, '.0f', ' %')} / {_value(t.gpu_percent, '.0f', ' %')}"
    clocks_mhz = f"gpu {_value(t.gpu_freq_mhz, '.0f', ' MHz')}  emc {_value(t.emc_freq_mhz, '.0f', ' MHz')}"
    return [
        f"mambaesr-monitor  device {profile.name}  source {source}  sample {total}",
        f"  temperature   {temperature:<24} {_limit(th.temp_c, '°C', 'step down at')}",
        f"  power         {_value(t.power_w, '.2f', ' W'):<24} {_limit(th.power_w, 'W', 'budget')}  {rails}".rstrip(),
        f"  free memory   {_value(t.mem_free_mb, '.0f', ' MB'):<24} {_limit(th.mem_free_mb, 'MB', 'floor')}",
        f"  cpu / gpu     {loads:<24} {clocks_mhz}",
        f"  power mode    nvpmodel {t.nvpmodel or '--'}  jetson_clocks {clocks}",
        f"  tier          {tier.name} ({tier.variant}, tile {tier.tile}, batch {tier.batch})",
        f"  why           {decision.reason}",
    ]


def line(t, decision, index: int) -> str:
    """One sample as one line (when the output is not a terminal: logs, pipes, tests)."""
    return (f"#{index + 1} t={t.timestamp:.1f}s temp={_value(t.temp_max_c, '.1f')} power={_value(t.power_w, '.2f')} "
            f"free_mb={_value(t.mem_free_mb, '.0f')} cpu={_value(t.cpu_percent, '.0f')} "
            f"gpu={_value(t.gpu_percent, '.0f')} tier={decision.tier.name} | {decision.reason}")


def _check_record_path(record: str) -> None:
    """Everything about ``--record`` that can fail at save time, checked before the first sample is taken."""
    from pathlib import Path

    from ..fileio import probe_writable

    path = Path(record)
    if not record.lower().endswith((".json", ".csv")):
        raise MambaESRError(f"--record {record}: give a .json or .csv file name")
    if path.is_dir():
        raise MambaESRError(f"--record {record} is a folder; give a .json or .csv file name")
    folder = path.parent
    if not folder.is_dir():
        raise MambaESRError(f"--record {record}: the folder {folder} does not exist; create it first")
    try:
        probe_writable(folder)
    except OSError as exc:
        raise MambaESRError(f"--record {record}: cannot create files in {folder} ({exc.strerror or exc}); "
                            f"choose a writable folder") from exc


def main(argv: list[str] | None = None) -> int:
    return guarded_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    from ..runtime.monitor import SOURCES

    parser = argparse.ArgumentParser(prog="mambaesr-monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", default="cpu", help="built-in device profile (default cpu)")
    where.add_argument("--profile", help="a device profile YAML file instead of --device")
    parser.add_argument("--telemetry", "--source", dest="telemetry", choices=SOURCES, default=None,
                        help="telemetry source (default auto: jtop > nvml > psutil; replay with --replay); --source "
                             "is the old name of this flag, kept as an alias")
    parser.add_argument("--replay", metavar="TRACE", help="play a recorded trace (.json or .csv)")
    parser.add_argument("--replay-mode", choices=("frame", "time"), default="frame",
                        help="replay one snapshot per sample (frame, default) or at the recorded pace (time)")
    parser.add_argument("--record", metavar="TRACE", help="record the samples to this .json or .csv file")
    parser.add_argument("--count", type=int, help="stop after N samples (default: until Ctrl-C, or a replay's end)")
    parser.add_argument("--interval", type=float,
                        help="seconds between samples (default: the profile's interval; 0 for a replay)")
    parser.add_argument("--start-tier", help="the tier the policy starts on (default: the heaviest)")
    args = parser.parse_args(argv)
    deprecated_alias(sys.argv[1:] if argv is None else argv, "--source", "--telemetry")
    if args.count is not None and args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    if args.interval is not None and not (math.isfinite(args.interval) and (
            args.interval > 0 or (args.interval == 0 and args.replay))):
        parser.error(f"--interval must be a finite number of seconds above 0 (e.g. 0.5; 0 only with --replay, which "
                     f"then plays its samples without pausing), got {args.interval}")
    source = args.telemetry or ("replay" if args.replay else "auto")

    try:
        from ..profiles import load_profile
        from ..runtime.monitor import TraceRecorder, open_monitor, select_monitor
        from ..runtime.policy import TierPolicy

        profile = load_profile(args.profile or args.device)
        policy = TierPolicy(profile)
        state = policy.initial_state(args.start_tier or 0)
        interval = args.interval if args.interval is not None else (
            0.0 if source == "replay" else profile.telemetry.interval_s)
        if source == "auto":
            monitor, why = select_monitor(profile.telemetry.interval_s)
        else:
            monitor = open_monitor(source, interval_s=profile.telemetry.interval_s, replay=args.replay,
                                   replay_mode=args.replay_mode)
            why = monitor.describe()
        if args.record:
            _check_record_path(args.record)
    except (MambaESRError, OSError) as exc:
        print(f"error: {for_cli(exc, FLAGS)}", file=sys.stderr)
        return 2

    recorder = TraceRecorder(args.record, device=profile.name, monitor=monitor.describe()) if args.record else None
    tty = sys.stdout.isatty()
    print(f"telemetry: {why}", file=sys.stderr)
    shown, index, code = 0, 0, 0
    try:
        while args.count is None or index < args.count:
            if index and interval:
                time.sleep(interval)
            t = monitor.sample()
            if args.count is None and getattr(monitor, "exhausted", False):
                break  # a replay without --count ends with its trace
            decision = policy.decide(t, state)
            state = decision.state
            if recorder is not None:
                recorder.add(t)
            if tty:
                lines = panel(profile, t, decision, index, args.count, t.source)
                print((CLEAR_PANEL.format(n=shown) if shown else "") + "\n".join(lines), flush=True)
                shown = len(lines)
            else:
                print(line(t, decision, index), flush=True)
            index += 1
    except KeyboardInterrupt as exc:  # Ctrl+C is how a live view ends (exit 0); SIGTERM / SIGHUP exit 128 + N
        print("" if not isinstance(exc, Terminated) else describe(exc), file=sys.stderr)
        code = 0 if not isinstance(exc, Terminated) else exit_code(exc)
    finally:
        monitor.close()
        if recorder is not None and recorder.samples:
            path = recorder.save()  # what was seen until the stop, written atomically
            print(f"recorded {len(recorder.samples)} samples to {path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
