"""Video files through PyAV (FFmpeg's libraries; the ``video`` extra): decode, upscale every frame, encode H.264
(or HEVC, VP9, AV1), copy the audio and subtitle streams packet for packet, keep every frame's timestamp.

What survives the trip: the timeline (each output frame carries its input frame's presentation time in the input's
own time base, so a variable-frame-rate clip stays variable; the encoder's time base is the input stream's), the
audio and subtitle packets (not decoded: the bytes are copied, so the sound is bit-identical), the container's
metadata, and the picture's orientation (a rotation in the display-matrix side data is applied to the pixels, so
the output is upright for every player and carries no rotation). The container comes from the output suffix
(:data:`CONTAINERS`); a stream the container cannot hold (AAC into WebM, SubRip into MP4) is refused before any
frame is upscaled, naming the suffixes that can hold every stream.

Nothing partial is left: the output is written under a temporary name beside the destination; once the trailer is
written the file is read back (its packets counted: a disk that filled up leaves a file that plays nothing) and
published without replacing a file that appeared meanwhile (:func:`finish_output`); an error or an interruption
removes it. Nothing is lost silently either: a frame that does not decode, or fewer frames than the container lists,
fails the video unless ``allow_frame_loss``. Cameras and GStreamer pipelines stay with OpenCV
(:mod:`.video`), which is also the fallback when PyAV is missing.

PyAV is imported here only, lazily (:func:`load_av`).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DependencyError, MambaESRError
from ..fileio import publish, temporary_beside

log = logging.getLogger(__name__)

VIDEO_FIX = "pip install 'mambaesr-runtime[video]' (PyAV, which bundles FFmpeg's libraries)"
#: Output suffix -> FFmpeg muxer.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass(frozen=True)
class Codec:
    name: str
    encoders: tuple[str, ...]
    """FFmpeg encoders to try, in order (the first one this FFmpeg has is used)."""
    crf: int
    """Default constant-rate factor: visually near-lossless for upscaled footage."""
    crf_max: int
    options: tuple[tuple[str, str], ...] = ()


CODECS = {
    "h264": Codec("h264", ("libx264", "h264"), 18, 51, (("preset", "medium"),)),
    "hevc": Codec("hevc", ("libx265", "hevc"), 22, 51, (("preset", "medium"), ("x265-params", "log-level=error"))),
    "vp9": Codec("vp9", ("libvpx-vp9", "vp9"), 30, 63, (("b", "0"), ("row-mt", "1"))),
    "av1": Codec("av1", ("libsvtav1", "libaom-av1", "av1"), 30, 63),
}
CODEC_ALIASES = {"h265": "hevc", "x264": "h264", "avc": "h264", "x265": "hevc"}
DEFAULT_CODEC = {".webm": "vp9"}  # everything else: h264


class VideoError(MambaESRError):
    """A video source cannot be opened or read, or the output cannot be written."""


def load_av():
    """The ``av`` module, or a :class:`DependencyError` naming the extra."""
    try:
        import av
    except ImportError as exc:
        raise DependencyError(f"PyAV is not installed: {VIDEO_FIX}") from exc
    return av


def resolve_codec(name: str | None, suffix: str) -> Codec:
    key = (name or DEFAULT_CODEC.get(suffix, "h264")).lower()
    key = CODEC_ALIASES.get(key, key)
    if key not in CODECS:
        raise VideoError(f"codec {name!r} is not one of {sorted(CODECS)} (aliases {sorted(CODEC_ALIASES)})")
    if suffix == ".webm" and key not in ("vp9", "av1"):
        raise VideoError(f"a .webm file holds VP9 or AV1 video, not {key}; use codec='vp9' (the default for .webm) "
                         f"or write .mp4 / .mkv")
    return CODECS[key]


def _encoder(av, codec: Codec) -> str:
    for name in codec.encoders:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception as exc:  # noqa: BLE001 - UnknownCodecError / ValueError across PyAV versions
            log.debug("encoder %s unavailable: %s", name, exc)
    raise VideoError(f"this FFmpeg (PyAV {av.__version__}) has no {codec.name} encoder (tried "
                     f"{', '.join(codec.encoders)}); choose another codec: {sorted(CODECS)}")


def check_truncation(path: Path) -> None:
    """Refuse an MP4/MOV whose top-level boxes run past the end of the file (a copy cut short, a recording that
    never finished): FFmpeg may read such a file in part, without saying so."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pos, seen = 0, []
        while pos + 8 <= size:
            fh.seek(pos)
            head = fh.read(16)
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) >= 16:
                length = struct.unpack(">Q", head[8:16])[0]
            elif length == 0:  # to the end of the file
                length = size - pos
            if length < 8:
                raise VideoError(f"{path}: damaged MP4 structure (a box of {length} bytes at byte {pos}); re-copy or "
                                 f"re-export the file")
            name = kind.decode("latin-1")
            if pos + length > size:
                what = "its index (moov box)" if kind == b"moov" else f"its {name!r} box"
                raise VideoError(f"{path}: the file is truncated: {what} at byte {pos} declares {length} bytes but the "
                                 f"file ends after {size - pos}; re-copy it, or finish the recording that wrote it")
            seen.append(kind)
            pos += length
    if b"moov" not in seen and b"moof" not in seen:
        raise VideoError(f"{path}: the MP4 has no index (moov box): the file is truncated or still being written; "
                         f"re-copy it once complete")


