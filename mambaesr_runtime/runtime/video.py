"""Videos and cameras: video files through PyAV when the ``video`` extra is installed (:mod:`.avvideo`: H.264,
audio and subtitles copied, real timestamps, rotation honoured), otherwise, and always for cameras, GStreamer
pipelines and ``.avi`` outputs, through OpenCV: ``VideoCapture`` -> ``Upscaler.stream`` -> ``VideoWriter``.

Both write the output under a temporary name beside the destination and publish it only when every frame is in and
the finished file has been read back (a full disk leaves a file that plays nothing; OpenCV's writer never says so),
never over a file that appeared meanwhile: an error or an interruption leaves no partial video. A damaged input (a
frame that does not decode, fewer frames than the container lists) is an error unless ``allow_frame_loss``. A camera never ends by itself: it is read until ``max_frames`` or
an interruption (Ctrl+C), and what was captured until then is a complete video.

The OpenCV writer keeps only the picture: MPEG-4 Part 2 (``mp4v``) in .mp4/.mov, MJPG in .avi, XVID in .mkv, at a
constant frame rate, no audio or subtitles, rotation ignored. When a file goes that way for want of PyAV, a warning
says so and names the extra (:data:`.avvideo.VIDEO_FIX`).

A source is a video file, a camera index, or a GStreamer pipeline ending in ``appsink`` (a Jetson CSI camera:
``nvarguscamerasrc ! ... ! appsink``), opened with ``cv2.CAP_GSTREAMER``. An OpenCV built without GStreamer (PyPI's
wheels) cannot open one: that is refused up front with the fix (:data:`.opencv.GSTREAMER_FIX`), not left to a
capture that silently never opens.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DependencyError
from ..fileio import name_too_long, temporary_beside
from .avvideo import CONTAINERS, VIDEO_FIX, VideoError, finish_output, load_av
from .opencv import GSTREAMER_FIX, cv2, describe_opencv, gstreamer_status

log = logging.getLogger(__name__)

#: Container suffix -> FourCC that OpenCV's bundled FFmpeg writes.
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
VIDEO_SUFFIXES = tuple(CODECS) + (".webm",)
#: OpenCV's own MJPG encoder (.avi) corrupts the heap on small frames (4x4, 2x8, 7x8 abort the process; measured
#: with OpenCV 5.1 under MALLOC_CHECK_=3): smaller outputs are refused before anything is written.
MJPG_MIN_SIDE = 16
#: Containers whose index gives OpenCV an exact frame count (elsewhere it is estimated from the duration), so a read
#: that fails before that count is a damaged or missing frame, not the end.
COUNTED = (".avi", ".mp4", ".m4v", ".mov")


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int | None
    """Frame count the container reports (``None`` for cameras and streams)."""


def is_gstreamer_pipeline(source) -> bool:
    """A GStreamer pipeline description (elements joined by ``!``), as opposed to a file path or camera index."""
    return isinstance(source, str) and "!" in source and not Path(source).exists()


def is_camera(source: str | int) -> bool:
    """A live source (camera index or GStreamer pipeline): no frame count, read until stopped."""
    return isinstance(source, int) or (isinstance(source, str) and source.isdigit()) or is_gstreamer_pipeline(source)


def open_gstreamer(pipeline: str) -> cv2.VideoCapture:
    """``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``, refused with the fix when this OpenCV has no GStreamer."""
    status = gstreamer_status()
    if status is False:
        raise VideoError(f"cannot open the GStreamer pipeline {pipeline!r}: this OpenCV was built without GStreamer "
                         f"(cv2.getBuildInformation() says 'GStreamer: NO'; {describe_opencv()}). {GSTREAMER_FIX}")
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        unknown = "" if status else (f" This OpenCV's build information does not say whether it has GStreamer "
                                     f"({describe_opencv()}); if it has not: {GSTREAMER_FIX}.")
        raise VideoError(f"the GStreamer pipeline {pipeline!r} cannot be opened: try it with gst-launch-1.0 "
                         f"(replace appsink by fakesink); it must end in appsink and deliver BGR frames "
                         f"(videoconvert ! video/x-raw,format=BGR ! appsink); in a container, a CSI camera also "
                         f"needs -v /tmp/argus_socket:/tmp/argus_socket.{unknown}")
    return cap


def open_source(source: str | int | os.PathLike) -> tuple[cv2.VideoCapture, VideoInfo]:
    """A capture for a video file, a camera index or a GStreamer pipeline, with its size and frame rate."""
    if is_gstreamer_pipeline(source):
        cap = open_gstreamer(source)
        what = "GStreamer pipeline"
    elif is_camera(source):
        cap = cv2.VideoCapture(int(source))
        what = f"camera {int(source)}"
    else:
        path = Path(source)
        if not path.is_file():
            raise VideoError(f"{path}: no such video file")
        cap = cv2.VideoCapture(str(path))
        what = str(path)
    if not cap.isOpened():
        raise VideoError(f"{what} cannot be opened by OpenCV (not a video, an unknown codec, or no such camera)")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    return cap, VideoInfo(w, h, fps if fps > 0 else 25.0, None if is_camera(source) or count <= 0 else count)


def frames(cap: cv2.VideoCapture, max_frames: int | None = None, expected: int | None = None,
           source: str | os.PathLike = "video", lost: list | None = None):
    """Yield BGR frames until the source ends or ``max_frames`` were read.

    ``expected``: the frame count the container declares (exact: :data:`COUNTED`); a read that fails before it is
    a damaged or missing frame, not the end: a :class:`VideoError`, or, when ``lost`` is a list, its number is
    appended there and reading goes on."""
    n = tried = 0
    while max_frames is None or n < max_frames:
        ok, frame = cap.read()
        if not ok:
            if expected is None or tried >= expected:
                return
            if lost is None:
                raise VideoError(f"{source}: the video is damaged: frame {tried + 1} of the {expected} its container "
                                 f"lists cannot be read; nothing was written. Re-copy it from its source, or pass "
                                 f"allow_frame_loss=True to upscale the frames that decode and leave the rest out")
            lost.append(tried)
            tried += 1
            continue
        n += 1
        tried += 1
        yield frame


def upscale_video(upscaler, source: str | int | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                  max_frames: int | None = None, progress=None, codec: str | None = None,
                  crf: int | None = None, allow_frame_loss: bool = False) -> tuple[Path, int]:
    """Upscale every frame of ``source`` (file, camera index or GStreamer pipeline) into ``dst``; return (path,
    frames written).

    A file written as .mp4, .m4v, .mov, .mkv or .webm goes through PyAV when it is installed (``codec``, ``crf``:
    see :func:`.avvideo.upscale_video`); cameras and .avi outputs through OpenCV. ``progress(done, total)`` is
    called per frame (``total`` is ``None`` when unknown). A damaged input (a frame that does not decode, fewer
    frames than its container lists) is an error unless ``allow_frame_loss`` (then the lost frames are left out,
    with a warning). The finished file is read back before it is published (:func:`.avvideo.finish_output`), never
    over a file that appeared meanwhile unless ``overwrite``.
    """
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in CODECS and suffix not in CONTAINERS:
        raise VideoError(f"{dst}: cannot write {dst.suffix or 'no suffix'} video; use one of "
                         f"{sorted(set(CODECS) | set(CONTAINERS))}")
    too_long = name_too_long(dst)
    if too_long:
        raise VideoError(f"{dst}: {too_long}")
    if os.path.lexists(dst) and not overwrite:
        raise VideoError(f"{dst} exists; pass overwrite=True to replace it, or choose another output")
    if not is_camera(source) and Path(source).resolve() == dst.resolve():
        raise VideoError(f"{dst} is the input itself; choose another output (inputs are never overwritten)")
    if not is_camera(source) and suffix in CONTAINERS:
        try:
            load_av()
        except DependencyError as exc:
            if suffix not in CODECS or codec is not None or crf is not None:
                wanted = "a .webm output" if suffix not in CODECS else "codec= / crf="
                raise VideoError(f"{dst}: {wanted} needs PyAV, which is not installed: {VIDEO_FIX}") from exc
            log.warning("%s: PyAV is not installed, so OpenCV writes it: %s video only (no audio or subtitles), at "
                        "a constant frame rate, rotation ignored. For H.264 with the audio kept: %s", dst,
                        CODECS[suffix], VIDEO_FIX)
        else:
            from . import avvideo

            dst.parent.mkdir(parents=True, exist_ok=True)
            return avvideo.upscale_video(upscaler, source, dst, overwrite, max_frames, progress, codec, crf,
                                         allow_frame_loss)
    if codec is not None or crf is not None:
        raise VideoError(f"{dst}: codec= and crf= apply to files written through PyAV (.mp4, .mkv, .mov, .webm), "
                         f"not to {'a camera' if is_camera(source) else suffix} output here")
    codec = CODECS[suffix]
    cap, info = open_source(source)
    total = info.frames if max_frames is None else min(max_frames, info.frames or max_frames)
    counted = not is_camera(source) and Path(source).suffix.lower() in COUNTED
    lost: list | None = [] if allow_frame_loss else None
    try:
        upscaler.check_size(info.height, info.width, f"camera {int(source)}" if is_camera(source) else source)
        oh, ow = upscaler.output_size(info.height, info.width)
        if codec == "MJPG" and min(oh, ow) < MJPG_MIN_SIDE:
            raise VideoError(f"{dst}: a {ow}x{oh} output is too small for OpenCV's MJPG writer (.avi), which corrupts "
                             f"memory below {MJPG_MIN_SIDE} pixels a side; write .mp4 or .mkv instead")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_beside(dst, dst.suffix)
    except OSError as exc:
        cap.release()
        raise VideoError(f"{dst}: cannot create the output there ({exc.strerror or exc}); choose another folder") \
            from exc
    except BaseException:
        cap.release()
        raise
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), info.fps, (ow, oh))
    written, done = 0, False
    try:
        if not writer.isOpened():
            raise VideoError(f"OpenCV cannot write {codec} video to {dst} (its FFmpeg lacks the codec?); try .avi")
        try:
            read = frames(cap, max_frames, info.frames if counted else None, source, lost)
            for out in upscaler.stream(_as_bgr(read)):
                writer.write(out)
                written += 1
                if progress is not None:
                    progress(written, total)
        except KeyboardInterrupt:
            if not is_camera(source):
                raise  # a file cut short would be a partial result
            log.info("camera capture stopped after %d frames", written)
        if written == 0:
            raise VideoError(f"{source}: no frames could be read")
        if lost:
            log.warning("%s: %d of %d frames could not be read and are left out (allow_frame_loss); the output is %d "
                        "frames", source, len(lost), written + len(lost), written)
        writer.release()
        finish_output(tmp, dst, written, overwrite)
        done = True
    finally:
        cap.release()
        writer.release()
        if not done and os.path.lexists(tmp):
            os.unlink(tmp)
    return dst, written


def _as_bgr(source):
    # Captures give 8-bit BGR; the writer takes 8-bit BGR of the size it was opened with.
    for frame in source:
        yield frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
