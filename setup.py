"""MambaESR runtime. Metadata lives here (the design card asks for setup.py); pyproject.toml holds tool settings.

The base install is the runtime only: ONNX Runtime, NumPy, psutil, safetensors, PyYAML. OpenCV is the ``opencv``
extra: PyPI's wheels have no GStreamer and would shadow JetPack's OpenCV (which has it, for CSI cameras), so a Jetson
installs ``.[jetson]`` and keeps JetPack's; desktops and the Pi install ``.[opencv]``. PyTorch comes with the
``torch`` extra (model, export, training; it brings OpenCV too); install it pinned, e.g.
``pip install torch==2.13.0 -e '.[torch]'``. Pillow (photo metadata: EXIF orientation, ICC profiles) and tqdm (the
progress bars) are small pure-Python or wheel-only requirements of the runtime. PyAV is the ``video`` extra: H.264,
audio and subtitles kept, real timestamps (its wheels bundle FFmpeg with libx264/libx265: see docs/running.md's
licence note); without it, videos go through OpenCV, picture only. Ray Data is the ``ray`` extra (Python >= 3.10):
``mambaesr-run SRC -o DST --ray`` scales a folder out over a cluster.
"""

from pathlib import Path

from setuptools import find_packages, setup

OPENCV = ["opencv-python-headless>=4.6"]
TORCH = ["torch>=2.1"] + OPENCV  # training and export read images: a dev machine, never the Jetson itself
EXPORT = TORCH + ["onnx>=1.14", "onnxsim>=0.4"]

setup(
    name="mambaesr-runtime",
    version="0.1.0",
    description="Edge x4 super-resolution: a lightweight multi-directional Mamba network, ONNX/TensorRT export and an "
                "ONNX Runtime / TensorRT runtime with overlapped tiling",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The device side (runtime, backends, profiles, manifests, monitor, --plans-only, the torch-free CLIs) runs on
    # 3.8 (JetPack 5) to 3.13; the torch extra's parts need 3.9+. scripts/check_python_versions.py checks both.
    python_requires=">=3.8",
    # The design card keeps device profiles in the top-level profiles/ folder; they install as package data.
    packages=find_packages(include=["mambaesr_runtime", "mambaesr_runtime.*"]) + ["mambaesr_runtime.profiles_data"],
    package_dir={"mambaesr_runtime.profiles_data": "profiles"},
    include_package_data=True,
    package_data={"mambaesr_runtime": ["weights/*.onnx", "weights/*.safetensors", "weights/*.json", "weights/*.md",
                                       "data/*.png"],
                  "mambaesr_runtime.evaluation": ["dataset_sources.json"],
                  "mambaesr_runtime.export": ["tensorrt_ops.json"],
                  "mambaesr_runtime.profiles_data": ["*.yaml", "README.md"]},
    install_requires=[
        "numpy>=1.22",
        "onnxruntime>=1.15",
        "psutil>=5.9",
        "safetensors>=0.3",
        "PyYAML>=6.0",
        "Pillow>=8.2",  # Exif.get_ifd; Pillow 10.4 is the last release for Python 3.8
        "tqdm>=4.38",  # tqdm.contrib.logging
    ],
    extras_require={
        "opencv": OPENCV,
        "torch": EXPORT,
        "export": EXPORT,
        "test": ["pytest>=7", "hypothesis>=6"] + OPENCV,
        # On a Jetson: TensorRT's Python bindings (python3-libnvinfer) and OpenCV with GStreamer (nvidia-opencv) come
        # with JetPack, not from pip; no opencv here, so pip never shadows JetPack's cv2.
        "jetson": ["pycuda>=2022.1", "jetson-stats>=4.2"],
        "nvml": ["nvidia-ml-py>=12"],
        # PyAV for video files (H.264/HEVC/VP9/AV1, audio and subtitles copied, timestamps kept). Tested with 18.1;
        # 14 is the first release whose output containers say which codecs they hold (supported_codecs).
        "video": ["av>=14"],
        # Ray Data for the distributed folder run (mambaesr-run SRC -o DST --ray, mambaesr_runtime.distributed); the
        # cluster side, never the device. 2.30 is the oldest release its tests passed on here (2.30, 2.41, 2.60 with
        # pyarrow 26); 2.20 and 2.10 fail to import against current pyarrow. Ray needs Python >= 3.10 for current
        # releases, so the extra is empty below it (and --ray says why).
        "ray": ["ray[data]>=2.30; python_version >= '3.10'"],
    },
    entry_points={
        "console_scripts": [
            "mambaesr-run=mambaesr_runtime.cli.run:main",
            "mambaesr-demo=mambaesr_runtime.cli.demo:main",
            "mambaesr-train=mambaesr_runtime.cli.train:main",
            "mambaesr-eval=mambaesr_runtime.cli.eval:main",
            "mambaesr-export=mambaesr_runtime.cli.export:main",
            "mambaesr-monitor=mambaesr_runtime.cli.monitor:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
