"""The embeddable upscaler: image in, image out, through a profile's engines on overlapped, blended tiles.

    from mambaesr_runtime import Upscaler
    with Upscaler() as up:                        # profile "cpu": the shipped student on ONNX Runtime
        big = up.upscale(cv2.imread("in.png", cv2.IMREAD_UNCHANGED))
    with Upscaler("orin") as up:                  # TensorRT plans from engines/orin/, else ONNX Runtime
        for frame in up.stream(frames):           # frames: BGR uint8 arrays, e.g. from cv2.VideoCapture
            ...

Thread safety: one instance can serve several threads. ``upscale`` keeps no per-call state on the instance (tiles
and accumulators live in the call); the table of open engines and the current tier are guarded by a lock; an image
holds the engine it started on until it is done, so a tier switch (``use_tier``, or the adaptive controller inside
``stream``) by another thread takes effect from the next image, and an engine evicted by ``max_open_engines`` (or the
upscaler's ``close``) is closed only once the last image running on it has finished. The engines themselves serialise
or tolerate concurrent calls (ONNX Runtime sessions are thread-safe; the TensorRT and torch backends hold a lock).
The library logs; it never prints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..artifacts.manifest import manifest_path, read_manifest
from ..artifacts.names import backend_for, engine_name, shipped_dir
from ..errors import BackendError, ConfigError, MambaESRError
from ..geometry import check_tiling
from ..profiles import DeviceProfile, Tier, check_threads, load_profile
from .engines import ORT_PRECISIONS, EngineSelection, interior_twin, open_backend, open_engine, with_overrides
from .imageio import (
    check_format,
    check_output,
    check_quality,
    decode,
    encode_alpha,
    encode_image,
    encode_rows,
    inspect_bytes,
    inspect_image,
    output_array,
    photo_of_bytes,
    read_photo,
    resize_output,
    write_image,
)
from .memory import ENGINE_FIXED_BYTES, MB, MemoryEstimate, default_limit, engine_bytes, estimate_memory
from .tiling import NonFiniteOutput, upscale_tiled

log = logging.getLogger(__name__)

def shipped_model(name: str | None = None) -> Path:
    """A file of the shipped weights folder; by default the ``cpu`` profile's default engine (the student's ONNX
    for that profile's first tier)."""
    if name is None:
        tier = load_profile("cpu").tiers[0]
        name = engine_name("onnxruntime", tier.variant, 4, tier.tile, tier.batch)  # the weights ship as x4
    path = shipped_dir() / name
    if not path.is_file():
        raise MambaESRError(f"shipped model {name} is missing from {path.parent}; reinstall the package, or run an "
                            f"exported ONNX file as model=FILE")
    return path


def _check_file_precision(path: Path, kind: str, asked: str, profile: str) -> None:
    """An engine file computes in the precision it was made in (its manifest says which): asking for another is
    refused before it is opened, not silently run as what it is."""
    made = None
    if manifest_path(path).is_file():
        try:
            made = read_manifest(path).precision
        except Exception:  # noqa: BLE001 - a malformed manifest is the backend's to report, with its own message
            return
    if made == asked or (made is None and (kind != "onnxruntime" or asked in ORT_PRECISIONS)):
        return  # no manifest: an ONNX file's types cannot be known before it is loaded; fp32 and int8 both run
    fix = {"fp16": f"for fp16, build a TensorRT plan on the device (mambaesr-export --device {profile} --precision "
                   f"fp16) and pass that .plan",
           "int8": f"for int8, export the int8 QDQ graph (mambaesr-export --device {profile} --precision int8) and "
                   f"pass its _int8.onnx file",
           "fp32": "for fp32, pass the fp32 export (the .onnx file without _int8 or _fp16 in its name)"}[asked]
    what = (f"an {made} engine (its manifest says so) and computes in {made} on {kind}" if made is not None else
            "an ONNX graph, which ONNX Runtime runs in the types it was made in (an exported MambaESR graph is fp32; "
            "no manifest beside it says otherwise) and never converts to fp16")
    raise ConfigError(f"{path.name} is {what}: precision={asked} cannot change that; {fix}, or leave out "
                      f"precision={asked} to run it as it is")


