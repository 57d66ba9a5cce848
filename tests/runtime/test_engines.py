"""Engine selection per profile tier: backend order and fallbacks, explicit backends, torch vs ONNX Runtime
agreement on the same artifact, tier switching, streams and videos (tiny engines exported by the real pipeline)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from mambaesr_runtime.cli.run import main as run_main
from mambaesr_runtime.errors import BackendError, ConfigError, MambaESRError
from mambaesr_runtime.export.pipeline import export_profile
from mambaesr_runtime.model.checkpoint import save_checkpoint
from mambaesr_runtime.profiles import Tier, load_profile
from mambaesr_runtime.runtime.upscaler import Upscaler
from mambaesr_runtime.runtime.video import open_source, upscale_video
from tinymodels import untrained


def tiny_profile(base="orin"):
    """The orin profile (TensorRT first, then ONNX Runtime) with two tiny tiers."""
    return dataclasses.replace(load_profile(base), name="tiny-orin", tiers=(
        Tier("big", "tiny", 24, 4, 2), Tier("small", "tiny", 16, 2, 3)))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """A folder with the tiny checkpoint and its ONNX engines for both tiers, as mambaesr-export writes them."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("engines")
    ckpt = folder / "tiny_x4.safetensors"
    save_checkpoint(untrained("tiny"), ckpt, variant="tiny")
    export_profile(dataclasses.replace(tiny_profile(), tensorrt=None, precision="fp32"), folder, [ckpt])
    return folder


def test_tensorrt_missing_falls_back_to_onnxruntime_with_the_reason(engines):
    with Upscaler(tiny_profile(), engines_dir=engines) as up:
        sel = up.engine
        assert sel.kind == "onnxruntime" and sel.path == engines / "tiny_x4_t24_b2.onnx"
        assert sel.precision == "fp32"  # the profile's fp16 names its TensorRT plans; ORT runs the fp32 graph
        [(kind, reason)] = sel.skipped
        assert kind == "tensorrt" and "tiny_x4_t24_b2_fp16.plan" in reason and "mambaesr-export" in reason
        assert "skipped tensorrt" in up.describe()


def test_an_explicit_backend_gets_no_fallback(engines):
    with pytest.raises(BackendError, match="tiny_x4_t24_b2_fp16.plan"):
        Upscaler(tiny_profile(), engines_dir=engines, backend="tensorrt")
    with pytest.raises(ConfigError, match="fp16 needs the tensorrt backend"):
        Upscaler(tiny_profile(), engines_dir=engines, backend="onnxruntime", precision="fp16")
    with pytest.raises(ConfigError, match="backend 'tflite' is not one of"):
        Upscaler(tiny_profile(), engines_dir=engines, backend="tflite")


def test_no_engine_anywhere_lists_every_reason(tmp_path):
    with pytest.raises(BackendError, match=r"tensorrt: .*onnxruntime: .*tiny_x4_t24_b2.onnx"):
        Upscaler(tiny_profile(), engines_dir=tmp_path)


