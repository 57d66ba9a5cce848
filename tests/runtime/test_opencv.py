"""OpenCV on a Jetson: a GStreamer pipeline (CSI camera) needs an OpenCV built with GStreamer, which PyPI's wheels are
not; opening one with such a cv2 is refused with the fix, and the package never pulls a PyPI OpenCV onto a Jetson."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import cv2
import numpy as np
import pytest

from mambaesr_runtime.runtime import video
from mambaesr_runtime.runtime.opencv import gstreamer_status
from mambaesr_runtime.runtime.video import VideoError, is_camera, open_source

CSI = ("nvarguscamerasrc ! video/x-raw(memory:NVMM),width=640,height=360,framerate=30/1 ! nvvidconv ! "
       "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink")
BUILD_INFO = """
  Video I/O:
    DC1394:                      NO
    FFMPEG:                      YES
      avcodec:                   YES (58.54.100)
    GStreamer:                   {}
    v4l/v4l2:                    YES (linux/videodev2.h)
"""


def test_gstreamer_status_reads_the_build_information():
    assert gstreamer_status(BUILD_INFO.format("YES (1.16.3)")) is True  # JetPack 5's OpenCV 4.5.4
    assert gstreamer_status(BUILD_INFO.format("NO")) is False  # PyPI's wheels
    assert gstreamer_status("  Video I/O:\n    FFMPEG: YES\n") is None
    assert gstreamer_status() in (True, False)  # the cv2 installed here says one or the other


def test_a_pipeline_with_an_opencv_without_gstreamer_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: BUILD_INFO.format("NO"))
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: pytest.fail("must be refused before opening"))
    with pytest.raises(VideoError) as err:
        open_source(CSI)
    message = str(err.value)
    assert "built without GStreamer" in message and "'GStreamer: NO'" in message
    assert "pip uninstall opencv-python opencv-python-headless" in message and "nvidia-opencv" in message
    assert f"OpenCV {cv2.__version__} from" in message  # which cv2 was loaded (a pip wheel shadowing JetPack's)


class FakePipeline:
    """Stands in for cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER) on a Jetson: a live source of BGR frames."""

    def __init__(self, pipeline, api, opened=True):
        self.pipeline, self.api, self.opened = pipeline, api, opened

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 20, cv2.CAP_PROP_FRAME_HEIGHT: 12, cv2.CAP_PROP_FPS: 30.0,
                cv2.CAP_PROP_FRAME_COUNT: -1}.get(prop, 0)

    def read(self):
        return True, np.zeros((12, 20, 3), np.uint8)

    def release(self):
        pass


def test_a_pipeline_with_gstreamer_is_opened_through_cap_gstreamer_as_a_live_source(monkeypatch):
    opened = []
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: BUILD_INFO.format("YES (1.20.3)"))
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: opened.append(a) or FakePipeline(*a))
    cap, info = open_source(CSI)
    cap.release()
    assert opened == [(CSI, cv2.CAP_GSTREAMER)] and is_camera(CSI)
    assert (info.width, info.height, info.frames) == (20, 12, None)  # live: no frame count
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: FakePipeline(*a, opened=False))
    with pytest.raises(VideoError, match="cannot be opened: try it with gst-launch-1.0.*argus_socket"):
        open_source(CSI)


def test_mambaesr_run_camera_pipeline_without_gstreamer_exits_with_the_fix(tmp_path, monkeypatch, capsys):
    from mambaesr_runtime.cli.run import main

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: BUILD_INFO.format("NO"))
    assert main(["--camera", CSI, "-o", str(tmp_path / "csi.avi"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "built without GStreamer" in err and "pip install '.[jetson]'" in err
    assert list(tmp_path.iterdir()) == []


def test_without_opencv_the_runtime_names_the_install_for_each_machine():
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from mambaesr_runtime.cli.run import main\n"
            "sys.exit(main(['in.png']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "OpenCV (cv2), which is not installed" in result.stderr
    assert "pip install 'mambaesr-runtime[opencv]'" in result.stderr and "sudo apt install nvidia-opencv" in result.stderr


def test_opencv_is_an_extra_and_never_comes_with_the_jetson_extra():
    requires = metadata.requires("mambaesr-runtime") or []
    opencv = [r for r in requires if r.startswith("opencv")]
    assert opencv and all("extra ==" in r for r in opencv)  # not in the base install
    extras = {r.split('extra == "')[1].rstrip('"') for r in opencv}
    assert {"opencv", "torch", "test"} <= extras and "jetson" not in extras
