"""Real video clips made with PyAV, for the video tests and benchmarks/bad_inputs.py (nothing is stored)."""

from __future__ import annotations

import fractions
import math
import struct
from pathlib import Path

import numpy as np

#: A phone's variable frame rate: gaps of 33 to 90 ms (milliseconds).
VFR_MS = (0, 40, 100, 133, 200, 290, 300, 340, 420, 500, 533, 600)


def picture(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    """RGB frame ``i``: a grey level per frame and a bright block in the top-left corner (so a turn shows)."""
    img = np.full((h, w, 3), 40 + (12 * i) % 180, np.uint8)
    img[: h // 3, : w // 4] = 240
    img[:, w // 2:, 2] = 200
    return img


def make_clip(path, pts_ms=VFR_MS, audio: bool = True, subtitles: str | None = None, rotate: int | None = None,
              vcodec: str = "libx264", acodec: str = "aac"):
    """A real clip: frames at ``pts_ms`` (time base 1/1000), optional stereo 48 kHz audio (a 440 Hz tone as long as
    the video), subtitle packets ('subrip' or 'mov_text') at frames 2 and 6, an optional display rotation."""
    import av

    tb = fractions.Fraction(1, 1000)
    out = av.open(str(path), "w")
    vs = out.add_stream(vcodec, rate=25)
    vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
    vs.time_base = vs.codec_context.time_base = tb
    if rotate is not None:
        vs.set_display_rotation(rotate)
    astream = out.add_stream(acodec, rate=48000) if audio else None
    if astream is not None:
        astream.layout = "stereo"
    sstream = out.add_mux_stream(subtitles) if subtitles else None
    if sstream is not None:
        sstream.time_base = tb
    for i, p in enumerate(pts_ms):
        frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
        frame.pts, frame.time_base = p, tb
        for packet in vs.encode(frame):
            out.mux(packet)
        if sstream is not None and i in (2, 6):
            text = f"line at frame {i}".encode()
            packet = av.Packet(struct.pack(">H", len(text)) + text if subtitles == "mov_text" else text)
            packet.pts = packet.dts = p
            packet.duration, packet.time_base, packet.stream = 80, tb, sstream
            out.mux(packet)
    for packet in vs.encode():
        out.mux(packet)
    if astream is not None:
        sr, t, end = 48000, 0, (pts_ms[-1] + 40) * 48
        while t < end:
            tone = (0.2 * np.sin(2 * math.pi * 440 * (t + np.arange(1024)) / sr)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sr, t, fractions.Fraction(1, sr)
            for packet in astream.encode(frame):
                out.mux(packet)
            t += 1024
        for packet in astream.encode():
            out.mux(packet)
    out.close()
    return path


def zero_frame(src, dst):
    """``dst`` (.mkv): ``src``'s video stream declared with no frames in it, beside its real audio track."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        o.add_stream_from_template(i.streams.video[0])
        audio = o.add_stream_from_template(i.streams.audio[0])
        for packet in i.demux(i.streams.audio[0]):
            if packet.size:
                packet.stream = audio
                o.mux(packet)
    return dst


def garbage_audio(src, dst, seed: int = 0):
    """``dst``: ``src`` with every audio packet's bytes replaced by random ones of the same size (same timing): an
    AAC track no decoder can read."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        video = o.add_stream_from_template(i.streams.video[0])
        audio = o.add_stream_from_template(i.streams.audio[0])
        for packet in i.demux():
            if not packet.size:
                continue
            if packet.stream.type == "audio":
                bad = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                bad.pts, bad.dts, bad.duration, bad.time_base = packet.pts, packet.dts, packet.duration, \
                    packet.time_base
                bad.stream = audio
                o.mux(bad)
            else:
                packet.stream = video
                o.mux(packet)
    return dst


def noisy_h264(path, frames: int = 40, size: tuple[int, int] = (48, 64), seed: int = 0):
    """An MP4 (H.264, one keyframe, no audio) of random frames: every frame's data is large and predicted from the
    one before, so damaging the middle of its mdat leaves frames that cannot be decoded."""
    import av

    rng = np.random.default_rng(seed)
    h, w = size
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.codec_context.options = {"g": "1000"}
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), format="rgb24")
        frame.pts = i
        for packet in vs.encode(frame):
            out.mux(packet)
    for packet in vs.encode():
        out.mux(packet)
    out.close()
    return path


def damaged_mdat(src, dst):
    """``dst``: the MP4 ``src`` with the middle of its mdat box (a third to a half of it) overwritten by garbage:
    its index (moov) intact, so every frame is listed, some of them undecodable."""
    data = bytearray(Path(src).read_bytes())
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", bytes(data[pos:pos + 8]))
        if kind == b"mdat":
            for j in range(pos + length // 3, pos + length // 2):
                data[j] = (j * 131 + 7) & 0xFF
        pos += length
    Path(dst).write_bytes(bytes(data))
    return dst


def mjpg_avi(path, frames: int = 8, size: tuple[int, int] = (48, 64), seed: int = 0):
    """An MJPG .avi (OpenCV's writer) of random frames, with its idx1 index."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    writer.release()
    return path


def damaged_avi(src, dst, frame: int = 3):
    """``dst``: the .avi ``src`` with the chunk id of one frame in the middle (``frame``) overwritten: the demuxer
    loses that frame, and readers that only stop at the first failed read lose every one after it."""
    data = bytearray(Path(src).read_bytes())
    movi = data.index(b"movi")
    chunks = [i for i in range(movi, len(data) - 4) if data[i:i + 4] == b"00dc"]
    at = chunks[frame]
    data[at:at + 4] = b"XXXX"
    Path(dst).write_bytes(bytes(data))
    return dst