def test_torch_and_onnxruntime_agree_on_the_same_artifact(engines):
    """The ORT engine and the checkpoint it was exported from, through the torch backend: <= 1e-4."""
    x = np.random.default_rng(0).random((2, 3, 24, 24), dtype=np.float32)
    img = (np.random.default_rng(1).random((37, 29, 3)) * 255).astype(np.uint8)
    with Upscaler(tiny_profile(), engines_dir=engines, backend="onnxruntime") as ort_up, \
            Upscaler(tiny_profile(), engines_dir=engines, backend="torch") as torch_up:
        assert torch_up.engine.kind == "torch" and torch_up.engine.backend.input_shape == (2, 3, 24, 24)
        diff = np.abs(ort_up.engine.backend.infer(x) - torch_up.engine.backend.infer(x)).max()
        assert diff <= 1e-4
        a, b = ort_up.upscale(img), torch_up.upscale(img)
        assert a.shape == b.shape == (148, 116, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # uint8 rounding of <= 1e-4 differences


def test_tiers_switch_between_images_and_stay_warm(engines):
    img = np.full((20, 20, 3), 128, np.uint8)
    with Upscaler(tiny_profile(), engines_dir=engines, tier="small") as up:
        assert up.tier == "small" and up.engine.backend.input_shape == (3, 3, 16, 16)
        up.use_tier("big")
        first = up.engine
        assert up.upscale(img).shape == (80, 80, 3)
        up.use_tier("small")
        up.use_tier("big")
        assert up.engine is first  # kept open: switching back costs no load
        with pytest.raises(ConfigError, match="no tier 'huge'.*'big', 'small'"):
            up.use_tier("huge")
    with pytest.raises(MambaESRError, match="closed"):
        up.upscale(img)


class ScriptedController:
    """Chooses tiers from a fixed list, one per frame, and records the latencies it is given."""

    def __init__(self, plan):
        self.plan, self.latencies = list(plan), []

    def before_frame(self):
        return self.plan[len(self.latencies)]

    def after_frame(self, latency_ms):
        self.latencies.append(latency_ms)


def test_stream_consults_the_controller_between_frames(engines):
    frames = [np.full((18, 22, 3), 10 * i, np.uint8) for i in range(5)]
    ctl = ScriptedController(["big", "big", "small", "small", "big"])
    with Upscaler(tiny_profile(), engines_dir=engines, controller=ctl) as up:
        outs = []
        for out in up.stream(frames):
            outs.append((up.tier, out.shape))
    assert [t for t, _ in outs] == ctl.plan
    assert all(shape == (72, 88, 3) for _, shape in outs)
    assert len(ctl.latencies) == 5 and all(ms > 0 for ms in ctl.latencies)


def _clip(path, n=7, size=(20, 14)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, : 2 + 2 * i] = (40 * i) % 255
        writer.write(frame)
    writer.release()
    return path


def test_video_keeps_the_frame_count_at_4x(engines, tmp_path):
    src = _clip(tmp_path / "clip.avi")
    with Upscaler(tiny_profile(), engines_dir=engines) as up:
        dst, n = upscale_video(up, src, tmp_path / "out.avi")
    assert n == 7
    cap, info = open_source(dst)
    cap.release()
    assert (info.width, info.height, info.frames) == (80, 56, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out.avi"]  # no temp file left


def test_video_errors_leave_nothing(engines, tmp_path):
    src = _clip(tmp_path / "clip.avi")
    not_video = tmp_path / "notes.avi"
    not_video.write_text("hello")
    with Upscaler(tiny_profile(), engines_dir=engines) as up:
        with pytest.raises(MambaESRError, match="cannot be opened"):
            upscale_video(up, not_video, tmp_path / "o1.avi")
        with pytest.raises(MambaESRError, match="cannot write .gif video"):
            upscale_video(up, src, tmp_path / "o2.gif")
        with pytest.raises(MambaESRError, match="the input itself"):
            upscale_video(up, src, src, overwrite=True)
        (tmp_path / "exists.avi").write_bytes(b"keep")
        with pytest.raises(MambaESRError, match="overwrite=True"):
            upscale_video(up, src, tmp_path / "exists.avi")
    assert (tmp_path / "exists.avi").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "exists.avi", "notes.avi"]


def test_cli_profile_flags_and_video(engines, tmp_path, capsys):
    src = _clip(tmp_path / "clip.avi", n=4)
    yaml_profile = tmp_path / "board.yaml"
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath("orin.yaml").read_text())
    data.update(name="board", tiers=[{"name": "big", "variant": "tiny", "tile": 24, "overlap": 4, "batch": 2}])
    yaml_profile.write_text(yaml.safe_dump(data))
    args = ["--profile", str(yaml_profile), "--engines", str(engines), "-q"]
    assert run_main([str(src), "-o", str(tmp_path / "big.avi"), "-v"] + args) == 0
    captured = capsys.readouterr()
    assert "(4 frames)" in captured.out and "skipped tensorrt" in captured.err
    assert run_main([str(src), "-o", str(tmp_path / "b2.avi"), "--backend", "tensorrt"] + args) == 2
    assert "_fp16.plan" in capsys.readouterr().err
    assert run_main([str(src), "-o", str(tmp_path / "b3.avi"), "--device", "mars"]) == 2
    assert "unknown device 'mars'" in capsys.readouterr().err
    assert run_main([str(src), "-o", str(tmp_path / "b4.avi"), "--tile", "32"] + args) == 2
    assert "tiny_x4_t32_b2.onnx" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("b2.avi", "b3.avi", "b4.avi"))


