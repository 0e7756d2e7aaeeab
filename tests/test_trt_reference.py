"""Tests of the reference INetworkDefinition executor (the test-support package tests/trt_reference/) against PyTorch.

Each layer is checked on a small case against the PyTorch op it stands for; each strong-typing / axes rule is
checked to raise. Where ``tensorrt_rtx`` is installed, ``test_agrees_with_tensorrt_rtx_builder`` builds the same
tiny networks with the real TensorRT-RTX builder on CPU and checks that both accept or both refuse them, and
that accepted ones have the same build-time shapes and dtypes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trt_reference as ref  # tests/ is on the path (pytest.ini)

T = ref.ref_trt
RNG = np.random.default_rng(0)


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def run_one(net: ref.ReferenceNetwork, out: ref.ReferenceTensor, **inputs: Any) -> torch.Tensor:
    """Mark ``out`` and execute with the given inputs; returns that output."""
    out.name = "out"
    net.mark_output(out)
    return net.execute(inputs)["out"]


def const(net: ref.ReferenceNetwork, array: np.ndarray) -> ref.ReferenceTensor:
    return net.add_constant(array.shape, array).get_output(0)


# ----------------------------------------------------------------------------------------------------------------
# Layers against PyTorch
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups,stride,pad,dilation", [(1, 1, 1, 1), (2, 2, 1, 1), (4, 1, 1, 1), (2, 1, 2, 2)])
def test_convolution_matches_torch(groups: int, stride: int, pad: int, dilation: int) -> None:
    x, w, b = rand(2, 4, 9, 7), rand(8, 4 // groups, 3, 3), rand(8)
    net = ref.create_reference_network()
    layer = net.add_convolution_nd(net.add_input("x", T.float32, (2, 4, 9, 7)), 8, (3, 3), w, b)
    layer.stride_nd, layer.padding_nd, layer.dilation_nd = (stride, stride), (pad, pad), (dilation, dilation)
    layer.num_groups = groups
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, pad, dilation, groups)
    assert layer.get_output(0).shape == tuple(expected.shape)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_convolution_asymmetric_padding_and_dynamic_shape() -> None:
    x, w = rand(1, 3, 6, 5), rand(2, 3, 3, 3)
    net = ref.create_reference_network()
    layer = net.add_convolution_nd(net.add_input("x", T.float32, (1, 3, -1, -1)), 2, (3, 3), w)
    layer.pre_padding, layer.post_padding = (0, 1), (2, 0)
    assert layer.get_output(0).shape == (1, 2, -1, -1)
    expected = F.conv2d(F.pad(torch.from_numpy(x), (1, 0, 0, 2)), torch.from_numpy(w))
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_convolution_fp16_accumulates_in_fp32() -> None:
    x, w, b = rand(1, 8, 5, 5, dtype=np.float16), rand(8, 1, 3, 3, dtype=np.float16), rand(8, dtype=np.float16)
    net = ref.create_reference_network()
    layer = net.add_convolution_nd(net.add_input("x", T.float16, (1, 8, 5, 5)), 8, (3, 3), w, b)
    layer.padding_nd, layer.num_groups = (1, 1), 8  # depthwise, as in MST++'s FFN
    got = run_one(net, layer.get_output(0), x=x)
    expected = F.conv2d(*(torch.from_numpy(a).float() for a in (x, w, b)), padding=1, groups=8).half()
    assert got.dtype == torch.float16 and layer.get_output(0).dtype == T.float16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("groups", [1, 2])
def test_deconvolution_stride2_matches_conv_transpose(groups: int) -> None:
    x, w, b = rand(1, 4, 5, 3), rand(4, 6 // groups, 2, 2), rand(6)
    net = ref.create_reference_network()
    layer = net.add_deconvolution_nd(net.add_input("x", T.float32, (1, 4, 5, 3)), 6, (2, 2), w, b)
    layer.stride_nd, layer.num_groups = (2, 2), groups
    assert layer.get_output(0).shape == (1, 6, 10, 6)
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2, groups=groups)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_deconvolution_padding_crops() -> None:
    x, w = rand(1, 2, 4, 4), rand(2, 3, 3, 3)
    net = ref.create_reference_network()
    layer = net.add_deconvolution_nd(net.add_input("x", T.float32, (1, 2, 4, 4)), 3, (3, 3), w)
    layer.stride_nd, layer.padding_nd = (2, 2), (1, 1)
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1)
    assert layer.get_output(0).shape == tuple(expected.shape)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_matmul_transpose_and_batch_broadcast() -> None:
    a, b = rand(2, 1, 3, 4), rand(1, 5, 6, 4)
    net = ref.create_reference_network()
    layer = net.add_matrix_multiply(net.add_input("a", T.float32, a.shape), T.MatrixOperation.NONE,
                                    net.add_input("b", T.float32, b.shape), T.MatrixOperation.TRANSPOSE)
    assert layer.get_output(0).shape == (2, 5, 3, 6)
    expected = torch.from_numpy(a) @ torch.from_numpy(b).transpose(-1, -2)
    torch.testing.assert_close(run_one(net, layer.get_output(0), a=a, b=b), expected)


def test_matmul_vector_operand() -> None:
    a, b = rand(2, 3, 4), rand(2, 4)
    net = ref.create_reference_network()
    layer = net.add_matrix_multiply(net.add_input("a", T.float32, a.shape), T.MatrixOperation.NONE,
                                    net.add_input("b", T.float32, b.shape), T.MatrixOperation.VECTOR)
    assert layer.get_output(0).shape == (2, 3)
    expected = (torch.from_numpy(a) @ torch.from_numpy(b).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(run_one(net, layer.get_output(0), a=a, b=b), expected)


def test_elementwise_broadcast_ops_and_types() -> None:
    a, b = rand(2, 1, 4), rand(1, 3, 4)
    net = ref.create_reference_network()
    ta, tb = net.add_input("a", T.float32, a.shape), net.add_input("b", T.float32, b.shape)
    ops = {"sum": T.ElementWiseOperation.SUM, "div": T.ElementWiseOperation.DIV, "max": T.ElementWiseOperation.MAX,
           "pow": T.ElementWiseOperation.POW, "less": T.ElementWiseOperation.LESS}
    for name, op in ops.items():
        out = net.add_elementwise(ta, tb, op).get_output(0)
        out.name = name
        net.mark_output(out)
    assert net.get_output(4).dtype == T.bool and net.get_output(0).shape == (2, 3, 4)
    got = net.execute({"a": a, "b": b})
    ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
    torch.testing.assert_close(got["sum"], ta_ + tb_)
    torch.testing.assert_close(got["div"], ta_ / tb_)
    torch.testing.assert_close(got["max"], torch.maximum(ta_, tb_))
    torch.testing.assert_close(got["pow"], torch.pow(ta_, tb_), equal_nan=True)
    assert torch.equal(got["less"], ta_ < tb_)


def test_elementwise_integer_division_semantics() -> None:
    a, b = np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)
    net = ref.create_reference_network()
    ta, tb = net.add_input("a", T.int32, (4,)), net.add_input("b", T.int32, (4,))
    for name, op in (("floor", T.ElementWiseOperation.FLOOR_DIV), ("div", T.ElementWiseOperation.DIV)):
        out = net.add_elementwise(ta, tb, op).get_output(0)
        out.name = name
        net.mark_output(out)
    got = net.execute({"a": a, "b": b})
    assert got["floor"].tolist() == [3, -4, -4, 3]
    assert got["div"].tolist() == [3, -3, -3, 3]


def test_elementwise_fp16_rounds_each_result() -> None:
    a = np.array([2048.0, 1.0], np.float16)
    b = np.array([1.0, 2.0 ** -11], np.float16)  # 2048 + 1 and 1 + 2^-11 are not representable in fp16
    net = ref.create_reference_network()
    out = net.add_elementwise(net.add_input("a", T.float16, (2,)), net.add_input("b", T.float16, (2,)),
                              T.ElementWiseOperation.SUM).get_output(0)
    got = run_one(net, out, a=a, b=b)
    assert got.dtype == torch.float16 and got.tolist() == [2048.0, 1.0]


@pytest.mark.parametrize("mask,keep", [(0b1010, True), (0b0110, False), (0b0001, True), (0b1111, False)])
@pytest.mark.parametrize("op", ["SUM", "AVG", "MAX", "MIN", "PROD"])
def test_reduce_bitmask(mask: int, keep: bool, op: str) -> None:
    x = rand(2, 3, 4, 5)
    net = ref.create_reference_network()
    layer = net.add_reduce(net.add_input("x", T.float32, x.shape), getattr(T.ReduceOperation, op), mask, keep)
    dims = tuple(i for i in range(4) if mask >> i & 1)
    fn = {"SUM": torch.sum, "AVG": torch.mean, "MAX": torch.amax, "MIN": torch.amin}.get(op)
    tx = torch.from_numpy(x)
    if fn is None:  # PROD over several dims
        expected = tx
        for d in dims:
            expected = expected.prod(dim=d, keepdim=True)
        expected = expected if keep else expected.reshape([s for i, s in enumerate(tx.shape) if i not in dims])
    else:
        expected = fn(tx, dim=dims, keepdim=keep)
    assert layer.get_output(0).shape == tuple(expected.shape)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


@pytest.mark.parametrize("shape,default_dim", [((2, 3, 4, 5), 1), ((3, 4), 0), ((2, 3, 4), 0), ((2, 2, 3, 4, 5), 2)])
def test_softmax_default_axis(shape: tuple[int, ...], default_dim: int) -> None:
    x = rand(*shape)
    net = ref.create_reference_network()
    layer = net.add_softmax(net.add_input("x", T.float32, shape))
    assert layer.axes == 1 << default_dim
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), torch.softmax(torch.from_numpy(x), default_dim))


def test_softmax_explicit_axis_fp16() -> None:
    x = rand(2, 3, 31, 31, dtype=np.float16)
    net = ref.create_reference_network()
    layer = net.add_softmax(net.add_input("x", T.float16, x.shape))
    layer.axes = 1 << 3
    expected = torch.softmax(torch.from_numpy(x).float(), dim=-1).half()
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected, rtol=0, atol=0)


def test_shuffle_transpose_reshape_transpose() -> None:
    x = rand(2, 3, 4, 5)
    net = ref.create_reference_network()
    layer = net.add_shuffle(net.add_input("x", T.float32, x.shape))
    layer.first_transpose = (0, 2, 3, 1)  # NCHW -> NHWC
    layer.reshape_dims = (0, -1, 3)  # 0 copies N, -1 = H*W
    layer.second_transpose = (0, 2, 1)
    assert layer.get_output(0).shape == (2, 3, 20)
    expected = torch.from_numpy(x).permute(0, 2, 3, 1).reshape(2, -1, 3).permute(0, 2, 1)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_shuffle_zero_literal_when_not_placeholder() -> None:
    net = ref.create_reference_network()
    layer = net.add_shuffle(net.add_input("x", T.float32, (2, 0, 4)))
    layer.zero_is_placeholder = False
    layer.reshape_dims = (0, 8)
    assert layer.get_output(0).shape == (0, 8)


def test_shuffle_build_shapes_with_dynamic_dims() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float32, (2, -1, 4))
    layer = net.add_shuffle(x)
    layer.reshape_dims = (0, 0, 2, -1)  # the dynamic dim is copied, so -1 is still solvable: (2,-1,2,2)
    assert layer.get_output(0).shape == (2, -1, 2, 2)
    other = net.add_shuffle(x)
    other.reshape_dims = (2, -1)
    assert other.get_output(0).shape == (2, -1)


def test_shuffle_dynamic_reshape_from_shape_tensor() -> None:
    """(N, C, H, W) -> (N, C, H*W) with H, W dynamic, computed from add_shape/gather/elementwise/concat."""
    x = rand(1, 3, 6, 5)
    net = ref.create_reference_network()
    tx = net.add_input("x", T.float32, (1, 3, -1, -1))
    shape = net.add_shape(tx).get_output(0)
    assert shape.shape == (4,) and shape.dtype == T.int64
    nc = net.add_gather(shape, const(net, np.array([0, 1], np.int64)), 0).get_output(0)
    h = net.add_gather(shape, const(net, np.array([2], np.int64)), 0).get_output(0)
    w = net.add_gather(shape, const(net, np.array([3], np.int64)), 0).get_output(0)
    hw = net.add_elementwise(h, w, T.ElementWiseOperation.PROD).get_output(0)
    target = net.add_concatenation([nc, hw])
    target.axis = 0
    layer = net.add_shuffle(tx)
    layer.set_input(1, target.get_output(0))
    assert layer.get_output(0).shape == (1, 3, -1)  # N and C known at build time, H*W not
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), torch.from_numpy(x).reshape(1, 3, 30))


@pytest.mark.parametrize("mode,torch_mode", [("REFLECT", "reflect"), ("CLAMP", "replicate"), ("WRAP", "circular"),
                                             ("FILL", "constant")])
def test_slice_padding_modes_match_f_pad(mode: str, torch_mode: str) -> None:
    x = rand(1, 2, 5, 4)
    net = ref.create_reference_network()
    layer = net.add_slice(net.add_input("x", T.float32, x.shape), (0, 0, -3, -1), (1, 2, 5 + 3 + 2, 4 + 1 + 3), (1, 1, 1, 1))
    layer.mode = getattr(T.SampleMode, mode)
    expected = F.pad(torch.from_numpy(x), (1, 3, 3, 2), mode=torch_mode)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_slice_reflect_pads_beyond_the_size_periodically() -> None:
    x = np.arange(4, dtype=np.float32)
    net = ref.create_reference_network()
    layer = net.add_slice(net.add_input("x", T.float32, (4,)), (-5,), (14,), (1,))
    layer.mode = T.SampleMode.REFLECT
    expected = np.pad(x, (5, 5), mode="reflect")
    assert run_one(net, layer.get_output(0), x=x).tolist() == expected.tolist()


def test_slice_strided_and_negative_stride() -> None:
    x = rand(3, 8)
    net = ref.create_reference_network()
    tx = net.add_input("x", T.float32, x.shape)
    a = net.add_slice(tx, (1, 1), (2, 3), (1, 2)).get_output(0)
    b = net.add_slice(tx, (2, 7), (3, 8), (-1, -1)).get_output(0)
    a.name, b.name = "a", "b"
    net.mark_output(a)
    net.mark_output(b)
    got = net.execute({"x": x})
    torch.testing.assert_close(got["a"], torch.from_numpy(x)[1:3, 1:7:2])
    torch.testing.assert_close(got["b"], torch.from_numpy(x).flip(0, 1))


def test_reflect_pad_then_crop_with_shape_tensor() -> None:
    """MST++'s pad-to-multiple-of-8 and crop back, with dynamic H, W: the crop size is add_shape(input)."""
    x = rand(1, 3, 6, 5)
    net = ref.create_reference_network()
    tx = net.add_input("x", T.float32, (1, 3, -1, -1))
    pad = net.add_slice(tx, (0, 0, 0, 0), (1, 3, 8, 8), (1, 1, 1, 1))
    pad.mode = T.SampleMode.REFLECT
    crop = net.add_slice(pad.get_output(0), (0, 0, 0, 0), (0, 0, 0, 0), (1, 1, 1, 1))
    crop.set_input(2, net.add_shape(tx).get_output(0))
    assert crop.get_output(0).shape == (1, 3, -1, -1)
    torch.testing.assert_close(run_one(net, crop.get_output(0), x=x), torch.from_numpy(x))


