"""A folder run scaled out on Ray Data: every image of a folder upscaled by a pool of Ray actors, each holding one
:class:`~mambaesr_runtime.runtime.upscaler.Upscaler`, with the same checks, engines and output bytes as
``mambaesr-run`` on one machine.

    from mambaesr_runtime.distributed import upscale_dataset
    run = upscale_dataset("shots/", "shots_x4/")                   # Ray on this machine (or RAY_ADDRESS's cluster)
    run = upscale_dataset("s3://bucket/in", "s3://bucket/out", profile="cuda", address="ray://head:10001",
                          workers=(1, 100))
    run.done, run.failed, run.skipped, run.results                 # counts and the results table (JSON lines)

How it runs, and why:

- The driver lists SRC once (names and sizes, no reads) and DST once. The temporaries of atomic writes
  (``.<name>.<random>.<ext>``, which a killed writer leaves) are never inputs nor outputs; subfolders are not
  descended and images are told by their suffix, as in a CLI folder run.
- ``ray.data.read_binary_files(pending, include_paths=True)`` reads the bytes only (``read_images`` would decode them
  with PIL, past our header checks). The read tasks ask for no CPU (they wait on storage), so a pool holding every
  CPU cannot starve its own input.
- ``map_batches(_Worker, compute=ActorPoolStrategy(min, max), num_cpus, num_gpus)``: each actor opens one Upscaler
  once and runs :meth:`Upscaler.upscale_encoded` on each image (the path :meth:`Upscaler.upscale_file` takes: header
  checks, decode, EXIF orientation, upscale, metadata, encoder), then publishes the output on DST itself. Outputs
  (16x the pixels) never travel through the object store; only the image's row of the results table comes back.

Guarantees:

- **Resume**: an output that exists and is complete (its format's end marker is there: PNG ``IEND``, JPEG ``EOI``,
  the WebP and BMP sizes) is skipped; an incomplete one is replaced (the row says so). Outputs appear under their
  name only when complete (temporary file + rename), so a killed run leaves nothing to mistake for one.
- **Retry**: a worker process that dies (killed, out of memory, a lost node) is restarted by Ray and its images run
  again; a run whose actors are killed for good (``ray.kill``) is started again by the driver on the inputs that
  have no final row yet (``attempts``). An image that kills its worker every time it runs fails alone after
  ``max_starts`` starts (a ledger actor counts them), instead of failing or hanging the job.
- **Exclusive publish**: an output is linked into place only if its name is free (``os.link``, which fails when the
  target exists), so of two attempts on one image exactly one publishes; the other finds it and reports it done by
  an earlier attempt. Temporaries a killed worker left are removed once their output exists.
- **Results table**: exactly one final row per input (:data:`RESULT_COLUMNS`), written atomically next to the
  outputs as ``mambaesr-results-<UTC time>.jsonl`` and, with pyarrow (which Ray Data brings), ``.parquet``. One bad
  image is a ``failed`` row, never a failed job.

Filesystems: local paths, and URIs that pyarrow (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``) or
fsspec resolves, or a ``filesystem`` object. On object stores (S3, GCS, Azure) an output is uploaded straight to its
key (an object appears whole when its upload completes) and the exclusive publish is check-then-write: two attempts
racing on one image may both upload it (identical bytes). Profile files and ``model``/``engines_dir`` paths are read
on the workers: on a cluster they must exist on every node (the shipped engines do).

Needs Python >= 3.10 and the ``ray`` extra (``pip install 'mambaesr-runtime[ray]'``); Ray is imported only when a run
starts, and no device-side module imports this one. The library never prints: Ray draws its own progress bars when
``progress`` is true, and ``mambaesr-run SRC -o DST --ray`` prints the summary.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import os
import posixpath
import secrets
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError, DependencyError, MambaESRError, describe_failure
from .fileio import atomic_write, is_temporary
from .profiles import DeviceProfile, load_profile
from .runtime.imageio import EXTRA_BYTES_ALLOWED, WRITE_FORMATS, OutputExistsError, check_quality, output_name
from .runtime.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

#: The columns of the results table, in order, and what each holds. One row per input of the run.
RESULT_COLUMNS = {
    "input": "the input, as SRC/name",
    "output": "the output, as DST/name (null unless done or skipped)",
    "status": "done (written by this run), skipped (a complete output was there) or failed; interrupted when the "
              "run was stopped before it",
    "engine": "what upscaled it: backend, engine file, precision, tier (null when no engine ran it)",
    "seconds": "time its worker spent on it, from decode to publish (null when nothing ran)",
    "error": "why it failed or was skipped (null when done)",
    "note": "what else happened to it: its output published by an earlier attempt, an incomplete output replaced",
    "worker": "host:pid of the Ray actor that ran it (null for rows the driver wrote)",
}
#: The keyword arguments of :class:`Upscaler` a run passes to every worker's.
UPSCALER_ARGUMENTS = ("model", "tier", "backend", "tile", "overlap", "precision", "scale", "engines_dir", "threads",
                      "max_output_megapixels", "outscale")
#: What a worker's row says when its image's output is already there: the task ran before (a worker killed after
#: publishing) or another run wrote it meanwhile.
EARLIER = "its output was published by an earlier attempt (a retried task) or another run meanwhile"
#: ONNX Runtime providers that run on the CPU (any other means the profile wants a GPU per actor).
_CPU_PROVIDERS = ("CPUExecutionProvider",)
#: Filesystems where an object appears whole once uploaded (no rename needed, and a rename would copy it).
_OBJECT_STORES = ("s3", "gcs", "abfs")
#: Seconds to wait for the probe (one engine load on a worker) before saying the cluster cannot host a worker.
PROBE_TIMEOUT_S = 600


@dataclass(frozen=True)
class DatasetRun:
    """What :func:`upscale_dataset` did. Counts are over the rows of the results table (one per input)."""

    src: str
    dst: str
    done: int
    skipped: int
    failed: int
    interrupted: int
    seconds: float
    """Wall time of the whole call (listing, probe, the Ray executions, the tables)."""
    images_per_second: float
    """Images written per second of the Ray executions (0 when none ran)."""
    engine: dict | None
    """:meth:`Upscaler.summary` of the engine the workers run (from the probe on a worker; None if none started)."""
    results: str
    """The results table, JSON lines (path or URI)."""
    results_parquet: str | None
    """The same table as Parquet (None without pyarrow)."""
    address: str
    """The Ray cluster (its GCS address)."""
    workers: tuple[int, int]
    """The actor pool's (min, max) size."""
    attempts: int
    """Ray executions it took (more than 1 after a job failure: a permanently killed actor, a lost driver link)."""
    error: str | None = None
    """Why some inputs have no output from a worker (the last job failure), or None."""
    duplicates: int = 0
    """Rows dropped because their input already had a final row (always 0 unless Ray ran a task twice)."""
    _dst_store: Any = field(default=None, repr=False, compare=False)

    def rows(self) -> Iterator[dict]:
        """The rows of the results table, read back from :attr:`results`."""
        data = self._dst_store.read(posixpath.basename(self.results.replace(os.sep, "/")))
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def upscale_dataset(src: str | os.PathLike, dst: str | os.PathLike, profile: str | os.PathLike | DeviceProfile = "cpu",
                    *, upscaler: Mapping[str, Any] | None = None, fmt: str | None = None, quality: int = 95,
                    strip_metadata: bool = False, overwrite: bool = False, address: str | None = None,
                    workers: int | tuple[int, int] | None = None, cpus_per_worker: float | None = None,
                    gpus_per_worker: float | None = None, batch_size: int = 1, filesystem=None,
                    progress: bool = False, attempts: int = 3, max_starts: int = 3,
                    on_image: Callable[[str, str], None] | None = None) -> DatasetRun:
    """Upscale every image of the folder ``src`` into the folder ``dst`` on a Ray cluster (see the module's notes).

    ``profile``: the device profile (name, YAML path or :class:`DeviceProfile`; loaded here and shipped to the
    workers). ``upscaler``: the other :class:`Upscaler` arguments (:data:`UPSCALER_ARGUMENTS`). ``fmt``: the output
    suffix (``".png"``; default: each input's); ``quality``, ``strip_metadata``: as for :meth:`Upscaler.upscale_file`.
    ``overwrite``: redo and replace every output instead of skipping complete ones.

    ``address``: the Ray cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None: the Ray this process
    already joined, else ``RAY_ADDRESS``'s, else a new one on this machine (stopped at the end). ``workers``: the
    actor pool's size, N or (min, max) (default: 1 up to what the cluster's CPUs or GPUs hold now).
    ``cpus_per_worker``/``gpus_per_worker``: resources each actor reserves (default: the ``threads`` asked for, else
    the profile's, else 1 CPU; 1 GPU when the profile runs on one). When ``threads`` is not given, each actor's
    ONNX Runtime gets as many threads as CPUs it reserved. ``batch_size``: images per Ray task. ``filesystem``: a
    pyarrow or fsspec filesystem for both folders (default: from their URIs). ``progress``: Ray's progress bars.
    ``attempts``: Ray executions before the inputs still without a row are recorded as failed. ``max_starts``: starts
    of one image after which it is failed without running (an image that crashes its worker). ``on_image(stage,
    input)``: called on the worker at ``"start"`` (before an image) and ``"published"`` (after its output is in
    place): instrumentation (the tests kill a worker at a chosen moment with it).

    Raises :class:`MambaESRError` (nothing is upscaled) for arguments that cannot work, a missing extra, an
    unreachable cluster or an engine the workers cannot open; every per-image problem is a row instead.
    """
    start = time.perf_counter()
    options = _check_options(upscaler, fmt, quality, batch_size, attempts, max_starts, workers, cpus_per_worker,
                             gpus_per_worker)
    ray = _import_ray()
    profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    src_store, dst_store = _store(src, filesystem, "SRC"), _store(dst, filesystem, "DST")
    if src_store.same_place(dst_store):
        raise MambaESRError(f"DST {dst} is SRC itself: the outputs would land among the inputs; give another folder "
                            f"(inputs are never overwritten)")
    src_store.require_folder()
    entries = src_store.list()
    if not any(os.path.splitext(e.name)[1].lower() in WRITE_FORMATS + VIDEO_SUFFIXES for e in entries):
        raise MambaESRError(f"SRC {src_store.display} holds no images ({', '.join(WRITE_FORMATS)})")
    gpus = gpus_per_worker if gpus_per_worker is not None else (1 if _uses_gpu(profile, options.get("backend")) else 0)
    cpus = cpus_per_worker if cpus_per_worker is not None else (
        1 if gpus else float(options.get("threads") or profile.threads or 1))
    if "threads" not in options and not gpus:
        options["threads"] = max(1, int(cpus))  # each actor's ONNX Runtime uses the CPUs it reserved, no more
    joined = _connect(ray, address)
    try:
        return _run(ray, src_store, dst_store, entries, _Plan(
            profile=profile, upscaler=options, src=src_store, dst=dst_store, fmt=fmt, quality=quality,
            strip_metadata=strip_metadata, overwrite=overwrite, hook=on_image, ledger=None, max_starts=max_starts),
            workers, cpus, gpus, batch_size, progress, attempts, start)
    finally:
        if joined:
            ray.shutdown()  # stops the Ray this call started; only disconnects from a cluster it joined


