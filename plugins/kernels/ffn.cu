// The MST++ feed-forward block in one kernel, on NCHW tensors:
//   y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x))))
// LN over the C channels of every pixel; W1 [4C, C] and W2 [C, 4C] are 1x1 convolutions; DW3x3 [4C, 3, 3] is a
// depthwise 3x3 convolution with zero padding 1; GELU is the exact erf form. No biases.
//
// Tiling. A block owns TH x TW output pixels of one image. It loads x over the tile plus a 1-pixel halo,
// (TH+2) x (TW+2) pixels, into shared memory (as float, zeros outside the image), keeps the residual of its
// output pixels in registers, and normalises the halo pixels in place. Halo pixels outside the image stay
// exactly zero: W1 . 0 = 0 and GELU(0) = 0, so their hidden values are the zero padding the depthwise
// convolution expects (and not GELU(W1 . LN(0)) = GELU(W1 . beta)).
//
// The 4C hidden channels are processed in chunks of K = 32 (4C + 4 channels, padded with zero weights):
//   1. GEMM1  hs[K][halo px]  = GELU(W1[chunk] . xn)       (all halo pixels, FP32 FMA)
//   2. DW     h2s[K][out px]  = GELU(dw3x3(hs))             (output pixels only)
//   3. GEMM2  acc[out px][C] += W2[:, chunk] . h2s           (accumulators stay in registers across chunks)
// so the hidden state never leaves the SM and only K channels of it live in shared memory at a time. The
// weights of a chunk are copied to shared memory with cp.async (transposed, rows padded so the copies are
// bank-conflict-free), one phase ahead of their use where separate W1/W2 buffers fit (C = 31, 62), which hides
// the L2 latency of the weight reads. At the end the accumulators (residual included) go through shared memory
// to coalesced stores of y.
//
// Register blocking. GEMM1: a thread computes 4 consecutive halo pixels x NB1 hidden channels per item, from one
// float4 of xn and NB1/4 float4 of W1 (a warp reads 128 consecutive pixels and broadcasts the weights). GEMM2:
// 4 output pixels x 8 output channels, from one float4 of h2s and two of W2. DW: one thread slides down R rows
// of one column of one channel, so each loaded value serves up to 3 outputs.
//
// Precision. Everything is float32: LN statistics (two-pass mean and variance), both GEMMs (FFMA, no TF32),
// the depthwise convolution and both GELUs. For FP16/BF16 storage the hidden state also stays float32 in shared
// memory: this kernel is bound by FMA issue, not by shared memory capacity (chunks of 32 hidden channels keep
// it under ~100 KB per block), so a 16-bit hidden state would save no time and would add a rounding of every
// hidden value (2^-11 relative in FP16, 2^-8 in BF16) on top of the storage rounding of x and y.
//
// x and y must not overlap: a block reads the halo of its tile from pixels that other blocks write, so the
// kernel cannot run in place (the entry point rejects overlapping ranges).
#include <atomic>
#include <climits>
#include <cmath>

#include "common.cuh"