@pytest.mark.parametrize("shape,default_axis", [((1, 2, 3, 4), 1), ((2, 3), 0), ((2, 3, 4), 0)])
def test_concat_default_axis(shape: tuple[int, ...], default_axis: int) -> None:
    a, b = rand(*shape), rand(*shape)
    net = ref.create_reference_network()
    layer = net.add_concatenation([net.add_input("a", T.float32, shape), net.add_input("b", T.float32, shape)])
    assert layer.axis == default_axis
    expected = torch.cat([torch.from_numpy(a), torch.from_numpy(b)], dim=default_axis)
    torch.testing.assert_close(run_one(net, layer.get_output(0), a=a, b=b), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_normalization_is_layer_norm(dtype: type) -> None:
    x, g, b = rand(2, 7, 31, dtype=dtype), rand(1, 1, 31, dtype=dtype), rand(1, 1, 31, dtype=dtype)
    net = ref.create_reference_network()
    trt_dtype = T.float32 if dtype == np.float32 else T.float16
    layer = net.add_normalization_v2(net.add_input("x", trt_dtype, x.shape), const(net, g), const(net, b), 1 << 2)
    assert layer.epsilon == pytest.approx(1e-5) and layer.num_groups == 1
    expected = F.layer_norm(torch.from_numpy(x).float(), (31,), torch.from_numpy(g).float().reshape(-1),
                            torch.from_numpy(b).float().reshape(-1), eps=1e-5)
    got = run_one(net, layer.get_output(0), x=x)
    assert got.dtype == torch.from_numpy(x).dtype
    tol = {} if dtype == np.float32 else {"rtol": 1e-3, "atol": 4e-3}
    torch.testing.assert_close(got.float(), expected.to(got.dtype).float(), **tol)


def test_normalization_groups_is_group_norm() -> None:
    x, g, b = rand(2, 6, 4, 3), rand(1, 6, 1, 1), rand(1, 6, 1, 1)
    net = ref.create_reference_network()
    layer = net.add_normalization(net.add_input("x", T.float32, x.shape), const(net, g), const(net, b), 0b1100)
    layer.num_groups = 3
    expected = F.group_norm(torch.from_numpy(x), 3, torch.from_numpy(g).reshape(-1), torch.from_numpy(b).reshape(-1))
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_cast_round_trip_and_truncation() -> None:
    x = np.array([1.7, -1.7, 65519.0, 1e-8], np.float32)
    net = ref.create_reference_network()
    tx = net.add_input("x", T.float32, (4,))
    half = net.add_cast(tx, T.float16).get_output(0)
    back = net.add_cast(half, T.float32).get_output(0)
    ints = net.add_cast(tx, T.int32).get_output(0)
    back.name, ints.name = "back", "ints"
    net.mark_output(back)
    net.mark_output(ints)
    got = net.execute({"x": x})
    assert half.dtype == T.float16 and ints.dtype == T.int32
    torch.testing.assert_close(got["back"], torch.from_numpy(x).half().float())
    assert got["ints"].tolist()[:2] == [1, -1]


def test_unary_and_activation() -> None:
    x = rand(3, 4)
    net = ref.create_reference_network()
    tx = net.add_input("x", T.float32, x.shape)
    cases = {
        "erf": (net.add_unary(tx, T.UnaryOperation.ERF), torch.erf),
        "abs": (net.add_unary(tx, T.UnaryOperation.ABS), torch.abs),
        "recip": (net.add_unary(tx, T.UnaryOperation.RECIP), torch.reciprocal),
        "gelu": (net.add_activation(tx, T.ActivationType.GELU_ERF), F.gelu),
        "gelu_tanh": (net.add_activation(tx, T.ActivationType.GELU_TANH), lambda t: F.gelu(t, approximate="tanh")),
        "sigmoid": (net.add_activation(tx, T.ActivationType.SIGMOID), torch.sigmoid),
    }
    for name, (layer, _) in cases.items():
        layer.get_output(0).name = name
        net.mark_output(layer.get_output(0))
    assert cases["gelu"][0].alpha == 0.0 and cases["gelu"][0].beta == 0.0
    got = net.execute({"x": x})
    for name, (_, fn) in cases.items():
        torch.testing.assert_close(got[name], fn(torch.from_numpy(x)), msg=name)


def test_quantize_dequantize_round_trip() -> None:
    x = np.array([[0.25, -0.75, 0.5, 100.0], [1.25, 0.1, -100.0, 0.0]], np.float32)
    net = ref.create_reference_network()
    scale = const(net, np.array(0.5, np.float32))
    q = net.add_quantize(net.add_input("x", T.float32, x.shape), scale, T.int8)
    dq = net.add_dequantize(q.get_output(0), scale, T.float32)
    assert q.get_output(0).dtype == T.int8 and dq.get_output(0).dtype == T.float32
    q.get_output(0).name = "q"
    net.mark_output(q.get_output(0))
    got = run_one(net, dq.get_output(0), x=x)
    # x / 0.5 = [0.5, -1.5, 1, 200 | 2.5, 0.2, -200, 0]: ties go to even, then clamp to [-128, 127]
    assert net.execute({"x": x})["q"].tolist() == [[0, -2, 1, 127], [2, 0, -128, 0]]
    assert got.tolist() == [[0.0, -1.0, 0.5, 63.5], [1.0, 0.0, -64.0, 0.0]]


def test_quantize_per_channel_axis() -> None:
    w = rand(4, 3, 3, 3)
    scales = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    net = ref.create_reference_network()
    q = net.add_quantize(const(net, w), const(net, scales), T.int8)
    q.axis = 0
    dq = net.add_dequantize(q.get_output(0), const(net, scales), T.float32)
    dq.axis = 0
    view = torch.from_numpy(scales).reshape(4, 1, 1, 1)
    expected = torch.round(torch.from_numpy(w) / view).clamp(-128, 127) * view
    torch.testing.assert_close(run_one(net, dq.get_output(0)), expected)


def _fake_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.round(x.float() / scale).clamp(-128, 127)


@pytest.mark.parametrize("dtype,bias_as_tensor", [(np.float32, False), (np.float16, False), (np.float16, True)])
def test_int8_qdq_convolution_matches_fake_quantized_torch(dtype: type, bias_as_tensor: bool) -> None:
    """Explicit INT8: per-tensor Q/DQ on the activation, INT8 weight constant with per-channel DQ as kernel."""
    x, w, b = rand(2, 4, 6, 5, dtype=dtype), rand(8, 4, 3, 3), rand(8, dtype=dtype)
    trt_dt = T.float16 if dtype == np.float16 else T.float32
    x_scale = np.array(np.abs(x.astype(np.float32)).max() / 127, np.float32)
    w_scale = (np.abs(w).reshape(8, -1).max(axis=1) / 127).astype(np.float32)
    w_int8 = _fake_quant(torch.from_numpy(w), torch.from_numpy(w_scale).view(8, 1, 1, 1)).to(torch.int8).numpy()

    net = ref.create_reference_network()
    q = net.add_quantize(net.add_input("x", trt_dt, x.shape), const(net, x_scale), T.int8)
    xdq = net.add_dequantize(q.get_output(0), const(net, x_scale), trt_dt)
    wdq = net.add_dequantize(const(net, w_int8), const(net, w_scale), trt_dt)
    wdq.axis = 0
    conv = net.add_convolution_nd(xdq.get_output(0), 8, (3, 3), T.Weights(), T.Weights() if bias_as_tensor else b)
    conv.padding_nd = (1, 1)
    conv.set_input(1, wdq.get_output(0))
    if bias_as_tensor:
        conv.set_input(2, const(net, b))
    assert conv.get_output(0).dtype == trt_dt and conv.get_output(0).shape == (2, 8, 6, 5)

    tdt = torch.from_numpy(x).dtype
    xd = (_fake_quant(torch.from_numpy(x), torch.from_numpy(x_scale)) * torch.from_numpy(x_scale)).to(tdt)
    wd = (torch.from_numpy(w_int8).float() * torch.from_numpy(w_scale).view(8, 1, 1, 1)).to(tdt)
    expected = F.conv2d(xd.float(), wd.float(), torch.from_numpy(b).float(), padding=1).to(tdt)
    torch.testing.assert_close(run_one(net, conv.get_output(0), x=x), expected)


def test_deconvolution_kernel_and_bias_from_tensors() -> None:
    x, w, b = rand(1, 4, 3, 3), rand(4, 3, 2, 2), rand(6)
    net = ref.create_reference_network()
    layer = net.add_deconvolution_nd(net.add_input("x", T.float32, x.shape), 6, (2, 2), T.Weights())
    layer.stride_nd, layer.num_groups = (2, 2), 2
    layer.set_input(1, const(net, w))
    layer.set_input(2, const(net, b))
    expected = F.conv_transpose2d(*(torch.from_numpy(a) for a in (x, w, b)), stride=2, groups=2)
    torch.testing.assert_close(run_one(net, layer.get_output(0), x=x), expected)


def test_weights_wrapper() -> None:
    assert T.Weights().size == 0 and T.Weights().dtype == T.float32 and T.Weights(T.float16).dtype == T.float16
    w = T.Weights(np.arange(3, dtype=np.float16))
    assert w.size == 3 and w.dtype == T.float16 and w.nbytes == 6 and w.numpy().tolist() == [0, 1, 2]
    net = ref.create_reference_network()
    kernel = T.Weights(np.ones((2, 2, 1, 1), np.float16))
    layer = net.add_convolution_nd(net.add_input("x", T.float16, (1, 2, 4, 4)), 2, (1, 1), kernel, T.Weights())
    assert layer.bias is None and layer.get_output(0).shape == (1, 2, 4, 4)


def test_rejects_conv_kernel_tensor_of_other_dtype_or_missing() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float16, (1, 4, 8, 8))
    conv = net.add_convolution_nd(x, 4, (3, 3), T.Weights(), None)
    with pytest.raises(ValueError, match="no kernel tensor"):  # empty kernel, no input 1 (deferred to the build)
        conv.get_output(0).shape
    kernel32 = net.add_dequantize(const(net, np.ones((4, 4, 3, 3), np.int8)), const(net, np.ones(4, np.float32)),
                                  T.float32)
    kernel32.axis = 0
    with pytest.raises(TypeError, match="kernel"):  # FP32 kernel on an FP16 input
        conv.set_input(1, kernel32.get_output(0))
    with pytest.raises(TypeError, match="kernel"):  # INT8 kernel without a dequantize
        conv.set_input(1, const(net, np.ones((4, 4, 3, 3), np.int8)))
    with pytest.raises(TypeError, match="bias"):
        conv.set_input(2, const(net, np.ones(4, np.float32)))
    conv.set_input(1, const(net, np.ones((4, 4, 3, 3), np.float16)))
    assert conv.get_output(0).shape == (1, 4, 6, 6)
    deconv = net.add_deconvolution_nd(x, 4, (2, 2), T.Weights())
    with pytest.raises(TypeError, match="kernel"):
        deconv.set_input(1, const(net, np.ones((4, 4, 2, 2), np.float32)))