# -- arguments --------------------------------------------------------------------------------------------------
def _check_options(upscaler, fmt, quality, batch_size, attempts, max_starts, workers, cpus, gpus) -> dict:
    options = dict(upscaler or {})
    unknown = sorted(set(options) - set(UPSCALER_ARGUMENTS))
    if unknown:
        raise ConfigError(f"upscaler={{...}} takes {', '.join(UPSCALER_ARGUMENTS)}; not {', '.join(unknown)}")
    options = {k: v for k, v in options.items() if v is not None}
    if fmt is not None and fmt.lower() not in WRITE_FORMATS:
        raise ConfigError(f"fmt={fmt!r} is not a format the outputs can be written in; give one of {WRITE_FORMATS}")
    check_quality(quality)
    for name, value, low in (("batch_size", batch_size, 1), ("attempts", attempts, 1), ("max_starts", max_starts, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    sizes = (workers, workers) if isinstance(workers, int) else workers
    if sizes is not None and not (len(sizes) == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                                         for n in sizes) and sizes[0] <= sizes[1]):
        raise ConfigError(f"workers must be a number of actors >= 1 or (min, max) with 1 <= min <= max, got "
                          f"{workers!r}")
    for name, value in (("cpus_per_worker", cpus), ("gpus_per_worker", gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    return options


def _uses_gpu(profile: DeviceProfile, backend: str | None) -> bool:
    """The profile's engines run on a GPU: TensorRT, or ONNX Runtime with a GPU provider."""
    backends = (backend,) if backend else profile.backends
    return "tensorrt" in backends or ("onnxruntime" in backends and
                                      any(p not in _CPU_PROVIDERS for p in profile.ort_providers))


def _import_ray():
    if sys.version_info < (3, 10):
        raise DependencyError(f"the distributed run needs Ray, whose current releases need Python >= 3.10; this is "
                              f"Python {sys.version.split()[0]}. Run it from a Python 3.10+ environment (the "
                              f"cluster side need not be the device)")
    try:
        import ray
        import ray.data  # the data extra (pyarrow, pandas) too
    except ImportError as exc:
        raise DependencyError(f"the distributed run needs Ray Data, which is not installed ({exc}); install it "
                              f"with: pip install 'mambaesr-runtime[ray]' (or pip install 'ray[data]>=2.10')") \
            from exc
    return ray


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` (or start one here); False when this process had joined one already."""
    if ray.is_initialized():
        if address:
            log.info("already connected to Ray; address %s is not used", address)
        return False
    if address and address not in ("auto", "local"):
        _check_reachable(address)
    try:
        local = not address and not os.environ.get("RAY_ADDRESS") or address == "local"
        ray.init(address=address or None, include_dashboard=False if local else None)
    except ConnectionError as exc:
        raise MambaESRError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS', 'auto')} "
                            f"({exc}); start one there (ray start --head), check the address, or leave it out to "
                            f"run Ray on this machine") from exc
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connection to ``address`` first: ``ray.init`` on a dead address retries for minutes."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise MambaESRError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local; e.g. "
                            f"10.0.0.5:6379 (the head's GCS port) or ray://10.0.0.5:10001 (Ray Client)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise MambaESRError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one there "
                            f"(ray start --head --port {port}), check the address and port, or leave the address "
                            f"out to run Ray on this machine") from exc


# -- the run ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What every worker needs, shipped once per actor."""

    profile: DeviceProfile
    upscaler: dict
    src: Any
    dst: Any
    fmt: str | None
    quality: int
    strip_metadata: bool
    overwrite: bool
    hook: Callable[[str, str], None] | None
    ledger: Any
    max_starts: int


def _run(ray, src, dst, entries, plan: _Plan, workers, cpus, gpus, batch_size, progress, attempts, start):
    table = _Table(dst)
    try:
        return _run_into(ray, src, dst, entries, plan, workers, cpus, gpus, batch_size, progress, attempts, start,
                         table)
    finally:
        table.discard()


def _run_into(ray, src, dst, entries, plan, workers, cpus, gpus, batch_size, progress, attempts, start, table):
    image_entries = []
    for e in entries:
        suffix = os.path.splitext(e.name)[1].lower()
        if suffix in VIDEO_SUFFIXES:
            table.add(_row(src.show(e.name), "skipped", error="a video: the distributed run takes images; run "
                                                              "mambaesr-run on it"))
        elif suffix in WRITE_FORMATS:
            image_entries.append(e)
    resources = ray.cluster_resources()
    if gpus and resources.get("GPU", 0) < gpus:
        raise MambaESRError(f"profile {plan.profile.name} runs on a GPU (gpus_per_worker={gpus:g}) but the Ray "
                            f"cluster has {resources.get('GPU', 0):g} GPUs; add GPU nodes, or pass gpus_per_worker=0 "
                            f"to run its ONNX Runtime CPU fallback")
    if cpus > resources.get("CPU", 0):
        raise MambaESRError(f"each worker reserves {cpus:g} CPUs (cpus_per_worker) but the Ray cluster has "
                            f"{resources.get('CPU', 0):g}; lower cpus_per_worker (or threads)")
    size = _pool_size(workers, resources, cpus, gpus)
    engine = _probe(ray, plan, cpus, gpus)
    dst.make_folder()
    max_bytes = _max_input_bytes(plan.upscaler.get("max_output_megapixels", 100.0), engine["scale"])

    # Which inputs need a worker: names checked, outputs looked for (one listing of DST), collisions refused.
    existing = {e.name for e in dst.list() if e.regular}
    outputs: dict[str, str] = {}
    pending, maybe_done = [], []
    for e in image_entries:
        source, out = src.show(e.name), output_name(e.name, plan.fmt)
        if out in outputs:
            table.add(_row(source, "failed", error=f"{source}: its output {dst.show(out)} is also the output of "
                                                  f"{outputs[out]}; rename one of them or run them separately"))
            continue
        outputs[out] = source
        if not e.regular:
            table.add(_row(source, "failed", error=src.why_unreadable(e.name)))
        elif e.size is not None and e.size > max_bytes:
            table.add(_row(source, "failed", error=f"{source}: the file is {e.size / 2**20:.0f} MB, more than any "
                                                  f"image within the output limit (max_output_megapixels) can be; "
                                                  f"it was not read"))
        elif out in existing and not plan.overwrite:
            maybe_done.append(e)
        else:
            pending.append(e)
    replaced = set()
    for e, why in zip(maybe_done, _incomplete(dst, [output_name(e.name, plan.fmt) for e in maybe_done])):
        out = output_name(e.name, plan.fmt)
        if why is None:
            table.add(_row(src.show(e.name), "skipped", output=dst.show(out),
                           error="a complete output is there (an earlier run's)"))
        else:
            log.warning("%s is incomplete (%s); it is redone", dst.show(out), why)
            dst.remove(out)
            replaced.add(src.show(e.name))
            pending.append(e)

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: if that node goes, the run has gone with it anyway.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ledger = ray.remote(num_cpus=0, scheduling_strategy=here)(_Ledger).remote()
    plan = _replace(plan, ledger=ledger)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ray_seconds, attempt, error, interrupted, failed_job = 0.0, 0, None, None, False
    names = [e.name for e in pending]
    try:
        while names and attempt < attempts and interrupted is None:
            attempt += 1
            before = time.perf_counter()
            try:
                for row in _execute(ray, src, plan, names, size, cpus, gpus, batch_size):
                    if row["input"] in replaced:
                        row["note"] = "; ".join(n for n in (row["note"], "an incomplete output was replaced") if n)
                    table.add(row)
                failed_job = False
            except KeyboardInterrupt as exc:  # Ctrl+C, or SIGTERM as the CLI turns it: the table is still written
                interrupted = exc
                failed_job = True
            except Exception as exc:  # a job failure (an actor killed for good, a lost node): run again
                error = " ".join(str(exc).split())[-500:] or type(exc).__name__
                log.warning("the Ray execution (attempt %d of %d) failed: %s", attempt, attempts, error, exc_info=True)
                failed_job = True
            ray_seconds += time.perf_counter() - before
            names = [n for n in names if src.show(n) not in table.finished]
            if not failed_job:
                break  # a clean execution that left inputs without a row: Ray could not read them (vanished)
    finally:
        ray.kill(ledger)  # its counts matter only while this run's executions go

    for n in names:
        source = src.show(n)
        if interrupted is not None:
            table.add(_row(source, "interrupted", error="the run was stopped before it; run again to resume"))
        elif failed_job:  # the last execution failed too
            table.add(_row(source, "failed", error=f"{source}: not finished: the Ray job failed {attempt} times "
                                                  f"(last: {error}); run again to resume"))
        else:
            table.add(_row(source, "failed", error=f"{source}: listed but not read (it vanished or became "
                                                  f"unreadable during the run)"))
    dst.remove_temporaries(set(outputs), {e.name for e in dst.list() if e.regular})
    results, parquet = table.publish()
    counts = table.counts()
    run = DatasetRun(src=src.display, dst=dst.display, done=counts["done"], skipped=counts["skipped"],
                     failed=counts["failed"], interrupted=counts["interrupted"],
                     seconds=time.perf_counter() - start,
                     images_per_second=counts["done"] / ray_seconds if ray_seconds else 0.0, engine=engine,
                     results=results, results_parquet=parquet, address=_address(ray), workers=size,
                     attempts=attempt, error=error, duplicates=table.duplicates, _dst_store=dst)
    if interrupted is not None:
        interrupted.run = run
        raise interrupted
    return run


def _replace(plan: _Plan, **changes) -> _Plan:
    from dataclasses import replace

    return replace(plan, **changes)


def _pool_size(workers, resources, cpus, gpus) -> tuple[int, int]:
    if workers is not None:
        return (workers, workers) if isinstance(workers, int) else tuple(workers)
    room = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 0) / cpus if cpus else 1
    return 1, max(1, int(room + 1e-9))


def _max_input_bytes(max_output_megapixels: float, scale: int) -> int:
    """The largest file any input within the output limit can be (the header check's own bound, at 16-bit RGBA):
    a larger one is refused from its listed size, never read into the object store."""
    pixels = max_output_megapixels * 1e6 / (scale * scale)
    return int(4 * pixels * 4 * 2 + EXTRA_BYTES_ALLOWED)


def _probe(ray, plan: _Plan, cpus: float, gpus: float) -> dict:
    """Open the engine once on a worker with an actor's resources: a bad profile, model or precision is one clear
    error before any image is read, and the summary says what the workers run."""
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_open_and_describe).remote(plan)
    try:
        return ray.get(task, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if exc.cause is not None else exc
        text = " ".join(str(cause).split())
        if isinstance(cause, MambaESRError):
            raise type(cause)(text) if type(cause).__init__ is Exception.__init__ else MambaESRError(text) from None
        raise MambaESRError(f"the workers cannot open the engine: {type(cause).__name__}: {text[-500:]}") from None
    except ray.exceptions.GetTimeoutError:
        ray.cancel(task, force=True)
        raise MambaESRError(f"no worker could start within {PROBE_TIMEOUT_S} s: the cluster has no node with "
                            f"{cpus:g} free CPUs and {gpus:g} GPUs (cpus_per_worker, gpus_per_worker)") from None


def _open_and_describe(plan: _Plan) -> dict:
    from .runtime.upscaler import Upscaler

    with Upscaler(plan.profile, **plan.upscaler) as up:
        return up.summary()


def _address(ray) -> str:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - only for the report
        return "unknown"


def _execute(ray, src, plan: _Plan, names: list[str], size, cpus, gpus, batch_size) -> Iterator[dict]:
    """One Ray Data execution over ``names``: the rows its workers return, as they come."""
    # Reads ask for no CPU: they wait on storage, and a pool holding every CPU must not starve its own input.
    # (Ray < 2.4x takes it in ray_remote_args, which later releases deprecate.)
    no_cpu = {"num_cpus": 0} if "num_cpus" in inspect.signature(ray.data.read_binary_files).parameters else \
        {"ray_remote_args": {"num_cpus": 0}}
    ds = ray.data.read_binary_files([src.ray_path(n) for n in names], include_paths=True,
                                    filesystem=src.ray_filesystem(), ignore_missing_paths=True, **no_cpu)
    ds = ds.map_batches(_Worker, fn_constructor_args=(plan,), batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1]), num_cpus=cpus,
                        num_gpus=gpus or None)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield from batch.to_pylist()


class _Ledger:
    """How many times each image has started on a worker (only images in flight are kept): an image that killed
    its worker ``max_starts`` times is failed instead of run again (Ray would retry it forever)."""

    def __init__(self):
        self.starts: dict[str, int] = {}

    def start(self, name: str) -> int:
        self.starts[name] = self.starts.get(name, 0) + 1
        return self.starts[name]

    def finish(self, name: str) -> None:
        self.starts.pop(name, None)


class _Worker:
    """One Ray actor: one Upscaler for its lifetime; a batch of (path, bytes) in, its rows out."""

    def __init__(self, plan: _Plan):
        from .runtime.upscaler import Upscaler

        self.plan = plan
        self.upscaler = Upscaler(plan.profile, **plan.upscaler)
        self.engine = _engine_label(self.upscaler.summary())
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch):
        import pyarrow as pa

        rows = [self._one(posixpath.basename(path), data)
                for path, data in zip(batch.column("path").to_pylist(), batch.column("bytes").to_pylist())]
        return pa.Table.from_pylist(rows, schema=_schema())

    def _one(self, name: str, data: bytes) -> dict:
        import ray

        plan = self.plan
        source, out = plan.src.show(name), output_name(name, plan.fmt)
        target = plan.dst.show(out)
        try:
            starts = ray.get(plan.ledger.start.remote(name))
        except ray.exceptions.RayActorError:  # the ledger is gone (the run is ending): no crash count, still run
            starts = 1
        if starts > plan.max_starts:
            return _row(source, "failed", error=f"{source}: its worker died each of the {starts - 1} times it ran "
                                                f"this image (a crash in the decoder or the engine, or a kill); it "
                                                f"is not run again", worker=self.worker)
        if plan.hook is not None:
            plan.hook("start", source)
        began = time.perf_counter()
        try:
            if not plan.overwrite and plan.dst.exists(out):
                raise OutputExistsError(target)
            encoded = self.upscaler.upscale_encoded(data, source, target, quality=plan.quality,
                                                    strip_metadata=plan.strip_metadata)
            plan.dst.publish(out, encoded, plan.overwrite)
        except OutputExistsError:
            plan.ledger.finish.remote(name)
            return _row(source, "done", output=target, note=EARLIER, worker=self.worker)
        except Exception as exc:  # noqa: BLE001 - one bad image is its row, never the job's failure
            plan.ledger.finish.remote(name)
            return _row(source, "failed", engine=self.engine, seconds=time.perf_counter() - began,
                        error=describe_failure(source, exc), worker=self.worker)
        seconds = time.perf_counter() - began
        if plan.hook is not None:
            plan.hook("published", source)
        plan.ledger.finish.remote(name)
        return _row(source, "done", output=target, engine=self.engine, seconds=seconds, worker=self.worker)


def _engine_label(summary: dict) -> str:
    return (f"{summary['backend']} {Path(summary['engine']).name} {summary['precision']} (profile "
            f"{summary['profile']}, tier {summary['tier']})")


def _row(source: str, status: str, *, output: str | None = None, engine: str | None = None,
         seconds: float | None = None, error: str | None = None, note: str | None = None,
         worker: str | None = None) -> dict:
    return {"input": source, "output": output, "status": status, "engine": engine,
            "seconds": None if seconds is None else round(seconds, 4), "error": error, "note": note,
            "worker": worker}


def _schema():
    import pyarrow as pa

    return pa.schema([(name, pa.float64() if name == "seconds" else pa.string()) for name in RESULT_COLUMNS])


class _Table:
    """The results table as it fills: rows spooled to a local file (a million rows need not sit in memory), one
    final row per input (a second one is dropped and counted), published next to the outputs at the end."""

    def __init__(self, dst):
        self.dst = dst
        self.finished: set[str] = set()
        self.rows = 0
        self.duplicates = 0
        self._counts = {"done": 0, "skipped": 0, "failed": 0, "interrupted": 0}
        fd, self.spool = tempfile.mkstemp(prefix="mambaesr-results-", suffix=".jsonl")
        self._fh = os.fdopen(fd, "w", encoding="utf-8")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.name = f"mambaesr-results-{stamp}-{secrets.token_hex(3)}"

    def add(self, row: dict) -> None:
        if row["input"] in self.finished:
            self.duplicates += 1
            log.warning("a second final row for %s was dropped (%s)", row["input"], row["status"])
            return
        self.finished.add(row["input"])
        self.rows += 1
        self._counts[row["status"]] += 1
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def counts(self) -> dict:
        return dict(self._counts)

    def publish(self) -> tuple[str, str | None]:
        self._fh.close()
        jsonl = self.dst.put_file(self.name + ".jsonl", self.spool)
        try:
            import pyarrow.json as pj
            import pyarrow.parquet as pq
        except ImportError:
            return jsonl, None
        table = pj.read_json(self.spool, parse_options=pj.ParseOptions(explicit_schema=_schema())) if self.rows \
            else _schema().empty_table()
        fd, local = tempfile.mkstemp(prefix="mambaesr-results-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table, local)
            return jsonl, self.dst.put_file(self.name + ".parquet", local)
        finally:
            os.unlink(local)

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if os.path.exists(self.spool):
            os.unlink(self.spool)


def _incomplete(dst, names: list[str]) -> list[str | None]:
    """For each existing output, why it is incomplete (its format's end is missing), or None when complete. Read
    in parallel: a resume checks every output the earlier runs wrote (two small reads each)."""
    if not names:
        return []
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda n: _why_incomplete(n, *dst.ends(n)), names))


def _why_incomplete(name: str, size: int, head: bytes, tail: bytes) -> str | None:
    suffix = os.path.splitext(name)[1].lower()
    if size == 0:
        return "empty"
    if suffix == ".png" and not tail.endswith(b"IEND\xaeB`\x82"):
        return "no PNG IEND chunk at its end"
    if suffix in (".jpg", ".jpeg") and not tail.endswith(b"\xff\xd9"):
        return "no JPEG end-of-image marker"
    if suffix == ".webp" and (head[:4] != b"RIFF" or 8 + int.from_bytes(head[4:8], "little") > size):
        return "shorter than its RIFF header says"
    if suffix == ".bmp" and (head[:2] != b"BM" or int.from_bytes(head[2:6], "little") > size):
        return "shorter than its BMP header says"
    if suffix in (".tif", ".tiff") and head[:4] not in (b"II*\x00", b"MM\x00*"):
        return "no TIFF header"
    return None


# -- storage ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    name: str
    size: int | None
    regular: bool


def _store(location: str | os.PathLike, filesystem, what: str):
    text = os.fspath(location)
    if filesystem is not None:
        return _ArrowStore(_as_arrow(filesystem), text.rstrip("/") or "/", text)
    if "://" not in text:
        return _LocalStore(text)
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:
        raise DependencyError(f"{what} {text} is a URI, which needs pyarrow (pip install 'mambaesr-runtime[ray]')") \
            from exc
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as arrow_exc:  # pyarrow's ArrowInvalid is a ValueError
        fs, path = _from_fsspec(text, what, arrow_exc)
    if isinstance(fs, pafs.LocalFileSystem):
        return _LocalStore(path)
    return _ArrowStore(fs, path.rstrip("/") or "/", text)


def _from_fsspec(text: str, what: str, arrow_exc: Exception):
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError:
        raise MambaESRError(f"{what} {text}: pyarrow cannot open this URI ({arrow_exc}) and fsspec is not installed; "
                            f"give a local path or an s3://, gs://, hdfs://, abfs:// or file:// URI") from None
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError, OSError) as exc:
        raise MambaESRError(f"{what} {text}: neither pyarrow ({arrow_exc}) nor fsspec ({exc}) can open this URI; "
                            f"give a local path or an s3://, gs://, hdfs://, abfs:// or file:// URI") from None
    return PyFileSystem(FSSpecHandler(fs)), path


def _as_arrow(filesystem):
    import pyarrow.fs as pafs

    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))  # an fsspec filesystem


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