def _av_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-300:]


#: The errors of a write that ran out of room: a full disk, a quota, a file-size limit.
NO_ROOM = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def _no_room(dst: Path, what: str) -> str:
    try:
        free = f"{shutil.disk_usage(dst.parent).free / 2**20:.1f} MB free in {dst.parent}"
    except OSError:
        free = f"{dst.parent} cannot be asked for its free space"
    return (f"{dst}: {what}: the disk is full, or a quota or file-size limit was reached ({free}); nothing was kept. "
            f"Free space or write elsewhere, and run it again")


def readable_frames(path: str | os.PathLike) -> int:
    """The video frames a finished file holds, as a player finds them: its video packets (PyAV, nothing decoded),
    or without PyAV the frames OpenCV can grab. A file without an index (no moov) holds none."""
    try:
        av = load_av()
    except DependencyError:
        av = None
    if av is not None:
        n = 0
        try:
            with av.open(str(path)) as c:
                if not c.streams.video:
                    return 0
                for packet in c.demux(c.streams.video[0]):
                    n += packet.size > 0
        except av.FFmpegError:  # an unreadable header or a cut in the data: what was read so far is all there is
            pass
        return n
    from .opencv import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def _cut_short(path: Path, suffix: str) -> str | None:
    """Why the container ``path`` is incomplete at its end (its last writes failed: the frames may all be there but
    its index is not), or ``None``: an AVI's RIFF chunk, or an MP4/MOV box, declaring more bytes than the file holds."""
    if suffix in (".mp4", ".m4v", ".mov"):
        try:
            check_truncation(path)
        except VideoError as exc:
            return str(exc).split(": ", 1)[-1]
        return None
    if suffix == ".avi":
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF":
            return "no RIFF header"
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if declared > size:
            return f"its RIFF chunk declares {declared} bytes, the file holds {size}"
    return None


def finish_output(tmp: str, dst: Path, written: int, overwrite: bool) -> None:
    """Check that the closed temporary video ``tmp`` holds the ``written`` frames, then publish it as ``dst``.

    Writers do not all report a failed write: OpenCV's ignores them, and a muxer's trailer (MP4's index, written
    last) can fail unseen, leaving a file that plays nothing. So the finished file is read back (its packets
    counted, nothing decoded) before it may replace anything. Publishing never replaces a file that appeared at
    ``dst`` meanwhile unless ``overwrite`` (:func:`..fileio.publish`).
    """
    got = readable_frames(tmp)
    if got != written:
        raise VideoError(_no_room(dst, f"only {got} of the {written} upscaled frames could be read back from the "
                                       f"finished file"))
    cut = _cut_short(Path(tmp), dst.suffix.lower())
    if cut:
        raise VideoError(_no_room(dst, f"the finished file is cut short ({cut})"))
    os.chmod(tmp, 0o644)
    try:
        publish(tmp, dst, overwrite)
    except FileExistsError as exc:
        raise VideoError(f"{dst} appeared while this video was being upscaled (another run or program created it); "
                         f"it was left as it is and this result was not written: pass overwrite=True to replace it, "
                         f"or choose another output") from exc