def build_spectral_attention(trt: Any, net: Any, heads: int, rescale: np.ndarray) -> Any:
    """MST++'s S-MSA core from primitives, written once for any ``trt`` module.

    Inputs q, k, v: ``(1, heads*31, HW)`` with HW dynamic. Per head: ``softmax(l2(k) @ l2(q)^T * rescale) @ v``
    where ``l2`` normalises along HW. Returns the ``(1, heads*31, HW)`` output tensor.
    """
    ew, c = trt.ElementWiseOperation, heads * 31
    def split_heads(name: str) -> Any:
        layer = net.add_shuffle(net.add_input(name, trt.float32, (1, c, -1)))
        layer.reshape_dims = (0, heads, 31, -1)
        return layer.get_output(0)
    def l2(x: Any) -> Any:
        sq = net.add_elementwise(x, x, ew.PROD).get_output(0)
        total = net.add_reduce(sq, trt.ReduceOperation.SUM, 1 << 3, True).get_output(0)
        norm = net.add_unary(total, trt.UnaryOperation.SQRT).get_output(0)
        eps = net.add_constant((1, 1, 1, 1), np.full((1, 1, 1, 1), 1e-12, np.float32)).get_output(0)
        clamped = net.add_elementwise(norm, eps, ew.MAX).get_output(0)
        return net.add_elementwise(x, clamped, ew.DIV).get_output(0)
    q, k, v = split_heads("q"), split_heads("k"), split_heads("v")
    attn = net.add_matrix_multiply(l2(k), trt.MatrixOperation.NONE, l2(q), trt.MatrixOperation.TRANSPOSE).get_output(0)
    scale = net.add_constant(rescale.shape, rescale).get_output(0)
    softmax = net.add_softmax(net.add_elementwise(attn, scale, ew.PROD).get_output(0))
    softmax.axes = 1 << 3
    out = net.add_matrix_multiply(softmax.get_output(0), trt.MatrixOperation.NONE, v, trt.MatrixOperation.NONE)
    merge = net.add_shuffle(out.get_output(0))
    merge.reshape_dims = (0, c, -1)
    return merge.get_output(0)