class _LocalStore:
    """A local folder (or one every node mounts at the same path: NFS, a cluster filesystem)."""

    def __init__(self, root: str):
        self.display = root.rstrip("/") or "/"
        self.root = os.path.abspath(root)

    def show(self, name: str) -> str:
        return os.path.join(self.display, name)

    def same_place(self, other) -> bool:
        return isinstance(other, _LocalStore) and os.path.realpath(self.root) == os.path.realpath(other.root)

    def require_folder(self) -> None:
        if os.path.isdir(self.root):
            return
        problem = "is a file: --ray takes a folder (run one image without --ray)" if os.path.lexists(self.root) \
            else "no such folder"
        raise MambaESRError(f"SRC {self.display}: {problem}")

    def make_folder(self) -> None:
        if os.path.lexists(self.root) and not os.path.isdir(self.root):
            raise MambaESRError(f"DST {self.display} is a file; give a folder for the outputs")
        os.makedirs(self.root, exist_ok=True)

    def list(self) -> list[_Entry]:
        entries = []
        with os.scandir(self.root) as it:
            for e in it:
                if is_temporary(e.name):
                    continue  # a killed writer's half file: never an input, never an output
                try:
                    if e.is_dir():
                        continue
                    regular = e.is_file()
                    size = e.stat().st_size if regular else None
                except OSError:
                    regular, size = False, None
                entries.append(_Entry(e.name, size, regular))
        return sorted(entries, key=lambda e: e.name)

    def why_unreadable(self, name: str) -> str:
        from .runtime.imageheader import read_header

        try:
            read_header(self.show(name))
        except MambaESRError as exc:
            return str(exc)
        return f"{self.show(name)}: not a regular file"

    def ray_path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def ray_filesystem(self):
        return None

    def exists(self, name: str) -> bool:
        return os.path.lexists(os.path.join(self.root, name))

    def ends(self, name: str, n: int = 16) -> tuple[int, bytes, bytes]:
        with open(os.path.join(self.root, name), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(n)
            fh.seek(max(0, size - n))
            return size, head, fh.read(n)

    def publish(self, name: str, data: bytes, overwrite: bool) -> None:
        path = os.path.join(self.root, name)
        try:
            atomic_write(path, lambda tmp: _write_bytes(tmp, data), suffix=os.path.splitext(name)[1].lower(),
                         overwrite=overwrite)
        except FileExistsError as exc:
            raise OutputExistsError(f"{path} exists") from exc

    def put_file(self, name: str, local: str) -> str:
        path = os.path.join(self.root, name)
        atomic_write(path, lambda tmp: shutil.copyfile(local, tmp), suffix=os.path.splitext(name)[1])
        return os.path.join(self.display, name)

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.root, name), "rb") as fh:
            return fh.read()

    def remove(self, name: str) -> None:
        os.unlink(os.path.join(self.root, name))

    def remove_temporaries(self, outputs: set[str], present: set[str]) -> None:
        for e in os.scandir(self.root):
            target = _temporary_target(e.name)
            if target in outputs and target in present:
                with _quietly():
                    os.unlink(e.path)