def upscale_video(upscaler, source: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                  max_frames: int | None = None, progress=None, codec: str | None = None,
                  crf: int | None = None, allow_frame_loss: bool = False) -> tuple[Path, int]:
    """Upscale the video file ``source`` into ``dst`` (container from its suffix); return (path, frames written).

    ``codec``: h264 (default; vp9 for .webm), hevc, vp9 or av1; ``crf``: its constant-rate factor (lower is better;
    default per codec). ``progress(done, total)`` is called per frame (``total``: the container's frame count, or
    ``None``). The caller has checked ``overwrite`` and that ``dst`` is not ``source``.

    A frame that cannot be decoded (damaged data), or fewer frames than the container lists, is an error: nothing
    is written (a damaged recording would otherwise come out shorter, without a word). ``allow_frame_loss``: write
    the frames that decode instead, with a warning that counts the lost ones."""
    av = load_av()
    source, dst = Path(source), Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in CONTAINERS:
        raise VideoError(f"{dst}: PyAV writes {sorted(CONTAINERS)} here, not {suffix or 'no suffix'}")
    spec = resolve_codec(codec, suffix)
    if crf is not None and (isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= spec.crf_max):
        raise VideoError(f"crf for {spec.name} must be an integer from 0 to {spec.crf_max} (default {spec.crf}), "
                         f"got {crf!r}")
    encoder = _encoder(av, spec)
    if not source.is_file():
        raise VideoError(f"{source}: no such video file")
    if source.suffix.lower() in (".mp4", ".m4v", ".mov"):
        check_truncation(source)
    try:
        inp = av.open(str(source))
    except Exception as exc:  # every FFmpeg error while opening means the same to the user
        raise VideoError(f"{source}: not a readable video ({_av_message(exc)}); it may be truncated, corrupt or "
                         f"not a video") from exc
    job = None
    try:
        job = _Job(av, upscaler, inp, source, dst, encoder, spec, spec.crf if crf is None else crf, max_frames,
                   progress, overwrite, allow_frame_loss)
        written = job.run()
    except av.FFmpegError as exc:
        if getattr(exc, "errno", None) in NO_ROOM:
            raise VideoError(_no_room(dst, f"writing failed ({_av_message(exc)})")) from exc
        raise VideoError(f"{source}: FFmpeg failed while upscaling it into {dst} ({_av_message(exc)})") from exc
    finally:
        inp.close()
        if job is not None:
            job.discard()
    return dst, written