def test_spectral_attention_chain_matches_torch() -> None:
    heads, hw = 2, 40
    rescale = rand(1, heads, 1, 1)
    q, k, v = (rand(1, heads * 31, hw) for _ in range(3))
    net = ref.create_reference_network()
    out = build_spectral_attention(T, net, heads, rescale)
    assert out.shape == (1, heads * 31, -1)
    got = run_one(net, out, q=q, k=k, v=v)
    tq, tk, tv = (torch.from_numpy(a).reshape(1, heads, 31, hw) for a in (q, k, v))
    attn = F.normalize(tk, dim=-1) @ F.normalize(tq, dim=-1).transpose(-2, -1) * torch.from_numpy(rescale)
    expected = (attn.softmax(dim=-1) @ tv).reshape(1, heads * 31, hw)
    torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------------------------------------------
# Plugins
# ----------------------------------------------------------------------------------------------------------------


def make_plugin(name: str, **fields: np.ndarray) -> Any:
    creator = T.get_plugin_registry().get_creator(name, ref.PLUGIN_VERSION, ref.PLUGIN_NAMESPACE)
    assert creator is not None
    kinds = {np.dtype(np.float32): T.PluginFieldType.FLOAT32, np.dtype(np.int32): T.PluginFieldType.INT32}
    collection = T.PluginFieldCollection([T.PluginField(k, v, kinds[v.dtype]) for k, v in fields.items()])
    return creator.create_plugin(name, collection, T.TensorRTPhase.BUILD)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", [0, 1])
def test_plugin_mst_layer_norm(dtype: type, layout: int) -> None:
    x = rand(2, 5, 4, 6, dtype=dtype)
    channels = x.shape[1] if layout else x.shape[-1]
    g, b = rand(channels), rand(channels)
    plugin = make_plugin("MstLayerNorm", epsilon=np.array([1e-5], np.float32), layout=np.array([layout], np.int32))
    net = ref.create_reference_network()
    trt_dtype = T.float32 if dtype == np.float32 else T.float16
    layer = net.add_plugin_v3([net.add_input("x", trt_dtype, x.shape), const(net, g), const(net, b)], [], plugin)
    got = run_one(net, layer.get_output(0), x=x)
    tx = torch.from_numpy(x).float()
    tx = tx.movedim(1, -1) if layout else tx
    expected = F.layer_norm(tx, (channels,), torch.from_numpy(g), torch.from_numpy(b))
    expected = (expected.movedim(-1, 1) if layout else expected).to(got.dtype)
    assert got.dtype == torch.from_numpy(x).dtype
    torch.testing.assert_close(got, expected, **({} if dtype == np.float32 else {"rtol": 1e-3, "atol": 4e-3}))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_plugin_mst_l2norm_and_gelu(dtype: type) -> None:
    # fp16 with a long last dim: the sum of squares would overflow fp16, so fp32 accumulation must be used.
    x = (rand(2, 31, 4096) * 8).astype(dtype)
    net = ref.create_reference_network()
    trt_dtype = T.float32 if dtype == np.float32 else T.float16
    tx = net.add_input("x", trt_dtype, x.shape)
    l2 = net.add_plugin_v3([tx], [], make_plugin("MstL2Norm")).get_output(0)
    gelu = net.add_plugin_v3([tx], [], make_plugin("MstGelu")).get_output(0)
    l2.name, gelu.name = "l2", "gelu"
    net.mark_output(l2)
    net.mark_output(gelu)
    got = net.execute({"x": x})
    x32 = torch.from_numpy(x).float()
    torch.testing.assert_close(got["l2"], F.normalize(x32, dim=-1).to(got["l2"].dtype))
    torch.testing.assert_close(got["gelu"], F.gelu(x32).to(got["gelu"].dtype))
    assert torch.isfinite(got["l2"]).all()


def test_plugin_rejections() -> None:
    registry = T.get_plugin_registry()
    assert registry.get_creator("MstLayerNorm", "2", ref.PLUGIN_NAMESPACE) is None
    assert registry.get_creator("NoSuchPlugin", ref.PLUGIN_VERSION, ref.PLUGIN_NAMESPACE) is None
    creator = registry.get_creator("MstL2Norm", ref.PLUGIN_VERSION, ref.PLUGIN_NAMESPACE)
    def fields(name: str, data: np.ndarray) -> Any:
        return T.PluginFieldCollection([T.PluginField(name, data, T.PluginFieldType.FLOAT32)])
    with pytest.raises(ValueError, match="unknown plugin field"):
        creator.create_plugin("x", fields("eps", np.array([1.0], np.float32)), T.TensorRTPhase.BUILD)
    with pytest.raises(TypeError, match="epsilon"):  # float64 data labelled FLOAT32 would be misread in C++
        creator.create_plugin("x", fields("epsilon", np.array([1.0])), T.TensorRTPhase.BUILD)
    net = ref.create_reference_network()
    with pytest.raises(TypeError, match="INT32"):
        net.add_plugin_v3([net.add_input("x", T.int32, (2, 3))], [], make_plugin("MstGelu"))
    with pytest.raises(TypeError, match="gamma"):  # gamma/beta are fp32 even for an fp16 x
        x = net.add_input("y", T.float16, (2, 3))
        g = const(net, np.ones(3, np.float16))
        net.add_plugin_v3([x, g, g], [], make_plugin("MstLayerNorm"))


def ffn_fields(c: int, scale: float = 0.2) -> dict[str, np.ndarray]:
    return {"ln_gamma": rand(c), "ln_beta": rand(c), "w1": rand(4 * c, c) * scale,
            "wdw": rand(4 * c, 3, 3) * scale, "w2": rand(c, 4 * c) * scale}


