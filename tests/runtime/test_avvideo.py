"""Videos through PyAV (the ``video`` extra), on clips made here with PyAV itself: a variable-frame-rate H.264 clip
with an AAC track keeps every frame's timestamp (within 1 ms) and its audio packet for packet; a 10-frame clip with
subtitles keeps them; a rotated phone clip comes out upright; WebM gets VP9; what cannot work is refused before
any frame is upscaled and an interrupted run leaves nothing. Without PyAV the OpenCV path still writes the video
and says what is missing.

The model is an x4 nearest-neighbour ONNX graph, so the pictures can be compared with the input's."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest

import clips
import hostile
from mambaesr_runtime.cli.run import main
from mambaesr_runtime.errors import MambaESRError
from mambaesr_runtime.runtime.upscaler import Upscaler
from mambaesr_runtime.runtime.video import upscale_video

av = pytest.importorskip("av", reason="PyAV (the video extra: pip install '.[video]') is not installed")

VFR_MS = clips.VFR_MS
picture, make_clip = clips.picture, clips.make_clip


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return str(hostile.onnx_graph(tmp_path_factory.mktemp("engine") / "nearest.onnx", "nearest"))


def frame_times(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def packets(path, kind: str, markers: bool = True) -> list[tuple[bytes, float]]:
    """(payload, pts in seconds) of the first ``kind`` stream's packets. ``markers=False`` leaves out the
    zero-length empty mov_text samples FFmpeg's MP4 muxer writes where one subtitle ends and the next begins."""
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        return [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(stream)
                if p.size and (markers or p.duration or bytes(p) != b"\x00\x00")]


def stream_facts(path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name) + ((s.codec_context.width, s.codec_context.height)
                                                  if s.type == "video" else ()) for s in c.streams]