def test_default_profile_runs_the_shipped_student():
    with Upscaler() as up:
        sel = up.engine
        assert up.profile.name == "cpu" and sel.kind == "onnxruntime" and sel.tier.variant == "student"
        assert sel.path.name == "student_x4_t264_b1.onnx" and up.scale == 4


def test_cli_adaptive_replay_switches_tiers_between_frames(engines, tmp_path, capsys):
    """mambaesr-run --replay: a recorded trace that heats up at frame 2 moves the clip to the lighter tier there,
    and every frame is still written at 4x."""
    from importlib import resources

    import yaml

    from mambaesr_runtime.runtime.monitor import Telemetry, save_trace

    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath("orin.yaml").read_text())
    data.update(name="board", backends=["onnxruntime"], tiers=[
        {"name": "big", "variant": "tiny", "tile": 24, "overlap": 4, "batch": 2},
        {"name": "small", "variant": "tiny", "tile": 16, "overlap": 2, "batch": 3}])
    profile = tmp_path / "board.yaml"
    profile.write_text(yaml.safe_dump(data))
    trace = save_trace(tmp_path / "trace.json", [Telemetry(timestamp=float(i), temps_c={"gpu": 50.0 if i < 2 else 95.0})
                                                 for i in range(6)])
    src = _clip(tmp_path / "clip.avi", n=5)
    assert run_main([str(src), "-o", str(tmp_path / "out.avi"), "--profile", str(profile), "--engines",
                     str(engines), "--replay", str(trace), "-q"]) == 0
    err = capsys.readouterr().err
    assert "tier switch at frame/file 2: big -> small" in err and "1 tier switches" in err
    cap, info = open_source(tmp_path / "out.avi")
    cap.release()
    assert (info.frames, info.width, info.height) == (5, 80, 56)


def test_200_frames_through_the_upscaler_follow_a_replayed_trace(engines):
    """End to end: 200 frames stream through the Upscaler while a replayed trace heats up (frame 50) and cools
    down (frame 120): the tier steps down at frame 50 and back up once the clear dwell (10 s of trace time, 40
    frames at 0.25 s) has passed; every frame comes out, in order, valid and 4x."""
    from mambaesr_runtime.runtime.adaptive import AdaptiveController
    from mambaesr_runtime.runtime.monitor import ReplayMonitor, Telemetry

    profile = tiny_profile()
    trace = [Telemetry(timestamp=0.25 * i, temps_c={"soc": 95.0 if 50 <= i < 120 else 50.0}) for i in range(200)]
    frames = [np.full((12, 10, 3), i % 256, np.uint8) for i in range(200)]
    tiers = []
    with Upscaler(profile, engines_dir=engines) as ref:  # each frame on each tier, without a controller
        expected = {}
        for name in ("big", "small"):
            ref.use_tier(name)
            expected[name] = [ref.upscale(f) for f in frames]
    with AdaptiveController(profile, ReplayMonitor(trace)) as ctl, \
            Upscaler(profile, engines_dir=engines, controller=ctl) as up:
        for i, out in enumerate(up.stream(frames)):
            tiers.append(up.tier)
            assert out.shape == (48, 40, 3) and out.dtype == np.uint8
            np.testing.assert_array_equal(out, expected[up.tier][i])  # this frame's output, on its tier
    assert len(tiers) == 200
    assert [(e.frame, e.from_tier, e.to_tier) for e in ctl.events] == [(50, "big", "small"), (160, "small", "big")]
    assert tiers[49] == "big" and tiers[50:160] == ["small"] * 110 and tiers[160:] == ["big"] * 40
    assert "95" in ctl.events[0].reason


def test_max_open_engines_closes_the_least_recently_used(engines):
    with Upscaler(tiny_profile(), engines_dir=engines, max_open_engines=1) as up:
        big = up.engine
        up.use_tier("small")
        assert list(up._engines) == ["small"] and big.backend._session is None  # closed, memory released
        assert up.upscale(np.zeros((8, 8, 3), np.uint8)).shape == (32, 32, 3)
        up.use_tier("big")
        assert list(up._engines) == ["big"]
    with pytest.raises(ConfigError, match="max_open_engines must be >= 1"):
        Upscaler(tiny_profile(), engines_dir=engines, max_open_engines=0)