def _check_block_plugin(plugin, block, c: int, dtype) -> None:
    """One block plugin layer on a [2, c, 5, 7] input of ``dtype`` against ``x + block(x)`` in PyTorch FP32
    (odd H and W, so the zero padding of the depthwise convolutions shows at every edge)."""
    x = rand(2, c, 5, 7, dtype=dtype)
    net = ref.create_reference_network()
    trt_dtype = T.float32 if dtype == np.float32 else T.float16
    layer = net.add_plugin_v3([net.add_input("x", trt_dtype, (-1, c, -1, -1))], [], plugin)
    assert layer.get_output(0).shape == (-1, c, -1, -1) and layer.get_output(0).dtype == trt_dtype
    got = run_one(net, layer.get_output(0), x=x)
    x32 = torch.from_numpy(x).float()
    with torch.no_grad():
        expected = (x32 + block(x32)).to(got.dtype)
    assert got.dtype == torch.from_numpy(x).dtype
    torch.testing.assert_close(got, expected, **({"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32
                                                 else {"rtol": 1e-3, "atol": 4e-3}))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("c", [31, 62, 124])
def test_plugin_mst_ffn_matches_the_pytorch_block(c: int, dtype: type) -> None:
    from architecture.mst_plus_plus import FeedForward, PreNorm

    fields = ffn_fields(c)
    block = PreNorm(c, FeedForward(c)).eval()
    with torch.no_grad():
        block.norm.weight.copy_(torch.from_numpy(fields["ln_gamma"]))
        block.norm.bias.copy_(torch.from_numpy(fields["ln_beta"]))
        block.fn.net[0].weight.copy_(torch.from_numpy(fields["w1"]).view(4 * c, c, 1, 1))
        block.fn.net[2].weight.copy_(torch.from_numpy(fields["wdw"]).view(4 * c, 1, 3, 3))
        block.fn.net[4].weight.copy_(torch.from_numpy(fields["w2"]).view(c, 4 * c, 1, 1))
    _check_block_plugin(make_plugin("MstFfn", epsilon=np.array([1e-5], np.float32), **fields), block, c, dtype)


def test_plugin_mst_ffn_field_validation() -> None:
    good = ffn_fields(31)
    for c in (30, 32, 64):
        with pytest.raises(ValueError, match=f"C \\(the length of ln_gamma\\) must be 31, 62 or 124, got {c}"):
            make_plugin("MstFfn", **ffn_fields(c))
    for key, n in (("ln_beta", 31), ("w1", 4 * 31 * 31), ("wdw", 4 * 31 * 9), ("w2", 4 * 31 * 31)):
        bad = dict(good, **{key: rand(n + 1)})
        with pytest.raises(ValueError, match=f"field '{key}' must hold .* = {n} values for C = 31, got {n + 1}"):
            make_plugin("MstFfn", **bad)
    for key in good:
        with pytest.raises(ValueError, match=f"missing field.*'{key}'"):
            make_plugin("MstFfn", **{k: v for k, v in good.items() if k != key})
    with pytest.raises(ValueError, match="epsilon must be finite"):
        make_plugin("MstFfn", epsilon=np.array([-1.0], np.float32), **good)
    with pytest.raises(ValueError, match="unknown plugin field 'bias'"):
        make_plugin("MstFfn", bias=rand(31), **good)
    creator = T.get_plugin_registry().get_creator("MstFfn", ref.PLUGIN_VERSION, ref.PLUGIN_NAMESPACE)
    assert {f.name for f in creator.field_names} == {"epsilon", "ln_gamma", "ln_beta", "w1", "wdw", "w2"}
    fields = [T.PluginField(k, v, T.PluginFieldType.FLOAT32) for k, v in good.items() if k != "w1"]
    with pytest.raises(TypeError, match="'w1' must be FLOAT32 data of numpy float32"):  # float64 labelled FLOAT32
        creator.create_plugin("x", T.PluginFieldCollection(
            fields + [T.PluginField("w1", good["w1"].astype(np.float64), T.PluginFieldType.FLOAT32)]),
            T.TensorRTPhase.BUILD)
    # Build-time checks: 4-D NCHW with C channels, FLOAT or HALF.
    plugin = make_plugin("MstFfn", **good)
    net = ref.create_reference_network()
    with pytest.raises(ValueError, match="4-D NCHW x with 31 channels"):
        net.add_plugin_v3([net.add_input("a", T.float32, (1, 62, 8, 8))], [], plugin).get_output(0).shape
    with pytest.raises(ValueError, match="4-D NCHW x with 31 channels"):
        net.add_plugin_v3([net.add_input("b", T.float32, (31, 8, 8))], [], plugin).get_output(0).shape
    with pytest.raises(TypeError, match="INT32"):
        net.add_plugin_v3([net.add_input("c", T.int32, (1, 31, 8, 8))], [], plugin)


def msa_fields(c: int, scale: float = 0.2) -> dict[str, np.ndarray]:
    heads = max(c // 31, 1)
    return {"wq": rand(c, c) * scale, "wk": rand(c, c) * scale, "wv": rand(c, c) * scale,
            "rescale": np.abs(rand(heads)) + 0.5, "wproj": rand(c, c) * scale, "bproj": rand(c),
            "wpos1": rand(c, 3, 3) * scale, "wpos2": rand(c, 3, 3) * scale}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("c", [31, 62, 124])
def test_plugin_mst_msa_matches_the_pytorch_block(c: int, dtype: type) -> None:
    from architecture.mst_plus_plus import HEAD_DIM, SpectralMSA

    fields = msa_fields(c)
    block = SpectralMSA(c, HEAD_DIM, c // HEAD_DIM).eval()
    with torch.no_grad():
        for key, param in (("wq", block.to_q.weight), ("wk", block.to_k.weight), ("wv", block.to_v.weight),
                           ("rescale", block.rescale), ("wproj", block.proj.weight), ("bproj", block.proj.bias),
                           ("wpos1", block.pos_emb[0].weight), ("wpos2", block.pos_emb[2].weight)):
            param.copy_(torch.from_numpy(fields[key]).view(param.shape))
    _check_block_plugin(make_plugin("MstMsa", **fields), block, c, dtype)


def test_plugin_mst_msa_field_validation() -> None:
    good = msa_fields(31)
    creator = T.get_plugin_registry().get_creator("MstMsa", ref.PLUGIN_VERSION, ref.PLUGIN_NAMESPACE)
    assert creator is not None and creator.plugin_version == "1" and creator.plugin_namespace == ""
    assert [f.name for f in creator.field_names] == ["wq", "wk", "wv", "rescale", "wproj", "bproj", "wpos1", "wpos2"]
    assert {f.type for f in creator.field_names} == {T.PluginFieldType.FLOAT32}
    for c in (31, 62, 124):
        assert make_plugin("MstMsa", **msa_fields(c)).channels == c
    for c in (30, 32, 64, 93):
        with pytest.raises(ValueError, match=f"MstMsa: C \\(the length of bproj\\) must be 31, 62 or 124, got {c}"):
            make_plugin("MstMsa", **msa_fields(c))
    for key, formula, n in (("wq", "C\\*C", 961), ("wk", "C\\*C", 961), ("wv", "C\\*C", 961),
                            ("rescale", "C/31", 1), ("wproj", "C\\*C", 961), ("wpos1", "C\\*9", 279),
                            ("wpos2", "C\\*9", 279)):
        bad = dict(good, **{key: rand(n + 1)})
        with pytest.raises(ValueError, match=f"field '{key}' must hold {formula} = {n} values for C = 31, got {n + 1}"):
            make_plugin("MstMsa", **bad)
    with pytest.raises(ValueError, match="field 'rescale' must hold C/31 = 4 values for C = 124, got 1"):
        make_plugin("MstMsa", **dict(msa_fields(124), rescale=rand(1)))
    for key in good:
        with pytest.raises(ValueError, match=f"missing field.*'{key}'"):
            make_plugin("MstMsa", **{k: v for k, v in good.items() if k != key})
    with pytest.raises(ValueError, match="unknown plugin field 'epsilon'"):  # the attention has no epsilon field
        make_plugin("MstMsa", epsilon=np.array([1e-5], np.float32), **good)
    with pytest.raises(ValueError, match="'bproj' is empty"):
        make_plugin("MstMsa", **dict(good, bproj=np.zeros(0, np.float32)))
    fields = [T.PluginField(k, v, T.PluginFieldType.FLOAT32) for k, v in good.items() if k != "wv"]
    with pytest.raises(TypeError, match="'wv' must be FLOAT32 data of numpy float32"):  # float64 labelled FLOAT32
        creator.create_plugin("x", T.PluginFieldCollection(
            fields + [T.PluginField("wv", good["wv"].astype(np.float64), T.PluginFieldType.FLOAT32)]),
            T.TensorRTPhase.BUILD)
    # Build-time checks: 4-D NCHW with C channels, FLOAT or HALF.
    plugin = make_plugin("MstMsa", **good)
    net = ref.create_reference_network()
    with pytest.raises(ValueError, match="MstMsa needs a 4-D NCHW x with 31 channels"):
        net.add_plugin_v3([net.add_input("a", T.float32, (1, 62, 8, 8))], [], plugin).get_output(0).shape
    with pytest.raises(ValueError, match="MstMsa needs a 4-D NCHW x with 31 channels"):
        net.add_plugin_v3([net.add_input("b", T.float32, (31, 8, 8))], [], plugin).get_output(0).shape
    with pytest.raises(TypeError, match="INT32"):
        net.add_plugin_v3([net.add_input("c", T.int32, (1, 31, 8, 8))], [], plugin)


# ----------------------------------------------------------------------------------------------------------------
# Rejections (what TensorRT's builder refuses)
# ----------------------------------------------------------------------------------------------------------------


def test_rejects_elementwise_dtype_mismatch() -> None:
    net = ref.create_reference_network()
    with pytest.raises(TypeError, match="identical types"):
        net.add_elementwise(net.add_input("a", T.float32, (2, 3)), net.add_input("b", T.float16, (2, 3)),
                            T.ElementWiseOperation.SUM)


def test_rejects_elementwise_rank_and_broadcast_mismatch() -> None:
    net = ref.create_reference_network()
    a = net.add_input("a", T.float32, (2, 3))
    with pytest.raises(ValueError, match="equal rank"):
        net.add_elementwise(a, net.add_input("b", T.float32, (3,)), T.ElementWiseOperation.SUM)
    with pytest.raises(ValueError, match="broadcast"):
        net.add_elementwise(a, net.add_input("c", T.float32, (2, 4)), T.ElementWiseOperation.SUM)


def test_rejects_conv_kernel_of_other_dtype() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float32, (1, 4, 8, 8))
    with pytest.raises(TypeError, match="kernel"):
        net.add_convolution_nd(x, 4, (3, 3), np.ones((4, 4, 3, 3), np.float16))
    with pytest.raises(TypeError, match="bias"):
        net.add_convolution_nd(x, 4, (3, 3), np.ones((4, 4, 3, 3), np.float32), np.ones(4, np.float16))
    with pytest.raises(TypeError, match="kernel"):
        net.add_deconvolution_nd(x, 4, (2, 2), np.ones((4, 4, 2, 2), np.float16))


def test_rejects_softmax_masks() -> None:
    net = ref.create_reference_network()
    layer = net.add_softmax(net.add_input("x", T.float32, (1, 4, 8, 8)))
    with pytest.raises(ValueError, match="exactly one bit"):
        layer.axes = 0b1100
    with pytest.raises(ValueError, match="exactly one bit"):
        layer.axes = 0
    assert layer.axes == 0b10  # the refused value was not stored
    layer.axes = 1 << 5
    with pytest.raises(ValueError, match="rank"):
        layer.get_output(0).shape


@pytest.mark.parametrize("mask", [1 << 4, 0, 0b10001])
def test_rejects_reduce_mask(mask: int) -> None:
    net = ref.create_reference_network()
    with pytest.raises(ValueError, match="bitmask"):
        net.add_reduce(net.add_input("x", T.float32, (1, 4, 8, 8)), T.ReduceOperation.SUM, mask, True)


def test_rejects_normalization_scale_dtype_and_rank() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float16, (1, 4, 8))
    with pytest.raises(TypeError, match="scale"):
        net.add_normalization(x, const(net, np.ones((1, 1, 8), np.float32)), const(net, np.ones((1, 1, 8), np.float16)), 4)
    with pytest.raises(TypeError, match="bias"):
        net.add_normalization(x, const(net, np.ones((1, 1, 8), np.float16)), const(net, np.ones((1, 1, 8), np.float32)), 4)
    with pytest.raises(ValueError, match="rank"):
        net.add_normalization(x, const(net, np.ones(8, np.float16)), const(net, np.ones(8, np.float16)), 4)


def test_rejects_matmul_rank_dtype_and_contraction() -> None:
    net = ref.create_reference_network()
    a = net.add_input("a", T.float32, (2, 3, 4))
    none = T.MatrixOperation.NONE
    with pytest.raises(ValueError, match="batch dims"):
        net.add_matrix_multiply(a, none, net.add_input("b", T.float32, (4, 5)), none)
    with pytest.raises(TypeError, match="identical types"):
        net.add_matrix_multiply(a, none, net.add_input("c", T.float16, (2, 4, 5)), none)
    with pytest.raises(ValueError, match="contraction"):
        net.add_matrix_multiply(a, none, net.add_input("d", T.float32, (2, 5, 5)), none)


def test_rejects_concat_dtype_mismatch_and_bad_axis() -> None:
    net = ref.create_reference_network()
    a = net.add_input("a", T.float32, (1, 2, 3, 4))
    with pytest.raises(TypeError, match="identical types"):
        net.add_concatenation([a, net.add_input("b", T.float16, (1, 2, 3, 4))])
    layer = net.add_concatenation([a, a])
    layer.axis = 4
    with pytest.raises(ValueError, match="axis"):
        net.validate()


def test_rejects_quantize_with_non_constant_scale_and_bad_types() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float32, (4, 3))
    with pytest.raises(ValueError, match="build-time constant"):
        net.add_quantize(x, net.add_input("s", T.float32, ()), T.int8)
    with pytest.raises(TypeError, match="INT32"):
        net.add_quantize(net.add_input("i", T.int32, (4, 3)), const(net, np.array(1.0, np.float32)), T.int8)
    with pytest.raises(TypeError, match="FLOAT"):
        net.add_dequantize(x, const(net, np.array(1.0, np.float32)), T.float32)
    q = net.add_quantize(x, const(net, np.ones(4, np.float32)), T.int8)  # 4 scales, default axis -1 has 3
    with pytest.raises(ValueError, match="scales"):
        q.get_output(0).shape
    q.axis = 0
    assert q.get_output(0).shape == (4, 3)