def test_a_vfr_clip_keeps_its_timestamps_and_its_audio_packet_for_packet(engine, tmp_path, capsys):
    src = make_clip(tmp_path / "phone.mp4")
    assert main([str(src), "-o", str(tmp_path / "big.mp4"), "--model", engine, "--overlap", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["frames"] == len(VFR_MS) and report["inputs"][0]["kind"] == "video"
    out = tmp_path / "big.mp4"
    assert stream_facts(out) == [("video", "h264", 128, 96), ("audio", "aac")]
    t_in, t_out = frame_times(src), frame_times(out)
    assert t_in == pytest.approx([ms / 1000 for ms in VFR_MS], abs=1e-3)  # the fixture is variable-rate
    assert len(t_out) == len(t_in) and max(abs(a - b) for a, b in zip(t_in, t_out)) <= 1e-3
    a_in, a_out = packets(src, "audio"), packets(out, "audio")
    assert len(a_in) > 30 and [p for p, _ in a_out] == [p for p, _ in a_in]  # bit-identical, in order
    assert max(abs(x - y) for (_, x), (_, y) in zip(a_in, a_out)) <= 1e-3
    with av.open(str(src)) as ci, av.open(str(out)) as co:
        frame = 1 / 25
        assert abs(co.duration - ci.duration) / av.time_base <= frame
        ai, ao = ci.streams.audio[0], co.streams.audio[0]
        assert abs(float(ao.duration * ao.time_base) - float(ai.duration * ai.time_base)) <= frame
        decoded = co.decode(video=0)
        first = next(decoded).to_ndarray(format="rgb24")
    small = first.reshape(24, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - picture(0)).mean() < 8  # the picture is the upscaled input (through two lossy encodes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.mp4", "phone.mp4"]


@pytest.mark.parametrize("container, codec", [("mkv", "subrip"), ("mp4", "mov_text")])
def test_a_10_frame_clip_keeps_its_subtitles(engine, tmp_path, container, codec):
    src = make_clip(tmp_path / f"subs.{container}", pts_ms=[40 * i for i in range(10)], subtitles=codec)
    with Upscaler(model=engine, overlap=4) as up:
        dst, n = upscale_video(up, src, tmp_path / f"big.{container}")
    assert n == 10 and len(frame_times(dst)) == 10
    s_in, s_out = packets(src, "subtitles"), packets(dst, "subtitles", markers=container != "mp4")
    assert any(b"line at frame 6" in p for p, _ in s_in)
    assert [p for p, _ in s_out] == [p for p, _ in s_in]
    assert max(abs(x - y) for (_, x), (_, y) in zip(s_in, s_out)) <= 1e-3
    assert max(abs(a - b) for a, b in zip(frame_times(src), frame_times(dst))) <= 1e-3


def test_a_rotated_clip_comes_out_upright(engine, tmp_path):
    src = make_clip(tmp_path / "portrait.mp4", audio=False, rotate=90)
    with av.open(str(src)) as c:
        stored = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert next(iter(c.streams.video)).codec_context.width == 32
    with Upscaler(model=engine, overlap=4) as up:
        dst, _ = upscale_video(up, src, tmp_path / "upright.mkv")
    with av.open(str(dst)) as c:
        out = [f for f in c.decode(video=0)]
    assert (out[0].width, out[0].height) == (96, 128) and not out[0].rotation  # turned, and no rotation left
    expected = np.rot90(stored[3], 1)  # 90 degrees counter-clockwise, as the display matrix says
    small = out[3].to_ndarray(format="rgb24").reshape(32, 4, 24, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - expected).mean() < 8 and np.abs(small - np.rot90(stored[3], -1)).mean() > 30


def test_webm_is_vp9_and_crf_is_honoured(engine, tmp_path):
    src = make_clip(tmp_path / "in.mkv", acodec="libopus")
    sizes = {}
    with Upscaler(model=engine, overlap=4) as up:
        for crf in (10, 55):
            dst, n = upscale_video(up, src, tmp_path / f"c{crf}.webm", crf=crf)
            assert stream_facts(dst) == [("video", "vp9", 128, 96), ("audio", "opus")] and n == len(VFR_MS)
            sizes[crf] = dst.stat().st_size
        dst, _ = upscale_video(up, src, tmp_path / "hevc.mkv", codec="hevc")
        assert stream_facts(dst)[0] == ("video", "hevc", 128, 96)
    assert sizes[55] < sizes[10]
    assert max(abs(a - b) for a, b in zip(frame_times(src), frame_times(tmp_path / "c10.webm"))) <= 1e-3


def test_undecodable_audio_is_copied_as_it_is(engine, tmp_path):
    """The audio is never decoded, so a damaged track costs nothing: its packets go through unchanged."""
    src = clips.garbage_audio(make_clip(tmp_path / "good.mp4"), tmp_path / "bad.mp4")
    with av.open(str(src)) as c, pytest.raises(av.FFmpegError):
        list(c.decode(audio=0))
    with Upscaler(model=engine, overlap=4) as up:
        dst, n = upscale_video(up, src, tmp_path / "out.mkv")
    assert n == len(VFR_MS) and [p for p, _ in packets(dst, "audio")] == [p for p, _ in packets(src, "audio")]


def test_an_interrupted_video_leaves_nothing(engine, tmp_path):
    src = make_clip(tmp_path / "clip.mp4")

    def stop(done, total):
        assert total == len(VFR_MS)
        if done == 3:
            raise KeyboardInterrupt

    with Upscaler(model=engine, overlap=4) as up:
        with pytest.raises(KeyboardInterrupt):
            upscale_video(up, src, tmp_path / "out.mp4", progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_what_cannot_work_is_refused_before_any_frame_and_leaves_nothing(engine, tmp_path, monkeypatch):
    aac = make_clip(tmp_path / "aac.mp4")
    srt = make_clip(tmp_path / "srt.mkv", audio=False, subtitles="subrip")
    data = aac.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) - 300])
    (tmp_path / "notes.mp4").write_text("hello")
    zero = clips.zero_frame(aac, tmp_path / "zero.mkv")  # a video stream with no frames beside a real audio track
    before = sorted(p.name for p in tmp_path.iterdir())
    with Upscaler(model=engine, overlap=4) as up:
        monkeypatch.setattr(up, "stream", lambda *a, **k: pytest.fail("a frame was upscaled"))
        for src, dst, kwargs, words in [
                (aac, "o.webm", {}, r"cannot hold the audio #1 \(aac\).*write .mp4 or .mov or .mkv"),
                (srt, "o.mp4", {}, r"cannot hold the subtitle #1 \(srt\).*write .mkv"),
                (tmp_path / "cut.mp4", "o.mkv", {}, "truncated: its index \\(moov box\\)"),
                (tmp_path / "notes.mp4", "o.mkv", {}, "no index|not a readable video"),
                (zero, "o.mkv", {}, "no frames that can be decoded"),
                (aac, "o.mkv", {"codec": "mpeg2"}, "codec 'mpeg2' is not one of"),
                (aac, "o.mkv", {"crf": 99}, "crf for h264 must be an integer from 0 to 51"),
                (aac, "o.webm", {"codec": "h264"}, "holds VP9 or AV1 video")]:
            with pytest.raises(MambaESRError, match=words):
                upscale_video(up, src, tmp_path / dst, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_without_pyav_opencv_still_writes_the_video_and_says_what_is_missing(engine, tmp_path, monkeypatch, caplog):
    src = make_clip(tmp_path / "clip.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with Upscaler(model=engine, overlap=4) as up:
        with caplog.at_level(logging.WARNING):
            dst, n = upscale_video(up, src, tmp_path / "out.mp4")
        assert n == len(VFR_MS) and "PyAV is not installed" in caplog.text and "[video]" in caplog.text
        assert "no audio" in caplog.text
        for name, kwargs in (("o.webm", {}), ("o.mkv", {"codec": "h264"})):
            with pytest.raises(MambaESRError, match=r"needs PyAV.*mambaesr-runtime\[video\]"):
                upscale_video(up, src, tmp_path / name, **kwargs)
    monkeypatch.undo()
    assert stream_facts(dst) == [("video", "mpeg4", 128, 96)]  # OpenCV's mp4v, picture only
