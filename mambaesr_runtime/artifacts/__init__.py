"""The artifact contract: what an exported engine file is, what it is called and where the shipped ones live.

Export writes artifacts (ONNX files, TensorRT plans, their manifests); the backends and the runtime read them. Both
sides import this package and neither imports the other's, so it must stay torch- and onnx-free and run on Python
3.8 (the device side): ``names`` (file names, the shipped folder, which backend runs a file), ``manifest`` (the JSON
beside every artifact) and ``tensorrt`` (TensorRT targets, versions and the process's one logger).
"""