def test_deferred_shape_errors_surface_at_shape_or_execute() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float32, (2, 3, 4))
    shuffle = net.add_shuffle(x)
    shuffle.reshape_dims = (5, -1)
    with pytest.raises(ValueError, match="no integer solution"):
        shuffle.get_output(0).shape
    strict = net.add_slice(x, (0, 0, -1), (2, 3, 6), (1, 1, 1))
    with pytest.raises(ValueError, match="out of bounds"):
        strict.get_output(0).dtype
    # a kernel bigger than the input is fine once padding is set (TensorRT judges shapes at build time)
    conv = net.add_convolution_nd(net.add_input("y", T.float32, (1, 1, 2, 2)), 1, (3, 3), np.ones((1, 1, 3, 3), np.float32))
    conv.padding_nd = (1, 1)
    assert conv.get_output(0).shape == (1, 1, 2, 2)


def test_property_change_propagates_to_consumers() -> None:
    net = ref.create_reference_network()
    conv = net.add_convolution_nd(net.add_input("x", T.float32, (1, 1, 6, 6)), 1, (3, 3), np.ones((1, 1, 3, 3), np.float32))
    relu = net.add_activation(conv.get_output(0), T.ActivationType.RELU)
    assert relu.get_output(0).shape == (1, 1, 4, 4)
    conv.padding_nd = (1, 1)  # set after the consumer exists
    assert relu.get_output(0).shape == (1, 1, 6, 6)


def test_rejects_unknown_attribute_and_bad_inputs() -> None:
    net = ref.create_reference_network()
    x = net.add_input("x", T.float32, (1, 2, -1, -1))
    conv = net.add_convolution_nd(x, 2, (1, 1), np.ones((2, 2, 1, 1), np.float32))
    with pytest.raises(AttributeError):
        conv.padding = (1, 1)  # the TensorRT attribute is padding_nd
    with pytest.raises(TypeError, match="weights"):
        net.add_constant((2,), np.ones(2, np.float64))
    net.mark_output(conv.get_output(0))
    with pytest.raises(TypeError, match="float32"):
        net.execute({"x": np.ones((1, 2, 3, 3), np.float64)})
    with pytest.raises(ValueError, match="shape"):
        net.execute({"x": np.ones((1, 3, 3, 3), np.float32)})
    assert net.execute({"x": np.ones((1, 2, 5, 7), np.float32)})[conv.get_output(0).name].shape == (1, 2, 5, 7)


def test_accepts_real_tensorrt_enums_by_name() -> None:
    trt = pytest.importorskip("tensorrt_rtx")
    net = ref.create_reference_network()
    x = net.add_input("x", trt.float16, (2, 3))
    layer = net.add_elementwise(x, x, trt.ElementWiseOperation.SUM)
    assert layer.get_output(0).dtype == T.float16 and layer.op == T.ElementWiseOperation.SUM


# ----------------------------------------------------------------------------------------------------------------
# Cross-check with the TensorRT-RTX builder (CPU, build only)
# ----------------------------------------------------------------------------------------------------------------

Case = Callable[[Any, Any], Any]  # (trt module, network) -> output tensor


def _c(trt: Any, net: Any, array: np.ndarray) -> Any:
    return net.add_constant(array.shape, array).get_output(0)


def _one(dtype: str, shape: tuple[int, ...], add: Callable[[Any, Any, Any], Any]) -> Case:
    """A case with one input ``x``; ``add(trt, net, x)`` adds the layer under test."""
    return lambda trt, net: add(trt, net, net.add_input("x", getattr(trt, dtype), shape)).get_output(0)


