"""OpenCV for the runtime: imported once, with a fix that fits the machine when it is missing, and what it can open.

PyPI's ``opencv-python`` / ``opencv-python-headless`` wheels are built without GStreamer, and installing one shadows
the OpenCV JetPack provides (NVIDIA's ``nvidia-opencv`` / ``libopencv-python`` packages, built with GStreamer), so a
CSI camera (``nvarguscamerasrc ! ... ! appsink``) could no longer be opened. OpenCV is therefore the ``opencv`` extra
(desktops, the Raspberry Pi), not a requirement: on a Jetson the runtime uses JetPack's. Whether a build has GStreamer
is in ``cv2.getBuildInformation()``, section "Video I/O", line ``GStreamer: YES (1.20.3)`` or ``GStreamer: NO``.
"""

from __future__ import annotations

import re

from ..errors import DependencyError

OPENCV_FIX = ("on a desktop or a Raspberry Pi: pip install 'mambaesr-runtime[opencv]' (PyPI's opencv-python-headless); "
              "on a Jetson use JetPack's OpenCV, which has GStreamer for CSI cameras: sudo apt install nvidia-opencv "
              "(JetPack 5.1 and 6.x), and do not pip-install opencv-python(-headless) over it")
GSTREAMER_FIX = ("PyPI's opencv-python and opencv-python-headless wheels are built without GStreamer. On a Jetson, "
                 "remove them (pip uninstall opencv-python opencv-python-headless) so JetPack's OpenCV is used "
                 "(sudo apt install nvidia-opencv if it is missing), and install MambaESR without the opencv extra: "
                 "pip install '.[jetson]'. Elsewhere, use an OpenCV built with -D WITH_GSTREAMER=ON (e.g. the "
                 "distribution's python3-opencv)")

try:
    import cv2
except ImportError as exc:  # the runtime reads and writes every image and video through OpenCV
    raise DependencyError(f"the runtime reads and writes images and videos with OpenCV (cv2), which is not "
                          f"installed: {OPENCV_FIX}") from exc

__all__ = ["GSTREAMER_FIX", "OPENCV_FIX", "cv2", "describe_opencv", "gstreamer_status"]

_GSTREAMER_LINE = re.compile(r"^\s*GStreamer:\s*(.+?)\s*$", re.MULTILINE)


def gstreamer_status(build_information: str | None = None) -> bool | None:
    """Whether this OpenCV was built with GStreamer, from ``cv2.getBuildInformation()`` (or the text given): True
    for ``GStreamer: YES ...``, False for ``NO``, None when the build information has no such line."""
    text = cv2.getBuildInformation() if build_information is None else build_information
    match = _GSTREAMER_LINE.search(text)
    if match is None:
        return None
    return match.group(1).upper().startswith("YES")


def describe_opencv() -> str:
    """Which OpenCV this is and where it was imported from (a pip wheel shadowing JetPack's shows here)."""
    return f"OpenCV {cv2.__version__} from {getattr(cv2, '__file__', '?')}"
