"""Serving MST++ through Triton Inference Server.

* :mod:`.environment`: the checks a serving process makes before it starts (numpy < 2 for PyTriton, the
  interpreter's shared libpython on the loader path of Triton's Python-backend stub);
* :mod:`.limits`: what a request may hold (minimum image side, size caps) and the checks that name a problem;
* :mod:`.worker`: one route's runner on one device, warmed up, behind a lock;
* :mod:`.server`: the PyTriton models ``mstpp`` (RGB tensors) and ``mstpp_image`` (encoded image bytes);
* :mod:`.repository`: a model repository for NVIDIA's Triton container (``tensorrt_plan``, ``onnxruntime_onnx``);
* :mod:`.client`: the load generator of ``performance_serving.py`` and the tests.

Only :mod:`.server` and :mod:`.client` import PyTriton / tritonclient, so the rest works in any environment.
"""