namespace mstpp
{
namespace
{

constexpr int round_up(int a, int b)
{
    return (a + b - 1) / b * b;
}

constexpr int cdiv(int a, int b)
{
    return (a + b - 1) / b;
}

constexpr int cmax(int a, int b)
{
    return a > b ? a : b;
}

__device__ __forceinline__ float gelu_erf(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

// Compile-time shape of one FFN kernel instantiation.
//   kC: channels; kTH x kTW: output tile; kNB1: hidden channels per GEMM1 thread item (4 or 8); kR: DW rows per
//   thread. Shared memory (floats, every region 16-byte aligned):
//     xs   [C][NHP]      x of the halo tile, then LN(x) in place; at the end the output tile [C][NOP]
//     hs   [K][NHP]      GELU(W1 . xn) of the current chunk
//     h2s  [K][NOP]      GELU(DW(hs)) of the current chunk
//     w1s  [C][K + 4]    W1 chunk, transposed
//     w2s  [K][CP + 4]   W2 chunk, transposed (the same memory as w1s when separate buffers do not fit)
//     wds  [K][9]        depthwise weights of the chunk
//     gamma, beta [C]
template <int kC, int kTH, int kTW, int kNB1, int kR>
struct FfnConfig
{
    static constexpr int C = kC;
    static constexpr int TH = kTH;
    static constexpr int TW = kTW;
    static constexpr int kThreads = 256;
    static constexpr int K = 32; // hidden channels per chunk
    static constexpr int kHidden = 4 * C;
    static constexpr int kChunks = cdiv(kHidden, K);
    static constexpr int NB1 = kNB1;
    static constexpr int NB2 = 8;
    static constexpr int R = kR;
    static constexpr int CP = round_up(C, 32); // GEMM2 output channels, padded with zero weights

    static constexpr int HTW = TW + 2; // halo tile width (pitch of the halo pixel index)
    static constexpr int HTH = TH + 2;
    static constexpr int NH = HTH * HTW;
    static constexpr int NHP = round_up(NH, 4);
    static constexpr int NO = TH * TW;
    static constexpr int NOP = round_up(NO, 4);

    static constexpr int W1P = K + 4;  // row pitch of the staged W1 chunk [C][K]
    static constexpr int W2P = CP + 4; // row pitch of the staged W2 chunk [K][CP]

    // GEMM1 items: (halo pixel quad, group of NB1 hidden channels), looped over by the block.
    static constexpr int NQ1 = NHP / 4;
    static constexpr int kItems1 = NQ1 * (K / NB1);
    static constexpr int kItems1Iters = cdiv(kItems1, kThreads);
    // GEMM2 items: (output pixel quad, group of NB2 channels), owned by one thread for the whole kernel.
    static constexpr int NQ2 = NOP / 4;
    static constexpr int kItems2 = NQ2 * (CP / NB2);
    static constexpr int kItems2PerThread = cdiv(kItems2, kThreads);
    // DW units: (hidden channel, column, block of R rows).
    static constexpr int NRB = cdiv(TH, R);
    static constexpr int kDwUnits = K * TW * NRB;
    static constexpr int kDwIters = cdiv(kDwUnits, kThreads);
    // Staging of a chunk's weights; see stage_w1 / stage_w2 for the index maps.
    static constexpr int kW1Iters = cdiv(C, 8);
    static constexpr int kWdElems = K * 9;
    static constexpr int kWdIters = cdiv(kWdElems, kThreads);
    static constexpr int kW2Iters = CP / 8;
    // Loading the halo tile of x.
    static constexpr int kLoadElems = C * NHP;
    static constexpr int kLoadIters = cdiv(kLoadElems, kThreads);
    static constexpr int kLoadBatch = 8;

    // Shared memory: separate W1 and W2 buffers when that fits in the 99 KB a block may use on sm_86/sm_89,
    // so each chunk's weights are copied while the previous phase computes; otherwise one buffer for both.
    static constexpr int kW1Floats = round_up(C * W1P, 4);
    static constexpr int kW2Floats = round_up(K * W2P, 4);
    static constexpr int kFixedFloats = C * NHP + K * NHP + K * NOP + round_up(K * 9, 4) + 2 * round_up(C, 4);
    static constexpr int kMaxSmemBytes = 101376;
    static constexpr bool kSplitW = (kFixedFloats + kW1Floats + kW2Floats) * 4 <= kMaxSmemBytes;
    static constexpr int kOffXs = 0;
    static constexpr int kOffHs = kOffXs + C * NHP;
    static constexpr int kOffH2s = kOffHs + K * NHP;
    static constexpr int kOffW1 = kOffH2s + K * NOP;
    static constexpr int kOffW2 = kSplitW ? kOffW1 + kW1Floats : kOffW1;
    static constexpr int kOffWd = kOffW2 + (kSplitW ? kW2Floats : cmax(kW1Floats, kW2Floats));
    static constexpr int kOffGamma = kOffWd + round_up(K * 9, 4);
    static constexpr int kOffBeta = kOffGamma + round_up(C, 4);
    static constexpr int kSmemFloats = kOffBeta + round_up(C, 4);
    static constexpr int kSmemBytes = kSmemFloats * static_cast<int>(sizeof(float));

    static_assert(K % NB1 == 0 && NB1 % 4 == 0, "GEMM1 items are float4 groups of hidden channels");
    static_assert(CP % NB2 == 0 && NB2 % 4 == 0, "GEMM2 items are float4 groups of output channels");
    static_assert(CP % 32 == 0 && K == 4 * (kThreads / 32), "the weight staging maps assume 8 warps and K = 32");
    static_assert(kThreads % 32 == 0, "whole warps");
    static_assert(NOP <= NHP, "the output tile reuses the x tile's shared memory");
    static_assert(kSmemBytes <= kMaxSmemBytes, "stay within the 99 KB a block may opt into on sm_86/sm_89");
};

// The three configurations, chosen for H100 (132 SMs, 2 blocks of 256 threads per SM, < 100 KB shared memory
// each) at MST++'s level sizes (C = 31 at 512x488, 62 at 256x244, 124 at 128x122):
//   C = 31:  14 x 14 tile, 16 x 16 halo = 256 px (1.31 halo pixels per output pixel), 1295 blocks per image
//   C = 62:   6 x 14 tile,  8 x 16 halo = 128 px (1.52), 774 blocks per image
//   C = 124:  8 x  8 tile, 10 x 10 halo = 100 px (1.56), 256 blocks per image (about one wave on 132 SMs)
// Larger tiles for C = 62 / 124 would cut the halo overhead but give fewer blocks than the GPU holds.
using Ffn31 = FfnConfig<31, 14, 14, 8, 7>;
using Ffn62 = FfnConfig<62, 6, 14, 4, 6>;
using Ffn124 = FfnConfig<124, 8, 8, 4, 8>;

// 4-byte asynchronous copy global -> shared (sm_80+), zero-filled when !valid (nothing is read then).
__device__ __forceinline__ void cp_async4(float* dst, float const* src, bool valid)
{
    unsigned const d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    int const n = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}

// Waits for every cp.async this thread issued; a __syncthreads() must follow before other threads read the data.
__device__ __forceinline__ void cp_async_wait_all()
{
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// W1 chunk [K hidden][C] -> w1s[c * W1P + j], zero for hidden channels past 4C. Warp w, lane l, step i copies
// hidden j = 4w + l / 8 and channel c = 8i + l % 8: 8 consecutive channels of one W1 row per 8 lanes (one
// 32-byte sector), shared bank (4c + j) % 32 distinct across the warp. The addresses of step i are a base plus
// compile-time offsets, so the copy keeps two pointers live, not one per step.
template <typename Cfg>
__device__ __forceinline__ void stage_w1(float* w1s, float const* __restrict__ w1, int j0)
{
    constexpr int C = Cfg::C;
    int const l = threadIdx.x % 32;
    int const j = 4 * (threadIdx.x / 32) + l / 8;
    bool const row_ok = j0 + j < Cfg::kHidden;
    float const* src = w1 + (row_ok ? (j0 + j) * C + l % 8 : 0);
    float* dst = w1s + (l % 8) * Cfg::W1P + j;
#pragma unroll
    for (int i = 0; i < Cfg::kW1Iters; ++i)
    {
        if (8 * i + l % 8 < C)
        {
            cp_async4(dst + 8 * i * Cfg::W1P, row_ok ? src + 8 * i : w1, row_ok);
        }
    }
}

// Depthwise weights of the chunk, [K][9], zero past 4C.
template <typename Cfg>
__device__ __forceinline__ void stage_wd(float* wds, float const* __restrict__ wdw, int j0)
{
#pragma unroll
    for (int i = 0; i < Cfg::kWdIters; ++i)
    {
        int const e = threadIdx.x + i * Cfg::kThreads;
        if (e < Cfg::kWdElems)
        {
            bool const valid = j0 * 9 + e < Cfg::kHidden * 9;
            cp_async4(wds + e, valid ? wdw + j0 * 9 + e : wdw, valid);
        }
    }
}

// W2[:, chunk] (rows of 4C) -> w2s[j * W2P + c], zero for c >= C and hidden past 4C. Warp w, lane l, step i
// copies hidden j = 8 (w % 4) + l % 8 and channel c = 8i + 4 (w / 4) + l / 8: 8 consecutive hidden of one W2 row
// per 8 lanes, shared bank (4j + c) % 32 distinct across the warp.
template <typename Cfg>
__device__ __forceinline__ void stage_w2(float* w2s, float const* __restrict__ w2, int j0)
{
    int const l = threadIdx.x % 32;
    int const w = threadIdx.x / 32;
    int const j = 8 * (w % 4) + l % 8;
    int const c0 = 4 * (w / 4) + l / 8;
    bool const col_ok = j0 + j < Cfg::kHidden;
    float const* src = w2 + c0 * Cfg::kHidden + j0 + j;
    float* dst = w2s + j * Cfg::W2P + c0;
#pragma unroll
    for (int i = 0; i < Cfg::kW2Iters; ++i)
    {
        bool const valid = col_ok && c0 + 8 * i < Cfg::C;
        cp_async4(dst + 8 * i, valid ? src + 8 * i * Cfg::kHidden : w2, valid);
    }
}

// hs[j][p] = GELU(sum_c xs[c][p] * W1[j0 + j][c]) for every halo pixel p (and the padding pixels, harmlessly).
template <typename Cfg>
__device__ __forceinline__ void gemm1_gelu(float const* xs, float const* w1s, float* hs)
{
    constexpr int NB1 = Cfg::NB1;
#pragma unroll 1
    for (int it = 0; it < Cfg::kItems1Iters; ++it)
    {
        int const t = threadIdx.x + it * Cfg::kThreads;
        if (t < Cfg::kItems1)
        {
            int const quad = t % Cfg::NQ1;
            int const g = t / Cfg::NQ1;
            float const* xp = xs + 4 * quad;
            float const* wp = w1s + g * NB1;
            float acc[4][NB1];
#pragma unroll
            for (int n = 0; n < NB1; ++n)
            {
                acc[0][n] = acc[1][n] = acc[2][n] = acc[3][n] = 0.0f;
            }
#pragma unroll 4
            for (int c = 0; c < Cfg::C; ++c)
            {
                float4 const xv = *reinterpret_cast<float4 const*>(xp + c * Cfg::NHP);
                float wv[NB1];
#pragma unroll
                for (int n4 = 0; n4 < NB1 / 4; ++n4)
                {
                    float4 const w4 = *reinterpret_cast<float4 const*>(wp + c * Cfg::W1P + 4 * n4);
                    wv[4 * n4 + 0] = w4.x;
                    wv[4 * n4 + 1] = w4.y;
                    wv[4 * n4 + 2] = w4.z;
                    wv[4 * n4 + 3] = w4.w;
                }
#pragma unroll
                for (int n = 0; n < NB1; ++n)
                {
                    acc[0][n] = fmaf(xv.x, wv[n], acc[0][n]);
                    acc[1][n] = fmaf(xv.y, wv[n], acc[1][n]);
                    acc[2][n] = fmaf(xv.z, wv[n], acc[2][n]);
                    acc[3][n] = fmaf(xv.w, wv[n], acc[3][n]);
                }
            }
#pragma unroll
            for (int n = 0; n < NB1; ++n)
            {
                float4 const o = make_float4(gelu_erf(acc[0][n]), gelu_erf(acc[1][n]), gelu_erf(acc[2][n]),
                    gelu_erf(acc[3][n]));
                *reinterpret_cast<float4*>(hs + (g * NB1 + n) * Cfg::NHP + 4 * quad) = o;
            }
        }
    }
}

// h2s[j][r * TW + c] = GELU(sum_{dy,dx} wds[j][dy][dx] * hs[j][(r + dy) * HTW + c + dx]) for the output pixels.
template <typename Cfg>
__device__ __forceinline__ void depthwise_gelu(float const* hs, float const* wds, float* h2s)
{
    constexpr int R = Cfg::R;
    constexpr int TH = Cfg::TH;
    constexpr bool kEven = TH % R == 0;
#pragma unroll 1
    for (int it = 0; it < Cfg::kDwIters; ++it)
    {
        int const u = threadIdx.x + it * Cfg::kThreads;
        if (u < Cfg::kDwUnits)
        {
            int const col = u % Cfg::TW;
            int const rest = u / Cfg::TW;
            int const r0 = (rest % Cfg::NRB) * R;
            int const j = rest / Cfg::NRB;
            float const* hp = hs + j * Cfg::NHP + r0 * Cfg::HTW + col;
            float w[9];
#pragma unroll
            for (int k = 0; k < 9; ++k)
            {
                w[k] = wds[j * 9 + k];
            }
            float o[R];
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                o[r] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < R + 2; ++i)
            {
                if (kEven || r0 + i < TH + 2)
                {
                    float const v0 = hp[i * Cfg::HTW];
                    float const v1 = hp[i * Cfg::HTW + 1];
                    float const v2 = hp[i * Cfg::HTW + 2];
#pragma unroll
                    for (int dy = 0; dy < 3; ++dy)
                    {
                        int const r = i - dy; // output row fed by halo row i through kernel row dy
                        if (r >= 0 && r < R)
                        {
                            o[r] = fmaf(w[dy * 3 + 0], v0, o[r]);
                            o[r] = fmaf(w[dy * 3 + 1], v1, o[r]);
                            o[r] = fmaf(w[dy * 3 + 2], v2, o[r]);
                        }
                    }
                }
            }
            float* op = h2s + j * Cfg::NOP + r0 * Cfg::TW + col;
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                if (kEven || r0 + r < TH)
                {
                    op[r * Cfg::TW] = gelu_erf(o[r]);
                }
            }
        }
    }
}

// Launch assumptions: blockDim.x == Cfg::kThreads; dynamic shared memory Cfg::kSmemBytes; gridDim.x ==
// B * tiles_per_image with tiles_per_image == ceil(H / TH) * tiles_x, tiles_x == ceil(W / TW); x and y are
// contiguous [B, C, H, W] and do not overlap; weights are float32 [4C, C], [4C, 3, 3], [C, 4C].
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 2) ffn_fma_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ ln_gamma, float const* __restrict__ ln_beta, float const* __restrict__ w1,
    float const* __restrict__ wdw, float const* __restrict__ w2, int H, int W, int tiles_x, int tiles_per_image,
    float eps)
{
    constexpr int C = Cfg::C;
    extern __shared__ float4 smem4[];
    float* const smem = reinterpret_cast<float*>(smem4);
    float* const xs = smem + Cfg::kOffXs;
    float* const hs = smem + Cfg::kOffHs;
    float* const h2s = smem + Cfg::kOffH2s;
    float* const w1s = smem + Cfg::kOffW1;
    float* const w2s = smem + Cfg::kOffW2;
    float* const wds = smem + Cfg::kOffWd;
    float* const s_gamma = smem + Cfg::kOffGamma;
    float* const s_beta = smem + Cfg::kOffBeta;

    int const tid = threadIdx.x;
    int const image = blockIdx.x / tiles_per_image;
    int const tile = blockIdx.x - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const y0 = ty * Cfg::TH;
    int const x0 = (tile - ty * tiles_x) * Cfg::TW;
    int64_t const hw = static_cast<int64_t>(H) * W;
    T const* const xb = x + static_cast<int64_t>(image) * C * hw;
    T* const yb = y + static_cast<int64_t>(image) * C * hw;

    if constexpr (Cfg::kSplitW)
    {
        stage_w1<Cfg>(w1s, w1, 0); // the first chunk's W1 is in flight while x is loaded and normalised
    }

    // ---- x halo tile -> xs[c][p] (float, zero outside the image and in the padding pixels)
    for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
    {
        float v[Cfg::kLoadBatch];
#pragma unroll
        for (int k = 0; k < Cfg::kLoadBatch; ++k)
        {
            int const e = tid + (i0 + k) * Cfg::kThreads;
            v[k] = 0.0f;
            if (i0 + k < Cfg::kLoadIters && e < Cfg::kLoadElems)
            {
                int const c = e / Cfg::NHP;
                int const p = e - c * Cfg::NHP;
                int const hr = p / Cfg::HTW;
                int const gy = y0 - 1 + hr;
                int const gx = x0 - 1 + (p - hr * Cfg::HTW);
                if (p < Cfg::NH && gy >= 0 && gy < H && gx >= 0 && gx < W)
                {
                    v[k] = to_float(xb[c * hw + static_cast<int64_t>(gy) * W + gx]);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < Cfg::kLoadBatch; ++k)
        {
            int const e = tid + (i0 + k) * Cfg::kThreads;
            if (i0 + k < Cfg::kLoadIters && e < Cfg::kLoadElems)
            {
                xs[e] = v[k];
            }
        }
    }
    for (int c = tid; c < C; c += Cfg::kThreads)
    {
        s_gamma[c] = ln_gamma[c];
        s_beta[c] = ln_beta[c];
    }
    // h2s padding pixels [NO, NOP) are read by GEMM2 (whole quads) but never written by DW; zero them once.
    if constexpr (Cfg::NOP > Cfg::NO)
    {
        for (int e = tid; e < Cfg::K * (Cfg::NOP - Cfg::NO); e += Cfg::kThreads)
        {
            int const j = e / (Cfg::NOP - Cfg::NO);
            h2s[j * Cfg::NOP + Cfg::NO + (e - j * (Cfg::NOP - Cfg::NO))] = 0.0f;
        }
    }
    __syncthreads();

    // ---- GEMM2 accumulators start at the residual x of the thread's output pixels and channels.
    constexpr int kI2 = Cfg::kItems2PerThread;
    constexpr int NB2 = Cfg::NB2;
    float acc[kI2][4][NB2];
#pragma unroll
    for (int s = 0; s < kI2; ++s)
    {
        int const t = tid + s * Cfg::kThreads;
        int const quad = t % Cfg::NQ2;
        int const g = t / Cfg::NQ2;
#pragma unroll
        for (int p = 0; p < 4; ++p)
        {
            int const q = 4 * quad + p;
            int const halo = (q / Cfg::TW + 1) * Cfg::HTW + q % Cfg::TW + 1;
#pragma unroll
            for (int n = 0; n < NB2; ++n)
            {
                int const c = g * NB2 + n;
                acc[s][p][n] = (t < Cfg::kItems2 && q < Cfg::NO && c < C) ? xs[c * Cfg::NHP + halo] : 0.0f;
            }
        }
    }
    __syncthreads();

    // ---- LayerNorm of every in-image halo pixel, in place (two-pass mean and biased variance).
    for (int p = tid; p < Cfg::NH; p += Cfg::kThreads)
    {
        int const hr = p / Cfg::HTW;
        int const gy = y0 - 1 + hr;
        int const gx = x0 - 1 + (p - hr * Cfg::HTW);
        if (gy >= 0 && gy < H && gx >= 0 && gx < W)
        {
            float* const col = xs + p;
            float sum = 0.0f;
#pragma unroll 8
            for (int c = 0; c < C; ++c)
            {
                sum += col[c * Cfg::NHP];
            }
            float const mean = sum * (1.0f / C);
            float sq = 0.0f;
#pragma unroll 8
            for (int c = 0; c < C; ++c)
            {
                float const d = col[c * Cfg::NHP] - mean;
                sq = fmaf(d, d, sq);
            }
            float const rstd = rsqrtf(sq * (1.0f / C) + eps);
#pragma unroll 8
            for (int c = 0; c < C; ++c)
            {
                col[c * Cfg::NHP] = fmaf((col[c * Cfg::NHP] - mean) * rstd, s_gamma[c], s_beta[c]);
            }
        }
    }

    // ---- hidden chunks. Every cp.async is waited for by the thread that issued it, then a barrier publishes it.
    // Split buffers: W1(chunk + 1) is copied during DW and GEMM2 of this chunk, W2 and the depthwise weights of a
    // chunk during its GEMM1. One buffer: W1 (and the depthwise weights) at the top of the chunk, exposed; W2
    // during DW.
#pragma unroll 1
    for (int chunk = 0; chunk < Cfg::kChunks; ++chunk)
    {
        int const j0 = chunk * Cfg::K;
        if constexpr (!Cfg::kSplitW)
        {
            if (chunk > 0)
            {
                __syncthreads(); // previous GEMM2 done with the weight buffer
            }
            stage_w1<Cfg>(w1s, w1, j0);
            stage_wd<Cfg>(wds, wdw, j0);
        }
        cp_async_wait_all();
        __syncthreads(); // W1 chunk landed; LN done (first chunk) / previous GEMM2 done with h2s (and w2s)
        if constexpr (Cfg::kSplitW)
        {
            stage_w2<Cfg>(w2s, w2, j0); // previous DW done with wds, previous GEMM2 with w2s (barrier above)
            stage_wd<Cfg>(wds, wdw, j0);
        }
        gemm1_gelu<Cfg>(xs, w1s, hs);
        if constexpr (Cfg::kSplitW)
        {
            cp_async_wait_all();
        }
        __syncthreads(); // hs complete; GEMM1 done with w1s; (split) W2 and depthwise weights landed
        if constexpr (Cfg::kSplitW)
        {
            if (chunk + 1 < Cfg::kChunks)
            {
                stage_w1<Cfg>(w1s, w1, j0 + Cfg::K);
            }
        }
        else
        {
            stage_w2<Cfg>(w2s, w2, j0);
        }
        depthwise_gelu<Cfg>(hs, wds, h2s);
        if constexpr (!Cfg::kSplitW)
        {
            cp_async_wait_all();
        }
        __syncthreads(); // h2s complete; W2 chunk landed

#pragma unroll
        for (int s = 0; s < kI2; ++s)
        {
            int const t = tid + s * Cfg::kThreads;
            if (t < Cfg::kItems2)
            {
                int const quad = t % Cfg::NQ2;
                int const g = t / Cfg::NQ2;
                float const* hp = h2s + 4 * quad;
                float const* wp = w2s + g * NB2;
#pragma unroll 4
                for (int j = 0; j < Cfg::K; ++j)
                {
                    float4 const hv = *reinterpret_cast<float4 const*>(hp + j * Cfg::NOP);
                    float wv[NB2];
#pragma unroll
                    for (int n4 = 0; n4 < NB2 / 4; ++n4)
                    {
                        float4 const w4 = *reinterpret_cast<float4 const*>(wp + j * Cfg::W2P + 4 * n4);
                        wv[4 * n4 + 0] = w4.x;
                        wv[4 * n4 + 1] = w4.y;
                        wv[4 * n4 + 2] = w4.z;
                        wv[4 * n4 + 3] = w4.w;
                    }
#pragma unroll
                    for (int n = 0; n < NB2; ++n)
                    {
                        acc[s][0][n] = fmaf(hv.x, wv[n], acc[s][0][n]);
                        acc[s][1][n] = fmaf(hv.y, wv[n], acc[s][1][n]);
                        acc[s][2][n] = fmaf(hv.z, wv[n], acc[s][2][n]);
                        acc[s][3][n] = fmaf(hv.w, wv[n], acc[s][3][n]);
                    }
                }
            }
        }
    }

    // ---- output tile -> xs as [C][NOP] (nothing reads xs after the last GEMM1), then coalesced stores.
    float* const os = xs;
#pragma unroll
    for (int s = 0; s < kI2; ++s)
    {
        int const t = tid + s * Cfg::kThreads;
        if (t < Cfg::kItems2)
        {
            int const quad = t % Cfg::NQ2;
            int const g = t / Cfg::NQ2;
#pragma unroll
            for (int n = 0; n < NB2; ++n)
            {
                if (g * NB2 + n < C)
                {
                    *reinterpret_cast<float4*>(os + (g * NB2 + n) * Cfg::NOP + 4 * quad)
                        = make_float4(acc[s][0][n], acc[s][1][n], acc[s][2][n], acc[s][3][n]);
                }
            }
        }
    }
    __syncthreads();
    for (int e = tid; e < C * Cfg::NO; e += Cfg::kThreads)
    {
        int const c = e / Cfg::NO;
        int const q = e - c * Cfg::NO;
        int const r = q / Cfg::TW;
        int const gy = y0 + r;
        int const gx = x0 + (q - r * Cfg::TW);
        if (gy < H && gx < W)
        {
            yb[c * hw + static_cast<int64_t>(gy) * W + gx] = from_float<T>(os[c * Cfg::NOP + q]);
        }
    }
}

// Opts the kernel into more than 48 KB of dynamic shared memory, once per device (the attribute is set on the
// function for the current device; repeating it is harmless but costs a driver call).
template <typename Kernel>
int allow_smem(Kernel kernel, int bytes, std::atomic<uint64_t>& done_devices)
{
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess)
    {
        return static_cast<int>(err);
    }
    uint64_t const bit = device < 64 ? (uint64_t{1} << device) : 0;
    if (bit != 0 && (done_devices.load(std::memory_order_relaxed) & bit) != 0)
    {
        return MSTPP_OK;
    }
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err != cudaSuccess)
    {
        cudaGetLastError(); // not sticky; do not leave it for the next launch_status()
        return static_cast<int>(err);
    }
    done_devices.fetch_or(bit, std::memory_order_relaxed);
    return MSTPP_OK;
}

