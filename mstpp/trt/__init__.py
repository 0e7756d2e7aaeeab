"""TensorRT helpers: version detection, builder settings, plan metadata, the MST++ network.

Nothing here imports TensorRT at module import; ``version.import_trt()`` does, on demand.
"""
