"""Engine runners behind one protocol: ``infer(float32 (N, 3, h, w) in [0, 1]) -> (N, 3, s*h, s*w)``."""