template <typename T, typename Cfg>
int launch_ffn(T const* x, T* y, float const* gamma, float const* beta, float const* w1, float const* wdw,
    float const* w2, int64_t B, int64_t H, int64_t W, float eps, cudaStream_t stream)
{
    int64_t const tiles_x = ceil_div(W, Cfg::TW);
    int64_t const per_image = ceil_div(H, Cfg::TH) * tiles_x;
    if (per_image > kMaxGridX || B > kMaxGridX / per_image)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    static std::atomic<uint64_t> smem_done{0};
    auto kernel = ffn_fma_kernel<T, Cfg>;
    int const status = allow_smem(kernel, Cfg::kSmemBytes, smem_done);
    if (status != MSTPP_OK)
    {
        return status;
    }
    kernel<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(x, y, gamma, beta, w1,
        wdw, w2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x), static_cast<int>(per_image),
        eps);
    return launch_status();
}

bool overlaps(void const* a, void const* b, size_t bytes)
{
    auto const pa = reinterpret_cast<uintptr_t>(a);
    auto const pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + bytes && pb < pa + bytes;
}

} // namespace
} // namespace mstpp

extern "C" int mstpp_ffn_nchw(void const* x, void* y, float const* ln_gamma, float const* ln_beta, float const* w1,
    float const* wdw, float const* w2, int64_t B, int C, int64_t H, int64_t W, float eps, int dtype, void* stream)
{
    using namespace mstpp;
    if (B < 0 || H < 0 || W < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    if (C != 31 && C != 62 && C != 124)
    {
        return MSTPP_ERR_UNSUPPORTED_WIDTH;
    }
    if (!(eps >= 0.0f) || !std::isfinite(eps))
    {
        return MSTPP_ERR_BAD_EPS;
    }
    if (B == 0 || H == 0 || W == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || ln_gamma == nullptr || ln_beta == nullptr || w1 == nullptr || wdw == nullptr
        || w2 == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    // Pixel coordinates are int in the kernel, element offsets int64; one image plane must fit an int64 with room.
    if (H > INT_MAX || W > INT_MAX || H * W > (INT64_MAX / 8) / (static_cast<int64_t>(C) * B))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    size_t const elem = dtype == MSTPP_DTYPE_FLOAT32 ? 4 : 2;
    if (overlaps(x, y, static_cast<size_t>(B * C * H * W) * elem))
    {
        return MSTPP_ERR_OVERLAP;
    }
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        switch (C)
        {
        case 31: return launch_ffn<T, Ffn31>(xt, yt, ln_gamma, ln_beta, w1, wdw, w2, B, H, W, eps, s);
        case 62: return launch_ffn<T, Ffn62>(xt, yt, ln_gamma, ln_beta, w1, wdw, w2, B, H, W, eps, s);
        default: return launch_ffn<T, Ffn124>(xt, yt, ln_gamma, ln_beta, w1, wdw, w2, B, H, W, eps, s);
        }
    });
}
