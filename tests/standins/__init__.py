"""Recording stand-ins for hardware libraries the CI machine cannot install (TensorRT, PyCUDA, jtop)."""