class _Job:
    """One video: the input container open, the output made on the first decoded frame (its size and rotation are
    known then), packets of the copied streams held until the output header is written."""

    def __init__(self, av, upscaler, inp, source: Path, dst: Path, encoder: str, spec: Codec, crf: int,
                 max_frames, progress, overwrite: bool = False, allow_frame_loss: bool = False):
        self.av, self.upscaler, self.inp, self.source, self.dst = av, upscaler, inp, source, dst
        self.encoder, self.spec, self.crf, self.max_frames, self.progress = encoder, spec, crf, max_frames, progress
        self.overwrite, self.allow_frame_loss = overwrite, allow_frame_loss
        self.lost: list[int] = []  # packets (by their order in the stream) that decoded to no frame
        if not inp.streams.video:
            raise VideoError(f"{source}: no video stream (streams: "
                             f"{', '.join(s.type for s in inp.streams) or 'none'})")
        self.vin = inp.streams.video[0]
        ctx = self.vin.codec_context
        if ctx.width and ctx.height:
            upscaler.check_size(ctx.height, ctx.width, source)  # before any decode
        self.copied = [s for s in inp.streams if s.type in ("audio", "subtitle")]
        for s in inp.streams:
            if s is not self.vin and s not in self.copied:
                log.info("%s: stream #%d (%s) is not copied (only audio and subtitles are)", source, s.index, s.type)
        self.out = self.tmp = self.vout = None
        self.mapping: dict[int, object] = {}
        self.held: list = []
        self.done = False
        self._check_container()
        total = self.vin.frames or None
        self.total = total if max_frames is None else min(max_frames, total or max_frames)

    def _check_container(self) -> None:
        """Every copied stream's codec must fit the output container: refused now, naming where they all fit."""
        needed = {s.codec_context.name: s for s in self.copied}
        missing = [name for name in needed if name not in self._supported(self.dst.suffix.lower())]
        if not missing:
            return
        fits = [suffix for suffix in (".mp4", ".mov", ".mkv", ".webm")
                if all(n in self._supported(suffix) for n in needed)]
        what = ", ".join(f"{needed[n].type} #{needed[n].index} ({n})" for n in missing)
        raise VideoError(f"{self.dst}: a {self.dst.suffix} file cannot hold the {what} of {self.source}, copied as "
                         f"they are; write {' or '.join(fits) if fits else '.mkv'} instead")

    def _supported(self, suffix: str):
        """The codecs the muxer for ``suffix`` takes (everything, when this PyAV cannot say: the muxer then refuses
        when the stream is added)."""
        try:
            with self.av.open(io.BytesIO(), "w", format=CONTAINERS[suffix]) as probe:
                return set(probe.supported_codecs)  # PyAV >= 14
        except Exception:  # noqa: BLE001 - an older PyAV without supported_codecs
            return _Everything()

    # -- output ------------------------------------------------------------------------------------------------
    def _open_output(self, h: int, w: int) -> tuple[int, int]:
        """Create the temporary output with its streams and write the header; the output (h, w) (even sides:
        4:2:0 chroma needs them)."""
        av = self.av
        oh, ow = self.upscaler.output_size(h, w)
        oh, ow = max(2, oh + (oh & 1)), max(2, ow + (ow & 1))
        try:
            self.tmp = temporary_beside(self.dst, self.dst.suffix)
        except OSError as exc:
            raise VideoError(f"{self.dst}: cannot create the output there ({exc.strerror or exc}); choose another "
                             f"folder") from exc
        self.out = av.open(self.tmp, "w", format=CONTAINERS[self.dst.suffix.lower()])
        for key, value in self.inp.metadata.items():
            self.out.metadata[key] = value
        rate = self.vin.average_rate or self.vin.guessed_rate or 25
        vout = self.out.add_stream(self.encoder, rate=rate)
        vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
        # The encoder's clock is the input stream's: every frame keeps its own timestamp (variable rates survive).
        vout.time_base = self.vin.time_base
        vout.codec_context.time_base = self.vin.time_base
        options = dict(self.spec.options)
        options["crf"] = str(self.crf)
        vout.codec_context.options = options
        self.vout = vout
        from_template = getattr(self.out, "add_stream_from_template", None)  # PyAV >= 13; before: template=
        for s in self.copied:
            self.mapping[s.index] = from_template(s) if from_template else self.out.add_stream(template=s)
        self.out.start_encoding()
        for packet in self.held:
            self._mux_copy(packet)
        self.held = []
        return oh, ow

    def _mux_copy(self, packet) -> None:
        packet.stream = self.mapping[packet.stream.index]
        self.out.mux(packet)

    # -- the loop ----------------------------------------------------------------------------------------------
    def _frames(self):
        """Decoded video frames (upright BGR arrays) with their (pts, time base, duration); copied packets are
        muxed (or held) as the demuxer meets them, so the output interleaves like the input."""
        n, last_pts = 0, None
        rotation = None
        packets = discarded = 0
        for packet in self.inp.demux(self.vin, *self.copied):
            if packet.stream.index != self.vin.index:
                if packet.dts is None or packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                if self.out is None:
                    self.held.append(packet)
                else:
                    self._mux_copy(packet)
                continue
            if packet.size:
                packets += 1
                discarded += bool(getattr(packet, "is_discard", False))  # cut by an edit list: no frame expected
            try:
                decoded = packet.decode()
            except self.av.FFmpegError as exc:  # damaged data: this packet gives no frame
                self._lose(packets, f"frame {packets} (in stream order) does not decode ({_av_message(exc)})")
                continue
            for frame in decoded:
                pts = frame.pts
                if pts is None:  # a stream without timestamps: count frames in the stream's rate
                    pts = 0 if last_pts is None else last_pts + 1
                if last_pts is not None and pts <= last_pts:
                    log.warning("%s: frame %d has a timestamp not after the previous one; moved one tick later",
                                self.source, n)
                    pts = last_pts + 1
                last_pts = pts
                if rotation is None:
                    rotation = round(float(getattr(frame, "rotation", 0) or 0)) % 360
                    if rotation % 90:
                        raise VideoError(f"{self.source}: a display rotation of {rotation} degrees is not a multiple "
                                         f"of 90; rotate the video first")
                    if rotation:
                        log.info("%s: rotated %d degrees for display; the output is turned upright",
                                 self.source, rotation)
                img = frame.to_ndarray(format="bgr24")
                if rotation:  # the display matrix's angle is counter-clockwise, as np.rot90 turns
                    img = np.ascontiguousarray(np.rot90(img, rotation // 90))
                yield img, (pts, frame.time_base or self.vin.time_base, getattr(frame, "duration", None))
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    return
        # The whole stream was read: every packet must have given its frame, and the container's count must have
        # been delivered (a damaged index or chunk structure loses packets before the decoder sees them).
        expected = max(self.vin.frames or 0, packets) - discarded
        if n + len(self.lost) < expected:
            self._lose(None, f"the container lists {expected} frames but only {n + len(self.lost)} could be read "
                             f"from it", expected - n - len(self.lost))
        if self.lost:
            log.warning("%s: %d of %d frames could not be decoded and are left out (allow_frame_loss); the output "
                        "is %d frames", self.source, len(self.lost), n + len(self.lost), n)

    def _lose(self, where: int | None, why: str, count: int = 1) -> None:
        """A frame (``count`` frames) of the input is lost: an error, or counted when ``allow_frame_loss``."""
        if not self.allow_frame_loss:
            raise VideoError(f"{self.source}: the video is damaged: {why}; nothing was written. Re-copy it from its "
                             f"source, or pass allow_frame_loss=True to upscale the frames that decode and leave the "
                             f"rest out")
        self.lost.extend([where] * count)

    def run(self) -> int:
        frames = self._frames()
        first = next(frames, None)
        if first is None:
            raise VideoError(f"{self.source}: the video stream has no frames that can be decoded")
        size = self._open_output(*first[0].shape[:2])
        stamps = deque()

        def pixels():
            for img, stamp in _chain(first, frames):
                stamps.append(stamp)
                yield img

        written = 0
        for out in self.upscaler.stream(pixels(), size=size):
            pts, time_base, duration = stamps.popleft()
            frame = self.av.VideoFrame.from_ndarray(out, format="bgr24")
            frame.pts, frame.time_base = pts, time_base
            if duration and hasattr(frame, "duration"):  # the last frame keeps its length (PyAV >= 14)
                frame.duration = duration
            for packet in self.vout.encode(frame):
                self.out.mux(packet)
            written += 1
            if self.progress is not None:
                self.progress(written, self.total)
        for packet in self.vout.encode(None):
            self.out.mux(packet)
        self.out.close()
        self.out = None
        finish_output(self.tmp, self.dst, written, self.overwrite)
        self.done = True
        return written

    def discard(self) -> None:
        """After an error or an interruption: close the output and remove the temporary file."""
        if self.done or self.tmp is None:
            return
        if self.out is not None:
            try:
                self.out.close()
            except Exception:  # a half-written container may fail to close; it is deleted anyway
                log.debug("closing the unfinished output failed", exc_info=True)
        if os.path.lexists(self.tmp):
            os.unlink(self.tmp)


class _Everything:
    def __contains__(self, item) -> bool:
        return True


def _chain(first, rest):
    yield first
    yield from rest