class _ArrowStore:
    """A folder on a pyarrow filesystem (S3, GCS, HDFS, Azure, or fsspec's through pyarrow's handler)."""

    def __init__(self, fs, root: str, display: str):
        self.fs, self.root, self.display = fs, root, display.rstrip("/")
        self.object_store = fs.type_name in _OBJECT_STORES

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root != "/" else f"/{name}"

    def show(self, name: str) -> str:
        return f"{self.display}/{name}"

    def same_place(self, other) -> bool:
        return isinstance(other, _ArrowStore) and other.fs.equals(self.fs) and other.root == self.root

    def _type(self, path: str):
        return self.fs.get_file_info(path).type

    def require_folder(self) -> None:
        import pyarrow.fs as pafs

        kind = self._type(self.root)
        if kind != pafs.FileType.Directory:
            problem = "is a file: --ray takes a folder" if kind == pafs.FileType.File else "no such folder"
            raise MambaESRError(f"SRC {self.display}: {problem}")

    def make_folder(self) -> None:
        import pyarrow.fs as pafs

        if self._type(self.root) == pafs.FileType.File:
            raise MambaESRError(f"DST {self.display} is a file; give a folder for the outputs")
        self.fs.create_dir(self.root, recursive=True)

    def list(self) -> list[_Entry]:
        import pyarrow.fs as pafs

        entries = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False, allow_not_found=True)):
            if is_temporary(info.base_name) or info.type == pafs.FileType.Directory:
                continue
            regular = info.type == pafs.FileType.File
            entries.append(_Entry(info.base_name, info.size if regular else None, regular))
        return sorted(entries, key=lambda e: e.name)

    def why_unreadable(self, name: str) -> str:
        return f"{self.show(name)}: not a regular file"

    def ray_path(self, name: str) -> str:
        return self._path(name)

    def ray_filesystem(self):
        return self.fs

    def exists(self, name: str) -> bool:
        import pyarrow.fs as pafs

        return self._type(self._path(name)) != pafs.FileType.NotFound

    def ends(self, name: str, n: int = 16) -> tuple[int, bytes, bytes]:
        with self.fs.open_input_file(self._path(name)) as fh:
            size = fh.size()
            return size, fh.read_at(min(n, size), 0), fh.read_at(min(n, size), max(0, size - n))

    def _upload(self, path: str, write) -> None:
        with self.fs.open_output_stream(path) as fh:
            write(fh)

    def publish(self, name: str, data: bytes, overwrite: bool) -> None:
        self._put(name, lambda fh: fh.write(data), overwrite)

    def _put(self, name: str, write, overwrite: bool) -> None:
        path = self._path(name)
        if not overwrite and self.exists(name):
            raise OutputExistsError(f"{self.show(name)} exists")
        if self.object_store:
            self._upload(path, write)  # an object appears whole when its upload completes
            return
        suffix = os.path.splitext(name)[1]
        tmp = self._path(f".{name}.{secrets.token_hex(4)}{suffix.lower()}")
        try:
            self._upload(tmp, write)
            if not overwrite and self.exists(name):  # check-then-rename: not exclusive under a race
                raise OutputExistsError(f"{self.show(name)} exists")
            self.fs.move(tmp, path)
        finally:
            with _quietly():
                self.fs.delete_file(tmp)

    def put_file(self, name: str, local: str) -> str:
        def copy(fh):
            with open(local, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

        self._put(name, copy, overwrite=True)
        return self.show(name)

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as fh:
            return fh.read()

    def remove(self, name: str) -> None:
        self.fs.delete_file(self._path(name))

    def remove_temporaries(self, outputs: set[str], present: set[str]) -> None:
        import pyarrow.fs as pafs

        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False, allow_not_found=True)):
            target = _temporary_target(info.base_name)
            if target in outputs and target in present:
                with _quietly():
                    self.fs.delete_file(info.path)


def _temporary_target(name: str) -> str | None:
    """The output a temporary ``.<target>.<random><suffix>`` was going to become, or None for other names."""
    if not is_temporary(name):
        return None
    stem = name[1:]
    suffix = os.path.splitext(stem)[1]
    stem = stem[:-len(suffix)] if suffix else stem
    return stem.rsplit(".", 1)[0]


class _quietly:
    """Best-effort cleanup: a file another process removed first is fine."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, OSError)