class Upscaler:
    """Upscales images through the engines of a device profile's tiers.

    ``profile``: a built-in name (``cpu``, ``orin``, ``rpi5``...), a YAML path or a :class:`DeviceProfile`.
    ``tier``: the tier to start on (default: the profile's first, heaviest). ``backend``: force one backend
    (``tensorrt``, ``onnxruntime``, ``torch``) instead of the profile's order with fallbacks. ``model``: run this one
    engine file instead (``.onnx``, ``.plan`` or a ``.safetensors`` checkpoint for the torch backend); an ONNX file
    with dynamic height and width (any x2/x3/x4 super-resolution model) runs on tiles of the profile's tile size (or
    ``tile``), its scale found by one probe run. ``tile``/``overlap``: override the tier's (LR pixels; a tile size
    needs its own exported engine; default overlap for ``model``: the profile's first tier's). ``scale``: the
    upscaling factor the engine must have (``None``: the engine's). ``precision``: override the profile's (engines
    must exist for it). ``engines_dir``: where exported engines are (default ``./engines/<profile>``, then the shipped
    ones). ``max_output_megapixels``: larger outputs are refused up front with the memory they would need.
    ``max_memory_mb``: an image (or an engine's tile) whose estimated working memory (:mod:`.memory`: the engine,
    the decoded image, the output, the blend, encoding) is above it is refused up front, before any decode or model
    run (default: the smaller of 4096 MB and 90 % of the memory available at construction).
    ``controller``: an adaptive tier controller consulted by ``stream``. ``max_open_engines``: engines kept open
    (warm) at once (default: one per tier); opening another closes the least recently used one (once no image runs on
    it), so a device short of memory keeps only the tiers it is moving between. ``outscale``: the factor of the
    output (default: the engine's scale); the engine runs at its own scale and the result is resized (area
    averaging down, Lanczos up). Any factor up to the engine's is real super-resolution then downsampled; above it,
    the rest is a plain resize (logged as a warning).
    """

    def __init__(self, profile: str | os.PathLike | DeviceProfile = "cpu", *, model: str | os.PathLike | None = None,
                 tier: str | None = None, backend: str | None = None, tile: int | None = None,
                 overlap: int | None = None, precision: str | None = None, scale: int | None = None,
                 engines_dir: str | os.PathLike | None = None, threads: int | None = None,
                 max_output_megapixels: float = 100.0, controller=None, max_open_engines: int | None = None,
                 outscale: float | None = None, max_memory_mb: float | None = None):
        # Arguments first: a bad number must be an error here, not a crash inside an engine library later.
        if threads is not None:
            check_threads(threads)
        if isinstance(max_output_megapixels, bool) or not isinstance(max_output_megapixels, (int, float)) or \
                not math.isfinite(max_output_megapixels) or max_output_megapixels <= 0:
            raise ConfigError(f"max_output_megapixels must be a positive number, got {max_output_megapixels!r}")
        if max_memory_mb is not None and (isinstance(max_memory_mb, bool) or not isinstance(
                max_memory_mb, (int, float)) or not math.isfinite(max_memory_mb) or max_memory_mb <= 0):
            raise ConfigError(f"max_memory_mb must be a positive number of MB, got {max_memory_mb!r}")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
            raise ConfigError(f"scale must be a positive integer, got {scale!r}")
        if outscale is not None and (isinstance(outscale, bool) or not isinstance(outscale, (int, float)) or
                                     not math.isfinite(outscale) or outscale <= 0):
            raise ConfigError(f"outscale must be a positive number (e.g. 2 from an x4 engine), got {outscale!r}")
        if max_open_engines is not None and max_open_engines < 1:
            raise ConfigError(f"max_open_engines must be >= 1, got {max_open_engines}")
        self.profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
        self._backend, self._precision, self._engines_dir, self._threads = backend, precision, engines_dir, threads
        self._tile, self._overlap, self._scale = tile, overlap, scale
        self.max_output_megapixels = max_output_megapixels
        # Taken before any engine is opened: the estimates count the engines themselves.
        self.max_memory_mb, self._memory_origin = (default_limit() if max_memory_mb is None else
                                                   (float(max_memory_mb), "max_memory_mb"))
        self.controller = controller
        self.max_open_engines = max_open_engines
        self.outscale = None if outscale is None else float(outscale)
        # Guards _engines, _users, _retired and tier. Opening an engine happens under it too (a load blocks the
        # other threads' next image, never one already running).
        self._lock = threading.RLock()
        self._engines: dict[str, EngineSelection] | None = {}  # in order of use: the last one is the most recent
        self._users: dict[int, int] = {}  # id(backend) -> images running on it now
        self._retired: dict[int, EngineSelection] = {}  # evicted or closed while in use: closed by the last user
        self._twins: dict[int, object] = {}  # id(backend) -> its mask-free twin, opened on first use (or None)
        self._ran: set[int] = set()  # id(backend) of the engines (and twins) that have run an image
        if model is not None:
            self._engines["model"] = self._fits(self._open_model(Path(model)))
            self.tiers = (self._engines["model"].tier,)
        else:
            self.tiers = tuple(with_overrides(t, tile, overlap) for t in self.profile.tiers)
        self.tier = self.tiers[0].name if tier is None else self._tier(tier).name
        self._engine()  # open the starting tier now: a missing engine is an error at construction, not mid-stream
        if self.outscale is not None and self.outscale > self.scale:
            log.warning("outscale %g is above the engine's x%d: the step from x%d to x%g is a Lanczos resize, "
                        "not super-resolution", self.outscale, self.scale, self.scale, self.outscale)
        log.debug("upscaler: %s", self.describe())  # the CLI prints it with -v

    # -- engines -----------------------------------------------------------------------------------------------
    def _tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise ConfigError(f"profile {self.profile.name!r} has no tier {name!r}; its tiers are "
                          f"{[t.name for t in self.tiers]}")

    def _open_model(self, path: Path) -> EngineSelection:
        kind = backend_for(path)
        if self._backend is not None and self._backend != kind:
            raise ConfigError(f"{path.name} is a {kind} artifact; it cannot run on backend {self._backend}")
        if not path.is_file():
            raise MambaESRError(f"engine file {path} not found; export one with mambaesr-export or pass another path")
        if self._precision is not None and kind != "torch":
            _check_file_precision(path, kind, self._precision, self.profile.name)
        base = self.profile.tiers[0]
        overlap = self._overlap if self._overlap is not None else base.overlap
        # The tier's shape is what the torch backend and a dynamic-shape ONNX file run at; a static engine file
        # carries its own.
        shape = with_overrides(Tier("model", base.variant, base.tile, base.overlap, base.batch), self._tile, overlap)
        engine = open_backend(kind, path, shape, self.profile, self._precision or "fp32", self._threads)
        try:
            n, _, th, tw = engine.input_shape
            check_tiling((th, tw), overlap, where=f"{path.name} ({th}x{tw} tiles)")
            if self._tile is not None and self._tile != th and kind != "torch" and not engine.dynamic:
                raise ConfigError(f"{path.name} takes {th}x{tw} tiles; tile {self._tile} needs an engine exported "
                                  f"for it (a profile YAML whose tier has tile {self._tile}, exported with "
                                  f"mambaesr-export --profile)")
            if self._scale is not None and engine.scale != self._scale:
                raise ConfigError(f"{path.name} upscales x{engine.scale}, not the x{self._scale} asked for")
        except BaseException:
            engine.close()
            raise
        manifest = getattr(engine, "manifest", None)
        variant = manifest.variant if manifest is not None else "unknown"
        # an engine file computes in what it was made in (an int8 QDQ ONNX: int8), whatever the caller assumed
        precision = manifest.precision if manifest is not None and kind != "torch" else self._precision or "fp32"
        return EngineSelection(engine, kind, path, Tier("model", variant, th, overlap, n), precision, (),
                               interior_twin(kind, path))

    def _fits(self, selection: EngineSelection) -> EngineSelection:
        """``selection``, or (closed) a :class:`ConfigError` when its tile alone, for any image, would need more
        working memory than ``max_memory_mb``: refused before it runs on an image (a dynamic-shape ONNX file has run
        only its small probe)."""
        estimate = self._estimate(1, 1, selection)
        if estimate.mb > self.max_memory_mb:
            self._close(selection)
            n, _, th, tw = selection.backend.input_shape
            fix = (f"give a smaller tile (e.g. tile={min(self.profile.tiers[0].tile, th // 2)})"
                   if selection.backend.dynamic else
                   "choose an engine with a smaller tile or batch (another tier or profile)")
            raise ConfigError(f"{selection.path.name} ({selection.kind}, {th}x{tw} tiles, batch {n}) needs "
                              f"{estimate.describe()} of working memory for any image, above the "
                              f"{self.max_memory_mb:.0f} MB limit ({self._memory_origin}); {fix}, or raise the limit "
                              f"(max_memory_mb)")
        return selection

    def _estimate(self, h: int, w: int, sel: EngineSelection, channels: int = 3, itemsize: int = 1,
                  suffix: str | None = None, file_bytes: int = 0, blend: bool = True,
                  engines: EngineSelection | None = None) -> MemoryEstimate:
        """The estimate of an image run on ``sel``, with the engines of ``engines`` (default ``sel``: a tier's
        engine and its small-image engine, both held open) resident."""
        backend = sel.backend
        n, _, th, tw = backend.input_shape
        size = None if self.outscale is None else self._output_size(h, w, backend.scale)
        held = engines or sel
        resident = sum(engine_bytes(e.backend, e.tier.variant, e.precision) for e in (held, held.small) if e)
        # A mask-free twin is as large as its engine. ONNX Runtime grows a session's working memory on its first
        # run, so an engine loaded but never run holds only its fixed part.
        main = engine_bytes(sel.backend, sel.tier.variant, sel.precision)
        twin = self._twins.get(id(sel.backend))
        if sel.interior is not None and h >= th and w >= tw:  # this image runs on the twin (counted as the engine
            # above), beside the engine itself: its fixed part, or all of it once it has run an image
            resident += main if id(sel.backend) in self._ran else ENGINE_FIXED_BYTES
        elif twin is not None and id(twin) in self._ran:  # the twin ran an earlier image and keeps its memory
            resident += main
        return estimate_memory(h, w, scale=backend.scale, tile=(th, tw), overlap=sel.tier.overlap, batch=n,
                               engine=resident, channels=channels, itemsize=itemsize, out_size=size, suffix=suffix,
                               file_bytes=file_bytes, blend=blend)

    def memory_estimate(self, h: int, w: int, channels: int = 3, sixteen_bit: bool = False,
                        suffix: str | None = None, file_bytes: int = 0) -> MemoryEstimate:
        """The estimated peak working memory (:mod:`.memory`) of upscaling an ``h`` x ``w`` image of ``channels``
        (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) on the current tier, encoded as ``suffix`` (``None``: returned as an
        array) from a file of ``file_bytes``; compared with ``max_memory_mb`` by every upscale."""
        return self._estimate(h, w, self.engine, channels, 2 if sixteen_bit else 1, suffix, file_bytes)

    def _engine(self, name: str | None = None) -> EngineSelection:
        """The engine of tier ``name`` (default: the current one), opened if needed, now the most recently used."""
        with self._lock:
            if self._engines is None:
                raise MambaESRError("this Upscaler is closed; create a new one")
            name = name or self.tier
            if name in self._engines:
                self._engines[name] = self._engines.pop(name)
                return self._engines[name]
            selection = self._fits(self._with_small(open_engine(
                self.profile, self._tier(name), self._backend, self._precision, self._engines_dir, self._threads,
                self._scale)))
            limit = self.max_open_engines
            while limit is not None and len(self._engines) >= limit:
                oldest = next(iter(self._engines))
                log.info("closing the engine of tier %s (max_open_engines=%d)", oldest, limit)
                self._release(self._engines.pop(oldest))
            self._engines[name] = selection
            return selection

    def _with_small(self, selection: EngineSelection) -> EngineSelection:
        """``selection`` with its tier's small-image engine (``small_tile``) opened beside it on the same backend,
        when the tier has one and the engine is pad-aware (a reflected tile's result depends on its size)."""
        small = selection.tier.small()
        if small is None:
            return selection
        if selection.backend.pad_value is None:
            log.info("tier %s: %s is not pad-aware; small images take a whole tile", selection.tier.name,
                     selection.path.name)
            return selection
        try:
            try:
                opened = open_engine(self.profile, small, selection.kind, selection.precision, self._engines_dir,
                                     self._threads, selection.backend.scale)
            except BackendError as exc:
                if self._precision is None or self._precision == selection.tier.precision_in(self.profile):
                    raise  # the profile promises this engine: missing, it is an error like the tier's own
                log.info("tier %s: no small-image engine in %s (%s); small images take a whole tile",
                         selection.tier.name, self._precision, exc)
                return selection
            if opened.backend.pad_value is None:
                opened.backend.close()
                raise BackendError(f"{opened.path.name} is not pad-aware, unlike {selection.path.name}; re-export "
                                   f"both with mambaesr-export --device {self.profile.name}")
        except BaseException:
            selection.backend.close()
            raise
        return dataclasses.replace(selection, small=opened)

    def _release(self, selection: EngineSelection) -> None:
        """Close an engine no longer in the table, or leave that to the last image still running on it."""
        key = id(selection.backend)
        if self._users.get(key):
            self._retired[key] = selection
        else:
            self._close(selection)

    def _close(self, selection: EngineSelection) -> None:
        """Close a tier's engine, its small-image engine and the mask-free twins opened for either (the one place
        engines are closed)."""
        for backend in [selection.backend] + ([selection.small.backend] if selection.small is not None else []):
            for engine in (self._twins.pop(id(backend), None), backend):
                if engine is not None:
                    self._ran.discard(id(engine))
                    engine.close()

    def _backend_for(self, sel: EngineSelection, h: int, w: int):
        """The backend that runs an ``h`` x ``w`` image on ``sel``: its mask-free twin when the image covers a whole
        tile (no tile then holds padding, and the twin computes the same without the masks), else the engine."""
        th, tw = sel.backend.input_shape[2:]
        if sel.interior is None or h < th or w < tw:
            return sel.backend
        with self._lock:
            key = id(sel.backend)
            if key not in self._twins:
                twin = None
                try:
                    twin = open_backend(sel.kind, sel.interior, sel.tier, self.profile, sel.precision, self._threads)
                    if twin.input_shape != sel.backend.input_shape or twin.scale != sel.backend.scale:
                        raise BackendError(f"it takes {twin.input_shape} x{twin.scale}, the engine "
                                           f"{sel.backend.input_shape} x{sel.backend.scale}")
                except (MambaESRError, OSError) as exc:
                    log.warning("mask-free twin %s not used: %s", sel.interior.name, exc)
                    if twin is not None:
                        twin.close()
                    twin = None
                self._twins[key] = twin
            return self._twins[key] or sel.backend

    @contextmanager
    def _using(self):
        """The current tier's engine (with its small-image engine), held open for one image (see the module's note
        on thread safety)."""
        with self._lock:
            selection = self._engine()
            key = id(selection.backend)
            self._users[key] = self._users.get(key, 0) + 1
        try:
            yield selection
        finally:
            with self._lock:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                    retired = self._retired.pop(key, None)
                    if retired is not None:
                        self._close(retired)

    def use_tier(self, name: str) -> None:
        """Switch to tier ``name`` (its engine is opened on first use and kept warm). Images already running keep
        their engine; the next image runs on the new tier."""
        with self._lock:
            self._tier(name)
            self._engine(name)
            self.tier = name

    def warm(self, names: list[str] | None = None) -> None:
        """Open the engines of ``names`` (default: every tier) now, so a later switch costs no load time."""
        for name in names or [t.name for t in self.tiers]:
            self._engine(name)

    @property
    def engine(self) -> EngineSelection:
        return self._engine()

    @property
    def scale(self) -> int:
        return self.engine.backend.scale

    def describe(self) -> str:
        sel = self.engine
        skipped = "".join(f"; skipped {k}: {r}" for k, r in sel.skipped)
        out = "" if self.outscale is None else f"; output resized to x{self.outscale:g}"
        twin = "" if sel.interior is None else f"; images of a whole tile or more: its mask-free twin {sel.interior.name}"
        small = "" if sel.small is None else (f"; images up to {sel.small.tier.tile}x{sel.small.tier.tile}: "
                                              f"{sel.small.path.name}")
        return (f"profile {self.profile.name}, tier {sel.tier.name} ({sel.tier.variant}, tile {sel.tier.tile}, "
                f"overlap {sel.tier.overlap}, batch {sel.tier.batch}, {sel.precision}): {sel.backend.describe()}"
                f"{twin}{small}{skipped}{out}")

    def summary(self) -> dict:
        """What runs, as data (for machine-readable reports): profile, tier, variant, backend, engine file,
        precision, tile, overlap, batch, engine scale and output scale, and the small-image engine (``None``: none)
        with the largest image it takes."""
        sel = self.engine
        return {"profile": self.profile.name, "tier": sel.tier.name, "variant": sel.tier.variant,
                "backend": sel.kind, "engine": str(sel.path),
                "interior_engine": None if sel.interior is None else str(sel.interior),
                "precision": sel.precision, "tile": sel.tier.tile,
                "small_engine": None if sel.small is None else str(sel.small.path),
                "small_tile": None if sel.small is None else sel.small.tier.tile,
                "overlap": sel.tier.overlap, "batch": sel.tier.batch, "scale": self.scale,
                "outscale": self.outscale if self.outscale is not None else self.scale,
                "skipped": [{"backend": k, "reason": r} for k, r in sel.skipped]}

    # -- images ------------------------------------------------------------------------------------------------
    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) of the output of an ``h`` x ``w`` input: the engine's scale, or ``outscale`` rounded."""
        return self._output_size(h, w, self.scale)

    def _output_size(self, h: int, w: int, scale: int) -> tuple[int, int]:
        if self.outscale is None:
            return h * scale, w * scale
        return max(1, round(h * self.outscale)), max(1, round(w * self.outscale))

    def check_size(self, h: int, w: int, source: str | os.PathLike = "image", *, channels: int = 3,
                   sixteen_bit: bool = False, suffix: str | None = None, file_bytes: int = 0) -> None:
        """Refuse an ``h`` x ``w`` input (``source`` names it) whose output would pass ``max_output_megapixels``,
        or whose working memory (:meth:`memory_estimate`, the other arguments as there) would pass
        ``max_memory_mb``."""
        self._check_size(h, w, self.engine, source, channels, 2 if sixteen_bit else 1, suffix, file_bytes,
                         logging.INFO)

    def _check_size(self, h: int, w: int, sel: EngineSelection, source: str | os.PathLike, channels: int = 3,
                    itemsize: int = 1, suffix: str | None = None, file_bytes: int = 0,
                    level: int = logging.DEBUG, engines: EngineSelection | None = None) -> None:
        # The engine's output is built whole before any resize: the larger of it and the final output counts.
        scale = sel.backend.scale
        oh, ow = max((h * scale, w * scale), self._output_size(h, w, scale), key=lambda s: s[0] * s[1])
        mp = oh * ow / 1e6
        if mp > self.max_output_megapixels:
            raise MambaESRError(f"{source}: a {w}x{h} input makes a {ow}x{oh} output ({mp:.1f} MP), above the "
                                f"{self.max_output_megapixels:g} MP limit; the output alone needs "
                                f"{oh * ow * channels * itemsize / MB:.1f} MB. Raise the limit "
                                f"(max_output_megapixels) or crop")
        # Without the blend first (it walks the tile plan): an image over the limit without it is refused at once.
        estimate = self._estimate(h, w, sel, channels, itemsize, suffix, file_bytes, False, engines)
        if estimate.mb <= self.max_memory_mb:
            estimate = self._estimate(h, w, sel, channels, itemsize, suffix, file_bytes, True, engines)
        log.log(level, "%s: working memory %s (limit %.0f MB: %s)", source, estimate.describe(), self.max_memory_mb,
                self._memory_origin)
        if estimate.mb > self.max_memory_mb:
            n, _, th, tw = sel.backend.input_shape
            raise MambaESRError(f"{source}: upscaling the {w}x{h} input ({ow}x{oh} output) needs "
                                f"{estimate.describe()} of working memory, above the {self.max_memory_mb:.0f} MB "
                                f"limit ({self._memory_origin}); crop or split the image, run a tier or engine with "
                                f"smaller tiles than {th}x{tw} (batch {n}), or raise the limit (max_memory_mb)")

    def upscale(self, img: np.ndarray, progress=None, source: str | os.PathLike = "image",
                size: tuple[int, int] | None = None) -> np.ndarray:
        """An image as OpenCV reads it (gray, gray+alpha (H, W, 2), BGR or BGRA; uint8 or uint16) -> the same kind,
        ``scale`` x larger (or ``outscale`` x, or resized to ``size`` (h, w) when given: a video encoder may need
        even sides). ``source`` names the image in errors."""
        with self._using() as held:  # one engine for the whole image, whatever other threads switch to meanwhile
            sel = held
            if held.small is not None and isinstance(img, np.ndarray) and img.ndim >= 2 and \
                    max(img.shape[:2]) <= held.small.tier.tile:
                sel = held.small  # one small tile instead of a whole one padded (the same result, pad-aware)
            scale = sel.backend.scale
            if isinstance(img, np.ndarray) and img.ndim >= 2:  # before decode() makes float copies
                self._check_size(img.shape[0], img.shape[1], sel, source, img.shape[2] if img.ndim == 3 else 1,
                                 img.dtype.itemsize, engines=held)
            decoded = decode(img, str(source))
            n, _, th, tw = sel.backend.input_shape
            backend = self._backend_for(sel, *decoded.rgb.shape[:2])
            out = output_array(decoded, scale)
            # Finished blocks go straight into the output's own dtype: the float blend never holds the whole image.
            try:
                upscale_tiled(backend.infer, decoded.rgb, scale, (th, tw), sel.tier.overlap, n, progress,
                              emit=lambda y0, x0, block: encode_rows(out, y0, block, decoded, x0),
                              pad_value=backend.pad_value)
                self._ran.add(id(backend))
            except NonFiniteOutput as exc:
                hint = (f"; the engine runs in {sel.precision}, whose range the model overflowed: use the fp32 engine "
                        f"(precision='fp32')" if sel.precision in ("fp16", "int8") else
                        "; the engine file is damaged or was not exported from a MambaESR checkpoint: re-export it "
                        "with mambaesr-export")
                raise BackendError(f"{source}: engine {sel.path.name} ({sel.kind}, {sel.precision}, tier "
                                   f"{sel.tier.name}): {exc}{hint}") from exc
        encode_alpha(out, decoded)
        return resize_output(out, size or self._output_size(decoded.rgb.shape[0], decoded.rgb.shape[1], scale))

    def _choose_tier(self) -> None:
        """Ask the controller (if any) which tier the next image or frame runs on."""
        if self.controller is not None:
            wanted = self.controller.before_frame()
            name = wanted if isinstance(wanted, str) else wanted.name
            if name != self.tier:
                log.info("switching to tier %s", name)
                self.use_tier(name)

    def _report(self, start: float) -> None:
        if self.controller is not None:
            self.controller.after_frame(1000 * (time.perf_counter() - start))

    def stream(self, frames, progress=None, size: tuple[int, int] | None = None):
        """Upscale an iterable of frames lazily, one out per one in, in order (each resized to ``size`` (h, w) when
        given). With a ``controller``, the tier is chosen before each frame (never inside one) and each frame's
        latency is reported back to it."""
        for frame in frames:
            self._choose_tier()
            start = time.perf_counter()
            out = self.upscale(frame, progress, size=size)
            self._report(start)
            yield out

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                     progress=None, quality: int = 95, strip_metadata: bool = False) -> Path:
        """Read, upscale, write atomically. The input is never modified; the output appears only when complete.

        The output is upright (the input's EXIF orientation applied) and keeps the input's EXIF (no thumbnail,
        orientation reset), ICC profile, PNG text and density where its format can hold them, unless
        ``strip_metadata``. ``quality`` (1-100): JPEG and WebP outputs.

        Everything that can be known before the upscale is checked before it, from the file's header and the
        destination alone (milliseconds): the input's size against ``max_output_megapixels`` (a decompression bomb
        is never decoded) and its working memory against ``max_memory_mb``, pages and sample type, and whether
        ``dst`` can take this image (format, depth, alpha, the format's largest side, name length, existing file,
        folder). ``write_image`` checks the destination again at write time, and publishes the result without
        replacing a file that appeared meanwhile (unless ``overwrite``).
        """
        src, dst = Path(src), Path(dst)
        check_quality(quality)
        header = inspect_image(src)
        channels = 2 if header.gray_alpha else 4 if header.alpha else 1 if header.channels == 1 else 3
        self.check_size(header.height, header.width, src, channels=channels, sixteen_bit=header.sixteen_bit,
                        suffix=dst.suffix.lower(), file_bytes=src.stat().st_size)
        if os.path.realpath(dst) == os.path.realpath(src):
            raise MambaESRError(f"{dst} is the input itself; choose another output (inputs are never overwritten)")
        check_output(dst, sixteen_bit=header.sixteen_bit, alpha=header.alpha, gray_alpha=header.gray_alpha,
                     overwrite=overwrite, size=self.output_size(header.height, header.width))
        photo, out = self._upscale_read(lambda: read_photo(src, header, metadata=not strip_metadata), progress, src)
        return write_image(dst, out, overwrite=overwrite, quality=quality, metadata=photo.meta)

    def upscale_encoded(self, data: bytes, source: str | os.PathLike, dst: str | os.PathLike, progress=None,
                        quality: int = 95, strip_metadata: bool = False) -> bytes:
        """The bytes of an image file in, the bytes of the file :meth:`upscale_file` would write at ``dst`` out:
        for callers that move the bytes themselves (the distributed runner gets them from Ray Data and publishes
        the result on its own store). The same checks, decode, metadata and encoder as :meth:`upscale_file`, so the
        result is bit-identical to its file; ``source`` names the input in errors, ``dst`` (only its name is used:
        the suffix picks the format) the output. Nothing is read or written here."""
        check_quality(quality)
        header = inspect_bytes(data, source)
        self.check_size(header.height, header.width, source)
        check_format(dst, sixteen_bit=header.sixteen_bit, alpha=header.alpha, gray_alpha=header.gray_alpha,
                     size=self.output_size(header.height, header.width))
        photo, out = self._upscale_read(
            lambda: photo_of_bytes(data, header, source, metadata=not strip_metadata), progress, source)
        return encode_image(out, dst, quality, photo.meta)

    def _upscale_read(self, read, progress, source):
        """The step both file paths share once everything is checked: the tier chosen, ``read()`` (the decode, a
        :class:`Photo`) and the upscale timed and reported to the controller; (photo, upscaled pixels)."""
        self._choose_tier()  # between files, like between frames
        start = time.perf_counter()
        photo = read()
        out = self.upscale(photo.pixels, progress, source=source)
        self._report(start)
        return photo, out

    def close(self) -> None:
        """Close every engine (an engine another thread is still running closes when that image is done)."""
        with self._lock:
            for sel in (self._engines or {}).values():
                self._release(sel)
            self._engines = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
