// The depthwise 3x3 convolution and GELU that every fused block runs on its hidden state (the FFN's dw3x3 + GELU,
// the attention's dw1 + GELU and dw2), written once for all of them.
//
// Work unit. A thread computes R output rows of one pair of adjacent columns of one channel, from R + 2 input rows
// of four columns (two 8-byte / 4-byte loads per row: columns 2cp, 2cp + 1 and 2cp + 2, 2cp + 3 relative to the
// unit's first input column). Every loaded value feeds up to three output rows and two output columns, so a unit
// does 9 x 2 x R multiply-adds for 2 (R + 2) loads. The callers own the unit -> (channel, column pair, row block)
// map, the shared-memory layouts (row pitches must be even, buffers 8-byte aligned) and the epilogue.
//
// Arithmetic, by hidden-state type:
//   float:  FP32 FMA, products accumulated in the order (kernel row 0, 1, 2) x (kernel column 0, 1, 2), as the
//           single-column loops this replaces (FP32 results are unchanged bit for bit).
//   __half: HFMA2, one instruction for both columns, accumulated in FP16 (used for FP16 storage only; the error
//           bound is in docs/perf_notes_fused.md: at most 9 roundings of the running sum, ~ 9 u sum |w h| worst case,
//           ~ 3 u |.|rms typically, with u = 2^-11).
//
// GELU variants:
//   gelu_erf (block_common.cuh)  exact erf form; FP32 storage.
//   gelu_fast(float)             0.5 v (1 + tanh(a v + b v^3)) on the hardware tanh.approx.f32 (one MUFU, 5 FP32
//                                instructions), coefficients a, b refitted for the smallest max error against the
//                                exact GELU: |gelu_tanh_ab(v) - GELU(v)| <= 2.71e-4 for every v (the textbook
//                                a = sqrt(2/pi), b = 0.044715 a give 4.73e-4).
//   gelu_fast2(__half2)          the same formula in half2 arithmetic with tanh.approx.f16x2 (two values per
//                                instruction); FP16 storage only.
// Both fast forms are used only where the result is rounded to 16 bits next; the error bounds against the exact
// GELU and against FP16 rounding are derived in docs/perf_notes_fused.md.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mstpp
{
namespace dw
{

// Smallest pitch >= n (in 32-bit words) that is congruent to res modulo 32: used to place FP16 hidden-state rows
// so that a warp's units fall in distinct banks.
__host__ __device__ constexpr int pitch_words(int n, int res)
{
    int p = n;
    while (p % 32 != res)
    {
        ++p;
    }
    return p;
}

// Refitted tanh-form coefficients (minimax over [-10, 10] of |0.5 v (1 + tanh(a v + b v^3)) - GELU(v)|).
constexpr float kGeluA = 0.8001570785529808f;
constexpr float kGeluB = 0.03470089343609711f;

__device__ __forceinline__ float tanh_approx(float v)
{
    float r;
    asm("tanh.approx.f32 %0, %1;\n" : "=f"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ __half2 tanh_approx2(__half2 v)
{
    uint32_t const in = *reinterpret_cast<uint32_t const*>(&v);
    uint32_t out;
    asm("tanh.approx.f16x2 %0, %1;\n" : "=r"(out) : "r"(in));
    return *reinterpret_cast<__half2 const*>(&out);
}

// Large |v|: the argument saturates tanh to +-1 (inf for |v| > ~1e13 also gives +-1), so GELU -> v or 0.
__device__ __forceinline__ float gelu_fast(float v)
{
    float const t = tanh_approx(v * fmaf(kGeluB, v * v, kGeluA));
    float const h = 0.5f * v;
    return fmaf(h, t, h);
}

// Half2 form: v^2 overflows to inf for |v| > 256, the argument to +-inf, tanh to +-1: GELU -> v (exact: h + h) or
// 0, as in float.
__device__ __forceinline__ __half2 gelu_fast2(__half2 v)
{
    __half2 const a = __float2half2_rn(kGeluA);
    __half2 const b = __float2half2_rn(kGeluB);
    __half2 const t = tanh_approx2(__hmul2(v, __hfma2(b, __hmul2(v, v), a)));
    __half2 const h = __hmul2(v, __float2half2_rn(0.5f));
    return __hfma2(h, t, h);
}

// o[r] (r = 0 .. R-1) = the 3x3 convolution with w (row-major [3][3]) at output row r, columns 0 and 1, of the input
// whose row i, column c is in[i * kPitch + c] (i = 0 .. R + 1, c = 0 .. 3).
template <int R, int kPitch>
__device__ __forceinline__ void conv3x3_pair(float const* in, float const (&w)[9], float2 (&o)[R])
{
    static_assert(kPitch % 2 == 0, "rows must keep 8-byte alignment");
#pragma unroll
    for (int r = 0; r < R; ++r)
    {
        o[r] = make_float2(0.0f, 0.0f);
    }
#pragma unroll
    for (int i = 0; i < R + 2; ++i)
    {
        float2 const va = *reinterpret_cast<float2 const*>(in + i * kPitch);
        float2 const vb = *reinterpret_cast<float2 const*>(in + i * kPitch + 2);
#pragma unroll
        for (int dy = 0; dy < 3; ++dy)
        {
            int const r = i - dy; // output row fed by input row i through kernel row dy
            if (r >= 0 && r < R)
            {
                o[r].x = fmaf(w[dy * 3 + 0], va.x, o[r].x);
                o[r].x = fmaf(w[dy * 3 + 1], va.y, o[r].x);
                o[r].x = fmaf(w[dy * 3 + 2], vb.x, o[r].x);
                o[r].y = fmaf(w[dy * 3 + 0], va.y, o[r].y);
                o[r].y = fmaf(w[dy * 3 + 1], vb.x, o[r].y);
                o[r].y = fmaf(w[dy * 3 + 2], vb.y, o[r].y);
            }
        }
    }
}

// The same in half2: w holds each weight in both halves; one HFMA2 per kernel tap and row serves both columns.
template <int R, int kPitch>
__device__ __forceinline__ void conv3x3_pair(__half const* in, __half2 const (&w)[9], __half2 (&o)[R])
{
    static_assert(kPitch % 2 == 0, "rows must keep 4-byte alignment");
#pragma unroll
    for (int r = 0; r < R; ++r)
    {
        o[r] = __float2half2_rn(0.0f);
    }
#pragma unroll
    for (int i = 0; i < R + 2; ++i)
    {
        __half2 const va = *reinterpret_cast<__half2 const*>(in + i * kPitch);
        __half2 const vb = *reinterpret_cast<__half2 const*>(in + i * kPitch + 2);
        __half2 const vm = __halves2half2(__high2half(va), __low2half(vb)); // columns 1, 2
#pragma unroll
        for (int dy = 0; dy < 3; ++dy)
        {
            int const r = i - dy;
            if (r >= 0 && r < R)
            {
                o[r] = __hfma2(w[dy * 3 + 0], va, o[r]);
                o[r] = __hfma2(w[dy * 3 + 1], vm, o[r]);
                o[r] = __hfma2(w[dy * 3 + 2], vb, o[r]);
            }
        }
    }
}

// The 9 weights of one channel from shared memory, as float or as half2 pairs.
__device__ __forceinline__ void load_taps(float const* wd, float (&w)[9])
{
#pragma unroll
    for (int k = 0; k < 9; ++k)
    {
        w[k] = wd[k];
    }
}

__device__ __forceinline__ void load_taps(float const* wd, __half2 (&w)[9])
{
#pragma unroll
    for (int k = 0; k < 9; ++k)
    {
        w[k] = __float2half2_rn(wd[k]);
    }
}

// Calls f(channel, column pair, row block) for every unit of a K channels x kPairs column pairs x kRowBlocks
// (R rows each) grid, column pair fastest, spread over the block's kThreads threads.
template <int K, int kPairs, int kRowBlocks, int kThreads, typename F>
__device__ __forceinline__ void for_each_unit(F&& f)
{
    constexpr int kUnits = K * kPairs * kRowBlocks;
#pragma unroll 1
    for (int u = threadIdx.x; u < kUnits; u += kThreads)
    {
        int const cp = u % kPairs;
        int const rest = u / kPairs;
        int const j = rest % K;
        int const rb = rest / K;
        f(j, cp, rb);
    }
}

} // namespace dw
} // namespace mstpp