def _softmax_axes(axes: int) -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        layer = net.add_softmax(x)
        layer.axes = axes
        return layer
    return _one("float32", (1, 4, 8, 8), add)


def _slice(start: tuple, size: tuple, mode: str) -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        layer = net.add_slice(x, start, size, (1,) * len(start))
        layer.mode = getattr(trt.SampleMode, mode)
        return layer
    return _one("float32", (1, 2, 4, 4), add)


def _conv_grouped(trt: Any, net: Any, x: Any) -> Any:
    layer = net.add_convolution_nd(x, 6, (3, 3), np.ones((6, 2, 3, 3), np.float32))
    layer.pre_padding, layer.post_padding, layer.num_groups = (1, 0), (2, 1), 2
    layer.stride_nd, layer.dilation_nd = (2, 1), (1, 2)
    return layer


def _deconv(trt: Any, net: Any, x: Any) -> Any:
    layer = net.add_deconvolution_nd(x, 6, (2, 2), np.ones((4, 3, 2, 2), np.float32))
    layer.stride_nd, layer.num_groups = (2, 2), 2
    return layer


def _shuffle(first: tuple, dims: tuple, second: tuple) -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        layer = net.add_shuffle(x)
        layer.first_transpose, layer.reshape_dims, layer.second_transpose = first, dims, second
        return layer
    return _one("float32", (2, 3, 4), add)


def _qdq(in_dtype: str, scale_dtype: type, out_dtype: str) -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        q = net.add_quantize(x, _c(trt, net, np.array(0.1, scale_dtype)), trt.int8)
        return net.add_dequantize(q.get_output(0), _c(trt, net, np.array(0.1, scale_dtype)), getattr(trt, out_dtype))
    return _one(in_dtype, (4, 3), add)


def _q_axis(axis: int | None, size: int, in_dtype: str = "float32") -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        q = net.add_quantize(x, _c(trt, net, np.ones(size, np.float32)), trt.int8)
        if axis is not None:
            q.axis = axis
        return q
    return _one(in_dtype, (4, 3), add)


def _reduce(dtype: str, shape: tuple, op: str, mask: int, keep: bool) -> Case:
    return _one(dtype, shape, lambda trt, net, x: net.add_reduce(x, getattr(trt.ReduceOperation, op), mask, keep))


def _two(add: str, da: str, sa: tuple, db: str, sb: tuple, *args: str) -> Case:
    """``net.<add>(a, b, *enums)`` for elementwise (args = op) or concatenation (no args)."""
    def case(trt: Any, net: Any) -> Any:
        a, b = net.add_input("a", getattr(trt, da), sa), net.add_input("b", getattr(trt, db), sb)
        if add == "add_concatenation":
            return net.add_concatenation([a, b]).get_output(0)
        return net.add_elementwise(a, b, getattr(trt.ElementWiseOperation, *args)).get_output(0)
    return case


def _ew(da: str, sa: tuple, db: str, sb: tuple, op: str = "SUM") -> Case:
    return _two("add_elementwise", da, sa, db, sb, op)


def _mm(sa: tuple, oa: str, sb: tuple, ob: str, db: str = "float32") -> Case:
    def case(trt: Any, net: Any) -> Any:
        a, b = net.add_input("a", trt.float32, sa), net.add_input("b", getattr(trt, db), sb)
        op = trt.MatrixOperation
        return net.add_matrix_multiply(a, getattr(op, oa), b, getattr(op, ob)).get_output(0)
    return case


def _norm(x_dt: str, s_dt: type, b_dt: type, s_shape: tuple = (1, 1, 8)) -> Case:
    def add(trt: Any, net: Any, x: Any) -> Any:
        scale, bias = _c(trt, net, np.ones(s_shape, s_dt)), _c(trt, net, np.ones(s_shape, b_dt))
        return net.add_normalization(x, scale, bias, 1 << 2)
    return _one(x_dt, (1, 4, 8), add)


def _conv(x_dt: str, k_dt: type, b_dt: type | None) -> Case:
    bias = None if b_dt is None else np.ones(4, b_dt)
    kernel = np.ones((4, 4, 3, 3), k_dt)
    return _one(x_dt, (1, 4, 8, 8), lambda trt, net, x: net.add_convolution_nd(x, 4, (3, 3), kernel, bias))


def _qconv(x_dt: str, kernel: str, bias: str = "", deconv: bool = False, act_scale: tuple = (),
           scale_dt: type = np.float32, k_scale: tuple = (4,), axis: int | None = 0,
           k_shape: tuple = (4, 4, 3, 3)) -> Case:
    """INT8 Q/DQ conv: activation Q/DQ with scale shape ``act_scale``; ``kernel`` is ``dq:<dtype>`` (INT8 constant
    through a dequantize), ``const:<dtype>`` or ``int8``; ``bias`` is ``""`` (none), ``np:<dtype>`` or ``t:<dtype>``."""
    def case(trt: Any, net: Any) -> Any:
        x = net.add_input("x", getattr(trt, x_dt), (1, 4, 8, 8))
        q = net.add_quantize(x, _c(trt, net, np.full(act_scale, 0.05, scale_dt)), trt.int8)
        dq = q and net.add_dequantize(q.get_output(0), _c(trt, net, np.full(act_scale, 0.05, scale_dt)),
                                      getattr(trt, x_dt))
        if dq is None:  # TensorRT refuses a scale of rank > 1 in add_(de)quantize itself (returns None)
            return None
        x = dq.get_output(0)
        kind, _, k_dt = kernel.partition(":")
        if kind == "dq":
            k_scales = _c(trt, net, np.full(k_scale, 0.01, scale_dt))
            dq = net.add_dequantize(_c(trt, net, np.ones(k_shape, np.int8)), k_scales, getattr(trt, k_dt))
            if axis is not None:
                dq.axis = axis
            k = dq.get_output(0)
        else:
            k = _c(trt, net, np.ones(k_shape, np.int8 if kind == "int8" else np.dtype(k_dt)))
        b_kind, _, b_dt = bias.partition(":")
        b_arr = np.ones(4, np.dtype(b_dt)) if b_kind else None
        add = net.add_deconvolution_nd if deconv else net.add_convolution_nd
        layer = add(x, 4, (3, 3), trt.Weights(), b_arr if b_kind == "np" else trt.Weights())
        layer.set_input(1, k)
        if b_kind == "t":
            layer.set_input(2, _c(trt, net, b_arr))
        return layer.get_output(0)
    return case


def _conv_empty_kernel(trt: Any, net: Any) -> Any:
    return net.add_convolution_nd(net.add_input("x", trt.float32, (1, 4, 8, 8)), 4, (3, 3), trt.Weights()).get_output(0)


def _dequantize_f32(trt: Any, net: Any, x: Any) -> Any:
    return net.add_dequantize(x, _c(trt, net, np.array(1.0, np.float32)), trt.float32)


