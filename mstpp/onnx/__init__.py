"""The ONNX pipeline of MST++, one small step per module, each a function from file to file:

    export.py      MST++ (PyTorch) -> ONNX, with the weight map in the metadata (weight_map.py)
    simplify.py    onnxslim / onnxsim, weight map kept valid
    rewrite.py     the q/k L2 norms written as ReduceL2, ReduceSum, ReduceSumSquare or a GEMV
    fp16.py        FP16 with FP32 statistics (L2 sums of squares, LayerNorm, softmax)
    quantize.py    explicit Q/DQ INT8 (Conv only) from calibrated ranges (ranges.py: one image at a time)
    cache.py       the build cache folder and the on-demand ONNX files of the runners
    check.py       is it MST++, and does onnxruntime agree with PyTorch
    weight_map.py  which initializer holds which state-dict entry; weights back out of an ONNX file

Dependencies point one way: cache -> export/simplify/rewrite/fp16/quantize -> weight_map/check; nothing
here imports the runners (mstpp.backends) or TensorRT (mstpp.trt).
"""
