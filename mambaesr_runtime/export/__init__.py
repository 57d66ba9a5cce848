"""Checkpoint -> verified artifacts: ONNX export, simplification and parity against PyTorch (needs torch and onnx),
the fp16 and int8 graphs, the TensorRT op-table check, and TensorRT plan building with its parity check (the
``--plans-only`` / ``--adopt-plan`` path needs neither torch nor onnx). What the artifacts are (names, manifests,
TensorRT versions) is the torch-free contract in :mod:`mambaesr_runtime.artifacts`."""
