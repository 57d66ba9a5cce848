"""ONNX export (needs torch and onnx). TensorRT engine building and manifests live here too."""