CROSS_CHECK_CASES: dict[str, tuple[Case, bool]] = {
    "ew f32+f16": (_ew("float32", (2, 3), "float16", (2, 3)), False),
    "ew int32+int64": (_ew("int32", (2, 3), "int64", (2, 3)), False),
    "ew rank mismatch": (_ew("float32", (2, 3), "float32", (3,)), False),
    "ew broadcast 1": (_ew("float32", (2, 3), "float32", (1, 3)), True),
    "ew broadcast mismatch": (_ew("float32", (2, 3), "float32", (2, 4)), False),
    "ew LESS -> bool": (_ew("float32", (2, 3), "float32", (2, 3), "LESS"), True),
    "ew AND on float": (_ew("float32", (2, 3), "float32", (2, 3), "AND"), False),
    "ew SUM on bool": (_ew("bool", (2, 3), "bool", (2, 3)), False),
    "ew FLOOR_DIV int32": (_ew("int32", (2, 3), "int32", (2, 3), "FLOOR_DIV"), True),
    "conv f16 kernel on f32": (_conv("float32", np.float16, None), False),
    "conv f32 kernel on f16": (_conv("float16", np.float32, None), False),
    "conv f16 with f32 bias": (_conv("float16", np.float16, np.float32), False),
    "conv f16": (_conv("float16", np.float16, np.float16), True),
    "conv int32": (_conv("int32", np.int32, None), False),
    "conv grouped asym": (_one("float32", (1, 4, 5, 5), _conv_grouped), True),
    "deconv grouped stride2": (_one("float32", (1, 4, 5, 5), _deconv), True),
    "softmax bit 5 on 4-D": (_softmax_axes(1 << 5), False),
    "softmax bit 3": (_softmax_axes(1 << 3), True),
    "softmax int32": (_one("int32", (2, 3), lambda trt, net, x: net.add_softmax(x)), False),
    "reduce bit 4 on 4-D": (_reduce("float32", (1, 4, 8, 8), "SUM", 1 << 4, True), False),
    "reduce mask 0": (_reduce("float32", (1, 4, 8, 8), "SUM", 0, True), False),
    "reduce AVG fp16": (_reduce("float16", (2, 3, 4), "AVG", 0b101, False), True),
    "reduce SUM bool": (_reduce("bool", (2, 3), "SUM", 1, False), False),
    "norm f16 x f32 scale": (_norm("float16", np.float32, np.float16), False),
    "norm f16 x f32 bias": (_norm("float16", np.float16, np.float32), False),
    "norm scale rank 1": (_norm("float32", np.float32, np.float32, (8,)), False),
    "norm f16": (_norm("float16", np.float16, np.float16), True),
    "matmul rank mismatch": (_mm((2, 3, 4), "NONE", (4, 5), "NONE"), False),
    "matmul dtype mismatch": (_mm((2, 3, 4), "NONE", (2, 4, 5), "NONE", "float16"), False),
    "matmul bad K": (_mm((2, 4, 3), "NONE", (2, 4, 4), "NONE"), False),
    "matmul broadcast batch": (_mm((2, 3, 4), "NONE", (1, 4, 5), "NONE"), True),
    "matmul TT": (_mm((2, 4, 3), "TRANSPOSE", (2, 5, 4), "TRANSPOSE"), True),
    "matmul VECTOR b": (_mm((2, 3, 4), "NONE", (2, 4), "VECTOR"), True),
    "matmul VECTOR a": (_mm((2, 4), "VECTOR", (2, 4, 5), "NONE"), True),
    "concat f32+f16": (_two("add_concatenation", "float32", (2, 3), "float16", (2, 3)), False),
    "concat default axis 1": (_two("add_concatenation", "float32", (1, 2, 3, 4), "float32", (1, 5, 3, 4)), True),
    "slice reflect pad": (_slice((0, 0, -3, -3), (1, 2, 10, 10), "REFLECT"), True),
    "slice strict oob": (_slice((0, 0, -1, -1), (1, 2, 6, 6), "STRICT_BOUNDS"), False),
    "shuffle t-r-t": (_shuffle((2, 0, 1), (0, -1), (1, 0)), True),
    "shuffle bad volume": (_shuffle((0, 1, 2), (5, -1), (0, 1)), False),
    "q f16 in f32 scale -> dq f16": (_qdq("float16", np.float32, "float16"), True),
    "q f32 in f16 scale -> dq f32": (_qdq("float32", np.float16, "float32"), True),
    "q 3 scales default axis": (_q_axis(None, 3), True),
    "q 4 scales default axis": (_q_axis(None, 4), False),
    "q 4 scales axis 0": (_q_axis(0, 4), True),
    "q 1 scale axis 0": (_q_axis(0, 1), True),
    "q int32 input": (_q_axis(None, 1, "int32"), False),
    "dq float input": (_one("float32", (4, 3), _dequantize_f32), False),
    "qconv f32, dq f32 kernel": (_qconv("float32", "dq:float32"), True),
    "qconv f16, dq f16 kernel": (_qconv("float16", "dq:float16"), True),
    "qconv f16, dq f16 kernel, f16 scales": (_qconv("float16", "dq:float16", scale_dt=np.float16), True),
    "qconv f32, dq f32 kernel, f16 scales": (_qconv("float32", "dq:float32", scale_dt=np.float16), True),
    "qconv f16, dq f32 kernel": (_qconv("float16", "dq:float32"), False),
    "qconv f32, dq f16 kernel": (_qconv("float32", "dq:float16"), False),
    "qconv f32, int8 kernel without dq": (_qconv("float32", "int8"), False),
    "qconv f32, const f32 kernel": (_qconv("float32", "const:float32"), True),
    "qconv f16, const f16 kernel": (_qconv("float16", "const:float16"), True),
    "qconv f16, np f16 bias": (_qconv("float16", "dq:float16", "np:float16"), True),
    "qconv f16, np f32 bias": (_qconv("float16", "dq:float16", "np:float32"), False),
    "qconv f16, tensor f16 bias": (_qconv("float16", "dq:float16", "t:float16"), True),
    "qconv f16, tensor f32 bias": (_qconv("float16", "dq:float16", "t:float32"), False),
    "qconv f32, tensor f32 bias": (_qconv("float32", "dq:float32", "t:float32"), True),
    "qconv f32, np f16 bias": (_qconv("float32", "dq:float32", "np:float16"), False),
    "qconv act scale (1,)": (_qconv("float16", "dq:float16", act_scale=(1,)), True),
    "qconv act scale (1,1,1,1)": (_qconv("float32", "dq:float32", act_scale=(1, 1, 1, 1)), False),
    "qconv kernel scale (1,)": (_qconv("float32", "dq:float32", k_scale=(1,)), True),
    "qconv kernel scale (4,) default axis": (_qconv("float32", "dq:float32", axis=None), False),
    "qconv kernel shape (4,4,9)": (_qconv("float32", "const:float32", k_shape=(4, 4, 9)), False),
    "qconv kernel shape (2,4,3,3)": (_qconv("float32", "const:float32", k_shape=(2, 4, 3, 3)), False),
    "qdeconv f16, dq f16 kernel": (_qconv("float16", "dq:float16", "t:float16", deconv=True), True),
    "qdeconv f32, dq f16 kernel": (_qconv("float32", "dq:float16", deconv=True), False),
    "conv empty kernel, no input 1": (_conv_empty_kernel, False),
    "unary EXP int32": (_one("int32", (2, 3), lambda trt, net, x: net.add_unary(x, trt.UnaryOperation.EXP)), False),
    "unary NEG int64": (_one("int64", (2, 3), lambda trt, net, x: net.add_unary(x, trt.UnaryOperation.NEG)), True),
    "gelu bf16": (_one("bfloat16", (2, 3), lambda trt, net, x: net.add_activation(x, trt.ActivationType.GELU_ERF)), True),
    "cast f32->f16": (_one("float32", (2, 3), lambda trt, net, x: net.add_cast(x, trt.float16)), True),
    "spectral attention, dynamic HW": (
        lambda trt, net: build_spectral_attention(trt, net, 2, np.ones((1, 2, 1, 1), np.float32)), True),
}


def _reference_outcome(case: Case) -> tuple[bool, Any]:
    net = ref.create_reference_network()
    try:
        out = case(T, net)
        net.mark_output(out)
        net.validate()
    except (TypeError, ValueError):
        return False, None
    return True, (tuple(out.shape), out.dtype.name)


def _rtx_outcome(trt: Any, builder: Any, case: Case) -> tuple[bool, Any]:
    net = builder.create_network(0)  # TensorRT-RTX networks are strongly typed
    try:
        out = case(trt, net)
    except (TypeError, ValueError, RuntimeError):  # e.g. setAxes refusing a two-bit mask
        return False, None
    if out is None:
        return False, None
    net.mark_output(out)
    config = builder.create_builder_config()
    dynamic = [net.get_input(i) for i in range(net.num_inputs) if -1 in tuple(net.get_input(i).shape)]
    if dynamic:  # one fixed size per dynamic dim is enough for a build check
        profile = builder.create_optimization_profile()
        for t in dynamic:
            size = tuple(8 if d == -1 else d for d in t.shape)
            profile.set_shape(t.name, size, size, size)
        config.add_optimization_profile(profile)
    ok = builder.build_serialized_network(net, config) is not None
    return ok, (tuple(out.shape), out.dtype.name) if ok else None


@pytest.fixture(scope="module")
def rtx() -> tuple[Any, Any]:
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)  # expected build failures would flood the log otherwise
    return trt, trt.Builder(logger)


@pytest.mark.parametrize("name", list(CROSS_CHECK_CASES))
def test_agrees_with_tensorrt_rtx_builder(name: str, rtx: tuple[Any, Any]) -> None:
    case, expect_ok = CROSS_CHECK_CASES[name]
    ours = _reference_outcome(case)
    theirs = _rtx_outcome(*rtx, case)
    assert theirs[0] == expect_ok, f"TensorRT-RTX {'refused' if expect_ok else 'accepted'} {name}"
    assert ours == theirs


def test_softmax_two_bit_mask_refused_by_rtx(rtx: tuple[Any, Any]) -> None:
    """TensorRT refuses the setter (logs an error, keeps the old mask); the reference raises."""
    trt, builder = rtx
    net = builder.create_network(0)
    layer = net.add_softmax(net.add_input("x", trt.float32, (1, 4, 8, 8)))
    layer.axes = 0b1100
    assert layer.axes == 0b10
    with pytest.raises(ValueError):
        _softmax_axes(0b1100)(T, ref.create_reference_network())