def test_concurrent_upscales_across_tier_switches_never_lose_their_engine(engines, monkeypatch):
    """Several threads upscale while another keeps switching tiers with room for one open engine: every switch
    evicts the engine the other threads may be running. Each image must finish on the engine it started on (the
    evicted one is closed only after its last image), and come out as that tier makes it."""
    import threading
    import time

    img = (np.random.default_rng(3).random((48, 72, 3)) * 255).astype(np.uint8)  # several engine calls per image
    expected = {}
    with Upscaler(tiny_profile(), engines_dir=engines) as up:
        for name in ("big", "small"):
            up.use_tier(name)
            expected[name] = up.upscale(img)
    assert not np.array_equal(expected["big"], expected["small"])  # the tiers are told apart by their output

    # Slow engine calls (as on a real device) keep images running while the switcher evicts their engine.
    from mambaesr_runtime.backends.onnxruntime import OrtBackend

    fast = OrtBackend.infer_impl
    monkeypatch.setattr(OrtBackend, "infer_impl", lambda self, x: (time.sleep(0.02), fast(self, x))[1])
    errors, outputs, stop = [], [], threading.Event()
    with Upscaler(tiny_profile(), engines_dir=engines, max_open_engines=1) as up:
        opened = []

        def switch():
            while not stop.is_set():
                for name in ("small", "big"):
                    up.use_tier(name)
                    opened.append(up.engine.backend)

        def work():
            try:
                for _ in range(6):
                    outputs.append(up.upscale(img))
            except Exception as exc:  # noqa: BLE001 - collected and reported by the assertion below
                errors.append(exc)

        switcher = threading.Thread(target=switch)
        workers = [threading.Thread(target=work) for _ in range(3)]
        switcher.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        switcher.join()
        assert errors == []
        assert len(outputs) == 18
        assert all(any(np.array_equal(out, e) for e in expected.values()) for out in outputs)
        assert len({id(b) for b in opened}) > 2  # engines really were evicted and reopened meanwhile
        current = up.engine.backend
        assert all(b.closed for b in opened if b is not current)  # every evicted engine was closed in the end
    assert current.closed


class FakeCamera:
    """Stands in for cv2.VideoCapture(index): a camera that delivers frames until the user presses Ctrl+C."""

    def __init__(self, index, frames_before_interrupt=4):
        self.index, self.left = index, frames_before_interrupt

    def isOpened(self):
        return self.index == 0

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 20, cv2.CAP_PROP_FRAME_HEIGHT: 14, cv2.CAP_PROP_FPS: 30.0,
                cv2.CAP_PROP_FRAME_COUNT: -1}.get(prop, 0)

    def read(self):
        if self.left == 0:
            raise KeyboardInterrupt  # the user stops the capture
        self.left -= 1
        return True, np.full((14, 20, 3), (60 * self.left) % 256, np.uint8)

    def release(self):
        pass


def test_camera_capture_stopped_by_ctrl_c_is_a_complete_video(engines, tmp_path, monkeypatch):
    from mambaesr_runtime.runtime import video

    real = cv2.VideoCapture
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda src, *a: FakeCamera(src) if isinstance(src, int)
                        else real(src, *a))
    with Upscaler(tiny_profile(), engines_dir=engines) as up:
        dst, n = upscale_video(up, 0, tmp_path / "cam.avi")
        assert n == 4
        with pytest.raises(MambaESRError, match="camera 3 cannot be opened"):
            upscale_video(up, 3, tmp_path / "none.avi")
    cap, info = open_source(dst)
    cap.release()
    assert (info.width, info.height, info.frames) == (80, 56, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.avi"]
    # --frames bounds a camera that never stops
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda src, *a: FakeCamera(src, 10**6) if isinstance(src, int)
                        else real(src, *a))
    assert run_main(["--camera", "0", "--frames", "6", "-o", str(tmp_path / "cam2.avi"), "--profile",
                     str(_write_profile(tmp_path)), "--engines", str(engines), "-q"]) == 0
    cap, info = open_source(tmp_path / "cam2.avi")
    cap.release()
    assert info.frames == 6


def _write_profile(tmp_path):
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath("orin.yaml").read_text())
    data.update(name="board", backends=["onnxruntime"],
                tiers=[{"name": "big", "variant": "tiny", "tile": 24, "overlap": 4, "batch": 2}])
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
