// The MST++ feed-forward block in one kernel, on NCHW tensors:
//   y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x))))
// LN over the C channels of every pixel; W1 [4C, C] and W2 [C, 4C] are 1x1 convolutions; DW3x3 [4C, 3, 3] is a
// depthwise 3x3 convolution with zero padding 1; GELU is the exact erf form. No biases.
//
// Two kernels behind one entry point, chosen by the storage type:
//   ffn_fma_kernel  FP32 storage: everything in FP32 FMA on CUDA cores (no TF32, by project policy). Described first.
//   ffn_tc_kernel   FP16 / BF16 storage: both 1x1 convolutions on tensor cores. Described after the FP32 kernel.
//
// ================================================ FP32 kernel (ffn_fma_kernel)
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
// the depthwise convolution and both GELUs (erff). Measured on an H100 (docs/perf_notes_fused.md): 0.27 / 0.26 /
// 0.23 ms per block at C = 31 / 62 / 124 (MST++ level sizes), FMA-issue bound (~16 TFLOP/s).
//
// ================================================ Tensor-core kernel (ffn_tc_kernel), FP16 / BF16 storage
// Same block structure (halo tile, LN in shared memory, hidden chunks of K = 32, GEMM2 accumulators in registers for
// the whole kernel, hidden state never in global memory), with:
//   GEMM1  hs[32][halo px] = GELU(W1[chunk] . xn): mma.sync m16n8k16, M = hidden (2 m16 tiles), N = halo pixels,
//          K = channels padded to CK = 32/64/128 with zero weights (and zero LN channels). A = W1 chunk [32][CK] and
//          B = xn [px][CK] (channel-contiguous) in shared memory as T, loaded with ldmatrix.x4; FP32 accumulators go
//          through the tanh-form GELU (dwconv.cuh, tanh.approx.f32) in registers and to hs: FP16 for FP16 storage,
//          FP32 for BF16 storage.
//   DW     h2[32][out px] = GELU(dw3x3(hs)) through the shared depthwise helper (dwconv.cuh): a thread slides down R
//          rows of two adjacent columns; FP16 storage in half2 (HFMA2 sums, half2 tanh GELU), BF16 storage in FP32;
//          the pair is written as one 32-bit T2.
//   GEMM2  acc[c][out px] += W2[:, chunk] . h2: M = output channels padded to CP = 32/64/128 (zero weights; the padded
//          rows are never stored), N = output pixels, K = 32 hidden; A = W2 chunk [CP][32] (ldmatrix.x4), B = h2
//          [hidden][px] (pixel-contiguous, ldmatrix.x4.trans). Warp w owns 2 m16 tiles x NW2 n8 tiles throughout
//          (24 / 32 / 32 accumulator registers at C = 31 / 62 / 124), initialised with the residual x.
// Operands are T (FP16 for FP16 storage, BF16 for BF16 storage), accumulation FP32. Rounded: LN(x), W1, h2, W2
// (2^-11 relative for FP16, 2^-8 for BF16); FP32: LN statistics, the mma accumulators, GELU1; FP16 storage also
// rounds hs and runs the depthwise sums and GELU2 in FP16 (error bounds: docs/perf_notes_fused.md, "Error bounds of
// the 16-bit hidden arithmetic"); BF16 storage keeps hs, the depthwise sums and GELU2 in FP32.
// x is kept in shared memory in its storage type (exact), and the output tile is staged as T (the one rounding of y).
// Weights arrive as FP32 in global memory (the ABI); each block converts the chunks it needs: W2 of the chunk and
// W1 + depthwise weights of the next chunk are loaded into registers at the start of the DW phase (whose work hides
// the L2 latency) and stored to shared memory as T after it, before the barrier that publishes them.
// Two barriers per chunk, as in the FP32 kernel; the phases' shared-memory hand-offs are listed in the kernel.
//
// Why mma.sync + ldmatrix and not nvcuda::wmma: GELU must be applied to GEMM1's accumulators element by element
// with known (hidden, pixel) coordinates before they go to the FP32 hs layout that the depthwise convolution wants,
// and GEMM2's accumulators must start at the residual of known (channel, pixel) coordinates. wmma leaves the
// fragment layout unspecified, so both would need an extra round trip of every accumulator tile through shared
// memory (store_matrix_sync + reload); the PTX m16n8k16 layouts are documented and identical on sm_80..sm_90, so
// the kernel maps fragments to coordinates directly. m16n8k16 also fits the small dimensions (n8 pixel tiles,
// K = 32 per chunk) better than wmma's 16x16x16. wgmma (sm_90a only) would need a separate build and buys
// nothing here: the tensor work is ~8 us per C = 31 block (below), the CUDA-core work is the bound.
//
// GELU: the exact-erf GELU costs ~28 instructions with erff and was most of the kernel's work (it runs on 128 hidden
// values per halo pixel and per output pixel). The tensor-core kernel uses the refitted tanh form of dwconv.cuh on
// tanh.approx (~6 FP32 instructions, or ~3 per value in half2), max abs error 2.71e-4 + 0.5 u |v| against the exact
// GELU; the FP32 kernel keeps erff. Measured on the H100 (docs/perf_notes_fused.md, step 6): 0.133 / 0.081 / 0.072
// ms per FP16 block at C = 31 / 62 / 124 (0.116 at C = 31 with 3 blocks per SM), not the estimate below.
//
// Tiles (256 threads, 2 blocks per SM on sm_80/90; shared memory 75,776 / 74,368 / 80,928 bytes, within the
// 99 KB a block may use on sm_86/89):
//   C = 31:  12 x 16 tile, 14 x 18 halo (256 px through GEMM1), 43 x 31 = 1333 blocks at 512 x 488
//   C = 62:   8 x 16 tile, 10 x 18 halo (184 px),  512 blocks at 256 x 244 (1.94 waves)
//   C = 124:  8 x  8 tile, 10 x 10 halo (104 px),  256 blocks at 128 x 122 (one wave)
// Output tiles are multiples of 8 pixels (n8 tiles) and split evenly over the warps in GEMM2.
//
// Estimate, C = 31 at 1 x 31 x 512 x 488 (FP16), H100 SXM (132 SMs, 4 warp-instructions/clk/SM, ~1.75 GHz):
//   tensor cores: GEMM1 2 * 128 * 32 * 341k halo px + GEMM2 2 * 32 * 128 * 256k px = 4.9 GFLOP (padding included)
//     -> ~8 us at ~600 TFLOP/s (mma.sync FP16); not the bound.
//   CUDA cores per block and chunk: GELU1 on 32 x 256 hidden values x ~16.5 instructions = 4.2k warp-instructions,
//     DW + GELU2 on 32 x 192 outputs x ~28 (9 FMA, 1.3 LDS.64, GELU, pack/store) = 5.4k, ldmatrix/mma ~0.4k,
//     weight staging ~0.2k: ~10.2k per chunk, x 4 chunks + ~6k for load, LN and store = ~47k per block (sm_90
//     SASS of the FP16 C = 31 instantiation: GEMM1 loop 147 instructions per 8 hidden values per thread, i.e. 18.4
//     with ldmatrix/mma/stores, of which GELU 15; DW loop 355 per 12 outputs, i.e. 29.6 per output);
//     1333 blocks = 63M warp-instructions / (132 x 4 x 1.75 GHz) = 68 us at full issue.
//   shared memory: ~200 KB per block and chunk (DW loads 65 KB, hs stores 32 KB, ldmatrix ~70 KB, ...) = ~1.6k clk
//     against ~2.5k clk of issue: below the issue bound.
//   DRAM: x read (with halo, mostly L2 hits) and y written, 2 x 15.5 MB = 31 MB -> ~10 us, overlapped; weights 42 MB
//     from L2 in total, ~5 us, overlapped.
// Prediction: issue-bound, ~75% issue efficiency -> ~0.09 ms per C = 31 block (0.08 - 0.11 ms), against 0.27 - 0.29
// ms for the FP32-math kernel. C = 62: ~0.05 - 0.06 ms; C = 124: ~0.035 - 0.05 ms (weight conversion is ~14% of the
// instructions there: 64 KB of FP32 weights per 64 output pixels). 15 blocks: ~1.0 ms per image instead of ~4 ms.
// Not yet measured (compile-checked only when written).
//
// x and y must not overlap: a block reads the halo of its tile from pixels that other blocks write, so the
// kernel cannot run in place (the entry point rejects overlapping ranges).
#include <atomic>
#include <climits>
#include <cmath>
#include <type_traits>

#include "block_common.cuh"
#include "dwconv.cuh"
#include "mma16.cuh"

namespace mstpp
{
namespace
{

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
using Ffn62 = FfnConfig<62, 6, 14, 4, 3>;
using Ffn124 = FfnConfig<124, 8, 8, 4, 4>;

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

// h2s[j][r * TW + c] = GELU(sum_{dy,dx} wds[j][dy][dx] * hs[j][(r + dy) * HTW + c + dx]) for the output pixels
// (exact erf GELU, FP32).
template <typename Cfg>
__device__ __forceinline__ void depthwise_gelu(float const* hs, float const* wds, float* h2s)
{
    constexpr int R = Cfg::R;
    static_assert(Cfg::TH % R == 0 && Cfg::TW % 2 == 0 && Cfg::HTW % 2 == 0 && Cfg::NHP % 2 == 0, "DW units");
    dw::for_each_unit<Cfg::K, Cfg::TW / 2, Cfg::TH / R, Cfg::kThreads>([&](int j, int cp, int rb) {
        float w[9];
        dw::load_taps(wds + j * 9, w);
        float2 o[R];
        dw::conv3x3_pair<R, Cfg::HTW>(hs + j * Cfg::NHP + rb * R * Cfg::HTW + 2 * cp, w, o);
        float* const op = h2s + j * Cfg::NOP + rb * R * Cfg::TW + 2 * cp;
#pragma unroll
        for (int r = 0; r < R; ++r)
        {
            *reinterpret_cast<float2*>(op + r * Cfg::TW) = make_float2(gelu_erf(o[r].x), gelu_erf(o[r].y));
        }
    });
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

// Both FFN kernels (FP32 FMA and tensor-core) take the same arguments and tile the image the same way.
template <typename T, typename Cfg, auto Kernel>
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
    int const status = allow_smem(Kernel, Cfg::kSmemBytes, smem_done);
    if (status != MSTPP_OK)
    {
        return status;
    }
    Kernel<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(x, y, gamma, beta, w1,
        wdw, w2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x), static_cast<int>(per_image),
        eps);
    return launch_status();
}

// =================================================================================================================
// Tensor-core path (FP16 / BF16 storage); see the header comment for the design and the estimates.

// Smallest pitch >= n that is a multiple of 8 and is congruent to res modulo 32 (words or floats).
constexpr int pitch_with_residue(int n, int res)
{
    int p = round_up(n, 8);
    while (p % 32 != res)
    {
        p += 8;
    }
    return p;
}

constexpr int round16(int bytes)
{
    return round_up(bytes, 16);
}

// Compile-time shape of one tensor-core instantiation.
//   kC: channels; kTH x kTW: output tile (kTW even); kR: DW rows per thread unit; kHsRes: hs pitch modulo 32
//   (chosen so the DW float2 loads of a half-warp hit 32 distinct banks).
// Shared memory (bytes, every region 16-byte aligned):
//   U    union of: xs [C][NXP] T (x halo tile, load and LN), hs [K][HSP] float (GELU(W1 . xn) of the chunk),
//        os [C][OSP] T (output tile, epilogue); their lifetimes do not overlap (see the kernel)
//   xn   [NHN][XNP] T        LN(x) of the halo pixels, channel-contiguous (GEMM1 B operand, ldmatrix)
//   h2   [K][H2P] T          GELU(DW(hs)) of the chunk, pixel-contiguous (GEMM2 B operand, ldmatrix.trans)
//   w1b  [K][W1P] T          W1 chunk, [hidden][channel] (GEMM1 A operand, ldmatrix)
//   w2b  [CP][W2P] T         W2[:, chunk], [channel][hidden] (GEMM2 A operand, ldmatrix)
//   wds  [2][K][9] float     depthwise weights, double-buffered over chunks
//   gamma, beta [C] float
// Every ldmatrix row is 16 bytes at a pitch of 16 mod 128 bytes (pitches = multiple of 8 halves + 8), so the 8 rows
// of each 8x8 matrix fall in distinct bank quads.
template <int kC, int kTH, int kTW, int kR, int kHsRes, bool kHalfHs, int kMinBlocks>
struct FfnTcConfig
{
    static constexpr bool kHalfHidden = kHalfHs; // hs in FP16 (FP16 storage) or FP32 (BF16 storage)
    static constexpr int kMinBlocksPerSm = kMinBlocks;
    static constexpr int C = kC;
    static constexpr int TH = kTH;
    static constexpr int TW = kTW;
    static constexpr int kThreads = 256;
    static constexpr int kWarps = kThreads / 32;
    static constexpr int K = 32; // hidden channels per chunk: GEMM1 M = 2 m16 tiles, GEMM2 K = 2 k16 steps
    static constexpr int kHidden = 4 * C;
    static constexpr int kChunks = cdiv(kHidden, K);
    static constexpr int CK = round_up(C, 32); // GEMM1 reduction (channels), zero-padded
    static constexpr int CP = round_up(C, 32); // GEMM2 output channels, zero-padded (pairs of m16 tiles)

    static constexpr int HTW = TW + 2;
    static constexpr int HTH = TH + 2;
    static constexpr int NH = HTH * HTW;
    static constexpr int NHN = round_up(NH, 8); // halo pixels through GEMM1 (n8 tiles)
    static constexpr int NT1 = NHN / 8;
    static constexpr int HSP = pitch_with_residue(NHN, kHsRes);
    // hs as FP16 (FP16 storage): pitch in halves, HSPH / 2 = NCP mod 32 words, so the DW loads of a warp (NCP column
    // pairs x 32 / NCP channels) hit distinct banks.
    static constexpr int HSPH = 2 * dw::pitch_words(cdiv(NHN, 2), (TW / 2) % 32);
    static constexpr int NO = TH * TW;
    static constexpr int NOP = round_up(NO, 8);
    static constexpr int NT2 = NOP / 8;

    // GEMM2 warp tiling: warp w owns m16 tiles 2 mp, 2 mp + 1 (mp = w % kMPairs) and n8 tiles NW2 ng .. NW2 ng + NW2 - 1
    // (ng = w / kMPairs) for the whole kernel: 8 NW2 accumulators per thread.
    static constexpr int kMPairs = CP / 32;
    static constexpr int kNGroups = kWarps / kMPairs;
    static constexpr int NW2 = NT2 / kNGroups;

    // DW units: (column pair, hidden channel, block of R rows), column pair fastest.
    static constexpr int R = kR;
    static constexpr int NCP = TW / 2;
    static constexpr int NRB = TH / R;
    static constexpr int kDwUnits = NCP * K * NRB;
    static constexpr int kDwIters = cdiv(kDwUnits, kThreads);

    // Pitches in elements.
    static constexpr int NXP = NHN;   // xs, T
    static constexpr int XNP = CK + 8; // xn, T
    static constexpr int W1P = CK + 8; // w1b, T
    static constexpr int W2P = K + 8;  // w2b, T
    static constexpr int H2P = NOP + 8; // h2, T
    static constexpr int OSP = NOP;    // os, T

    // Weight staging (tc_load_w1 / tc_load_w2): W1 chunk by 8 threads per hidden row, as float pairs for even C and
    // single floats for odd C; W2 chunk as pairs, 16 threads per channel row.
    static constexpr int kW1Step = C % 2 == 0 ? 2 : 1;
    static constexpr int kW1Iters = cdiv(C, 8 * kW1Step);
    static constexpr int kW2Iters = cdiv(C, kThreads / 16);
    static constexpr int kWdElems = K * 9;
    static constexpr int kWdIters = cdiv(kWdElems, kThreads);
    static constexpr int kLoadElems = C * NXP;
    static constexpr int kLoadIters = cdiv(kLoadElems, kThreads);
    static constexpr int kLoadBatch = 8;

    static constexpr int kUBytes = round16(cmax(cmax(C * NXP * 2, kHalfHs ? K * HSPH * 2 : K * HSP * 4), C * OSP * 2));
    static constexpr int kOffXn = kUBytes;
    static constexpr int kOffH2 = kOffXn + round16(NHN * XNP * 2);
    static constexpr int kOffW1 = kOffH2 + round16(K * H2P * 2);
    static constexpr int kOffW2 = kOffW1 + round16(K * W1P * 2);
    static constexpr int kOffWd = kOffW2 + round16(CP * W2P * 2);
    static constexpr int kOffGamma = kOffWd + round16(2 * K * 9 * 4);
    static constexpr int kOffBeta = kOffGamma + round16(C * 4);
    static constexpr int kSmemBytes = kOffBeta + round16(C * 4);
    static constexpr int kMaxSmemBytes = 101376;

    static_assert(kWarps == 8 && K == 32, "GEMM1 splits the 2 m16 tiles of a chunk over warp parity");
    static_assert(kThreads == 8 * K && kThreads / 16 * 2 == K, "weight staging: 8 threads per W1 row, 16 per W2 row");
    static_assert(CK % 32 == 0 && CP % 32 == 0, "x4 ldmatrix loads cover 32 channels");
    static_assert(kWarps % kMPairs == 0 && NT2 % kNGroups == 0 && NW2 >= 1, "GEMM2 tiles split evenly over warps");
    static_assert(TW % 2 == 0 && HTW % 2 == 0 && HSP % 2 == 0, "DW reads and writes pixel pairs");
    static_assert(TH % R == 0, "DW row blocks tile the output rows");
    static_assert((XNP * 2) % 128 == 16 || (XNP * 2) % 128 == 80 || (XNP * 2) % 128 == 48 || (XNP * 2) % 128 == 112,
        "xn rows: odd multiple of 16 bytes modulo 128 (conflict-free ldmatrix)");
    static_assert((W1P * 2) % 32 == 16 && (W2P * 2) % 32 == 16 && (H2P * 2) % 32 == 16,
        "ldmatrix rows at an odd multiple of 16 bytes");
    static_assert(OSP % 2 == 0 && NXP % 8 == 0, "paired stores");
    static_assert(kSmemBytes <= kMaxSmemBytes, "stay within the 99 KB a block may opt into on sm_86/sm_89");
};

// C = 31: 12 x 16 tile, 14 x 18 halo = 252 px (1.31 halo pixels per output), 43 x 31 = 1333 blocks at 512x488.
// C = 62:  8 x 16 tile, 10 x 18 halo = 180 px (1.41), 512 blocks at 256x244 (1.94 waves of 2 blocks per SM).
// C = 124: 8 x  8 tile, 10 x 10 halo = 100 px (1.56), 256 blocks at 128x122.
// FP16 storage keeps hs in FP16, which shrinks the shared-memory union: at C = 31 the block needs ~58 KB instead of
// ~76 KB, so 3 blocks fit an SM (registers capped at 80 by the launch bound); C = 62 / 124 stay at 2 (registers).
using FfnTc31 = FfnTcConfig<31, 12, 16, 6, 16, false, 2>;
using FfnTc62 = FfnTcConfig<62, 8, 16, 8, 16, false, 2>;
using FfnTc124 = FfnTcConfig<124, 8, 8, 4, 8, false, 2>;
using FfnTc31h = FfnTcConfig<31, 12, 16, 6, 16, true, 3>;
using FfnTc62h = FfnTcConfig<62, 8, 16, 8, 16, true, 2>;
using FfnTc124h = FfnTcConfig<124, 8, 8, 4, 8, true, 2>;

// Shared with conv.cu (mma16.cuh).
using mma16::ldsm_x4;
using mma16::ldsm_x4_trans;
using mma16::pack_pair;

// W1 rows j0 .. j0 + K - 1 into registers, zero past 4C. Thread t copies row j = t / 8 of the chunk, channels
// kW1Step (t % 8) + 8 kW1Step i (single floats for odd C, float pairs otherwise, so a pair never straddles two rows):
// every address is a per-thread base plus a compile-time offset, so no per-item index stays live across chunks.
template <typename Cfg>
__device__ __forceinline__ void tc_load_w1(float (&r)[Cfg::kW1Iters][2], float const* __restrict__ w1, int j0)
{
    constexpr int C = Cfg::C;
    constexpr int S = Cfg::kW1Step;
    int const j = threadIdx.x / 8;
    int const c0 = S * (threadIdx.x % 8);
    bool const row_ok = j0 + j < Cfg::kHidden;
    float const* const src = w1 + (row_ok ? (j0 + j) * C + c0 : 0);
#pragma unroll
    for (int i = 0; i < Cfg::kW1Iters; ++i)
    {
        bool const valid = row_ok && c0 + 8 * S * i < C;
        r[i][0] = valid ? __ldg(src + 8 * S * i) : 0.0f;
        r[i][1] = (S == 2 && valid) ? __ldg(src + 8 * S * i + 1) : 0.0f;
    }
}

template <typename T, typename Cfg>
__device__ __forceinline__ void tc_store_w1(T* w1b, float const (&r)[Cfg::kW1Iters][2])
{
    constexpr int S = Cfg::kW1Step;
    int const c0 = S * (threadIdx.x % 8);
    T* const dst = w1b + (threadIdx.x / 8) * Cfg::W1P + c0;
#pragma unroll
    for (int i = 0; i < Cfg::kW1Iters; ++i)
    {
        if (c0 + 8 * S * i < Cfg::C)
        {
            if constexpr (S == 2)
            {
                *reinterpret_cast<uint32_t*>(dst + 8 * S * i) = pack_pair<T>(r[i][0], r[i][1]);
            }
            else
            {
                dst[8 * S * i] = from_float<T>(r[i][0]);
            }
        }
    }
}

// W2[:, j0 .. j0 + K - 1] as pairs: thread t copies hidden 2 (t % 16), +1 of channels t / 16 + 16 i (16 lanes read
// one 128-byte row segment); zero past 4C (4C is even, so a pair is valid or invalid as a whole).
template <typename Cfg>
__device__ __forceinline__ void tc_load_w2(float (&r)[Cfg::kW2Iters][2], float const* __restrict__ w2, int j0)
{
    int const c0 = threadIdx.x / 16;
    int const j = j0 + 2 * (threadIdx.x % 16);
    bool const col_ok = j < Cfg::kHidden;
    float const* const src = w2 + c0 * Cfg::kHidden + (col_ok ? j : 0);
#pragma unroll
    for (int i = 0; i < Cfg::kW2Iters; ++i)
    {
        bool const valid = col_ok && c0 + 16 * i < Cfg::C;
        r[i][0] = valid ? __ldg(src + 16 * i * Cfg::kHidden) : 0.0f;
        r[i][1] = valid ? __ldg(src + 16 * i * Cfg::kHidden + 1) : 0.0f;
    }
}

template <typename T, typename Cfg>
__device__ __forceinline__ void tc_store_w2(T* w2b, float const (&r)[Cfg::kW2Iters][2])
{
    int const c0 = threadIdx.x / 16;
    T* const dst = w2b + c0 * Cfg::W2P + 2 * (threadIdx.x % 16);
#pragma unroll
    for (int i = 0; i < Cfg::kW2Iters; ++i)
    {
        if (c0 + 16 * i < Cfg::C)
        {
            *reinterpret_cast<uint32_t*>(dst + 16 * i * Cfg::W2P) = pack_pair<T>(r[i][0], r[i][1]);
        }
    }
}

template <typename Cfg>
__device__ __forceinline__ void tc_load_wd(float (&r)[Cfg::kWdIters], float const* __restrict__ wdw, int j0)
{
#pragma unroll
    for (int i = 0; i < Cfg::kWdIters; ++i)
    {
        int const e = threadIdx.x + i * Cfg::kThreads;
        bool const valid = e < Cfg::kWdElems && j0 * 9 + e < Cfg::kHidden * 9;
        r[i] = valid ? __ldg(wdw + j0 * 9 + e) : 0.0f;
    }
}

template <typename Cfg>
__device__ __forceinline__ void tc_store_wd(float* wds, float const (&r)[Cfg::kWdIters])
{
#pragma unroll
    for (int i = 0; i < Cfg::kWdIters; ++i)
    {
        int const e = threadIdx.x + i * Cfg::kThreads;
        if (e < Cfg::kWdElems)
        {
            wds[e] = r[i];
        }
    }
}

// GEMM1 of one chunk: hs[j][p] = GELU(sum_c W1[j0 + j][c] xn[p][c]) for all NHN halo pixels, on m16n8k16 tiles
// (M = hidden, N = pixels, K = channels). Warp w owns m16 tile w % 2 (its A fragments stay in registers) and the
// n8 tiles w / 2, w / 2 + 4, ...; the accumulators go through GELU in registers and out as float2 per thread.
template <typename T, typename Cfg>
__device__ __forceinline__ void tc_gemm1_gelu(T const* xn, T const* w1b, void* hs, int warp, int lane)
{
    constexpr int KS = Cfg::CK / 16;
    int const mt = warp % 2;
    uint32_t a[KS][4];
    T const* const ap = w1b + (mt * 16 + lane % 8 + (lane / 8) % 2 * 8) * Cfg::W1P + lane / 16 * 8;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
    {
        ldsm_x4(a[ks], ap + ks * 16);
    }
    T const* const bp = xn + (lane % 8) * Cfg::XNP + lane / 8 * 8;
    // hs: FP16 [K][HSPH] for FP16 storage (GELU in FP32 from the accumulators, rounded once to FP16), FP32 [K][HSP]
    // for BF16 (BF16 depthwise sums would lose too much; FP16 could overflow where BF16 does not).
    constexpr bool kHalf = std::is_same_v<T, __half>;
    constexpr int kHsPitch = kHalf ? Cfg::HSPH : Cfg::HSP;
    int const hoff = (mt * 16 + lane / 4) * kHsPitch + 2 * (lane % 4);
    // Two n8 tiles in flight per warp where registers allow (C = 31, 62); one at C = 124 (32 A registers).
#pragma unroll(KS <= 4 ? 2 : 1)
    for (int nt = warp / 2; nt < Cfg::NT1; nt += Cfg::kWarps / 2)
    {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kq = 0; kq < KS / 2; ++kq)
        {
            uint32_t b[4]; // channels 32 kq + 8 i .. + 7 of the tile's 8 pixels, i = 0..3
            ldsm_x4(b, bp + nt * 8 * Cfg::XNP + kq * 32);
            mma16::mma<T>(d, a[2 * kq], b[0], b[1]);
            mma16::mma<T>(d, a[2 * kq + 1], b[2], b[3]);
        }
        if constexpr (kHalf)
        {
            __half* const hp = static_cast<__half*>(hs) + hoff + nt * 8;
            *reinterpret_cast<__half2*>(hp) = __floats2half2_rn(dw::gelu_fast(d[0]), dw::gelu_fast(d[1]));
            *reinterpret_cast<__half2*>(hp + 8 * kHsPitch) = __floats2half2_rn(dw::gelu_fast(d[2]), dw::gelu_fast(d[3]));
        }
        else
        {
            float* const hp = static_cast<float*>(hs) + hoff + nt * 8;
            *reinterpret_cast<float2*>(hp) = make_float2(dw::gelu_fast(d[0]), dw::gelu_fast(d[1]));
            *reinterpret_cast<float2*>(hp + 8 * kHsPitch) = make_float2(dw::gelu_fast(d[2]), dw::gelu_fast(d[3]));
        }
    }
}

// h2[j][q] = GELU(dw3x3(hs[j])) at the output pixels, in pairs of pixels (dwconv.cuh): FP16 storage in half2
// arithmetic (HFMA2, tanh.approx.f16x2), BF16 storage in FP32 (FMA, tanh.approx.f32), rounded to T.
template <typename T, typename Cfg>
__device__ __forceinline__ void tc_depthwise_gelu(void const* hs, float const* wds, T* h2)
{
    constexpr int R = Cfg::R;
    dw::for_each_unit<Cfg::K, Cfg::NCP, Cfg::NRB, Cfg::kThreads>([&](int j, int cp, int rb) {
        T* const op = h2 + j * Cfg::H2P + rb * R * Cfg::TW + 2 * cp;
        if constexpr (std::is_same_v<T, __half>)
        {
            __half2 w[9];
            dw::load_taps(wds + j * 9, w);
            __half2 o[R];
            dw::conv3x3_pair<R, Cfg::HTW>(
                static_cast<__half const*>(hs) + j * Cfg::HSPH + rb * R * Cfg::HTW + 2 * cp, w, o);
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                *reinterpret_cast<__half2*>(op + r * Cfg::TW) = dw::gelu_fast2(o[r]);
            }
        }
        else
        {
            float w[9];
            dw::load_taps(wds + j * 9, w);
            float2 o[R];
            dw::conv3x3_pair<R, Cfg::HTW>(
                static_cast<float const*>(hs) + j * Cfg::HSP + rb * R * Cfg::HTW + 2 * cp, w, o);
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                *reinterpret_cast<uint32_t*>(op + r * Cfg::TW)
                    = pack_pair<T>(dw::gelu_fast(o[r].x), dw::gelu_fast(o[r].y));
            }
        }
    });
}

// GEMM2 of one chunk: acc[c][q] += sum_j W2[c][j0 + j] h2[j][q] (M = channels, N = output pixels, K = 32 hidden).
template <typename T, typename Cfg>
__device__ __forceinline__ void tc_gemm2(
    T const* h2, T const* w2b, float (&acc)[2][Cfg::NW2][4], int mp, int ng, int lane)
{
    uint32_t a[2][2][4];
    T const* const ap = w2b + (mp * 32 + lane % 8 + (lane / 8) % 2 * 8) * Cfg::W2P + lane / 16 * 8;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
    {
#pragma unroll
        for (int ks = 0; ks < 2; ++ks)
        {
            ldsm_x4(a[mt][ks], ap + mt * 16 * Cfg::W2P + ks * 16);
        }
    }
    // Lane l addresses hidden row l of the chunk (matrix l / 8 = hidden 8 (l / 8) ..); .trans hands each lane the
    // (hidden 2 (l % 4), +1; pixel l / 4) pairs of the column-major B fragment.
    T const* const bp = h2 + lane * Cfg::H2P + ng * Cfg::NW2 * 8;
#pragma unroll
    for (int i = 0; i < Cfg::NW2; ++i)
    {
        uint32_t b[4];
        ldsm_x4_trans(b, bp + i * 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
        {
            mma16::mma<T>(acc[mt][i], a[mt][0], b[0], b[1]);
            mma16::mma<T>(acc[mt][i], a[mt][1], b[2], b[3]);
        }
    }
}

// Launch assumptions as ffn_fma_kernel, with T = __half or __nv_bfloat16 and dynamic shared memory Cfg::kSmemBytes.
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm) ffn_tc_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ ln_gamma, float const* __restrict__ ln_beta, float const* __restrict__ w1,
    float const* __restrict__ wdw, float const* __restrict__ w2, int H, int W, int tiles_x, int tiles_per_image,
    float eps)
{
    constexpr int C = Cfg::C;
    constexpr int K = Cfg::K;
    constexpr int NW2 = Cfg::NW2;
    static_assert(std::is_same_v<T, __half> == Cfg::kHalfHidden, "hs is FP16 exactly for FP16 storage");
    extern __shared__ float4 smem4[];
    unsigned char* const smem = reinterpret_cast<unsigned char*>(smem4);
    T* const xs = reinterpret_cast<T*>(smem);       // load .. LN
    float* const hs = reinterpret_cast<float*>(smem); // chunk loop
    T* const os = reinterpret_cast<T*>(smem);       // epilogue
    T* const xn = reinterpret_cast<T*>(smem + Cfg::kOffXn);
    T* const h2 = reinterpret_cast<T*>(smem + Cfg::kOffH2);
    T* const w1b = reinterpret_cast<T*>(smem + Cfg::kOffW1);
    T* const w2b = reinterpret_cast<T*>(smem + Cfg::kOffW2);
    float* const wds = reinterpret_cast<float*>(smem + Cfg::kOffWd);
    float* const s_gamma = reinterpret_cast<float*>(smem + Cfg::kOffGamma);
    float* const s_beta = reinterpret_cast<float*>(smem + Cfg::kOffBeta);

    int const tid = threadIdx.x;
    int const lane = tid % 32;
    int const warp = tid / 32;
    int const image = blockIdx.x / tiles_per_image;
    int const tile = blockIdx.x - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const y0 = ty * Cfg::TH;
    int const x0 = (tile - ty * tiles_x) * Cfg::TW;
    int64_t const hw = static_cast<int64_t>(H) * W;
    T const* const xb = x + static_cast<int64_t>(image) * C * hw;
    T* const yb = y + static_cast<int64_t>(image) * C * hw;

    // ---- prologue: the first chunk's W1 and depthwise weights are in flight while x is loaded.
    {
        float r1[Cfg::kW1Iters][2];
        float rd[Cfg::kWdIters];
        tc_load_w1<Cfg>(r1, w1, 0);
        tc_load_wd<Cfg>(rd, wdw, 0);
        T const zero = from_float<T>(0.0f);
        // Zero padding that no chunk writes: W1 channels C .. CK - 1 and W2 rows C .. CP - 1.
        if constexpr (Cfg::CK > C)
        {
            for (int e = tid; e < K * (Cfg::CK - C); e += Cfg::kThreads)
            {
                int const j = e / (Cfg::CK - C);
                w1b[j * Cfg::W1P + C + (e - j * (Cfg::CK - C))] = zero;
            }
        }
        if constexpr (Cfg::CP > C)
        {
            for (int e = tid; e < (Cfg::CP - C) * Cfg::W2P; e += Cfg::kThreads)
            {
                w2b[C * Cfg::W2P + e] = zero;
            }
        }
        // x halo tile -> xs[c][p] in the storage type (exact), zero outside the image and in the padding pixels.
        for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
        {
            T v[Cfg::kLoadBatch];
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * Cfg::kThreads;
                v[k] = zero;
                if (i0 + k < Cfg::kLoadIters && e < Cfg::kLoadElems)
                {
                    int const c = e / Cfg::NXP;
                    int const p = e - c * Cfg::NXP;
                    int const hr = p / Cfg::HTW;
                    int const gy = y0 - 1 + hr;
                    int const gx = x0 - 1 + (p - hr * Cfg::HTW);
                    if (p < Cfg::NH && gy >= 0 && gy < H && gx >= 0 && gx < W)
                    {
                        v[k] = xb[c * hw + static_cast<int64_t>(gy) * W + gx];
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
        tc_store_w1<T, Cfg>(w1b, r1);
        tc_store_wd<Cfg>(wds, rd);
    }
    __syncthreads();

    // ---- GEMM2 accumulators (mma D fragments: channel 16 m + lane / 4 (+8), pixel 8 n + 2 (lane % 4) (+1)) start
    // at the residual x.
    int const mp = warp % Cfg::kMPairs;
    int const ng = warp / Cfg::kMPairs;
    float acc[2][NW2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
    {
#pragma unroll
        for (int i = 0; i < NW2; ++i)
        {
#pragma unroll
            for (int e = 0; e < 4; ++e)
            {
                int const c = (2 * mp + mt) * 16 + lane / 4 + (e >= 2 ? 8 : 0);
                int const q = (ng * NW2 + i) * 8 + 2 * (lane % 4) + (e & 1);
                int const halo = (q / Cfg::TW + 1) * Cfg::HTW + q % Cfg::TW + 1;
                acc[mt][i][e] = (c < C && q < Cfg::NO) ? to_float(xs[c * Cfg::NXP + halo]) : 0.0f;
            }
        }
    }

    // ---- LayerNorm of every halo pixel -> xn[p][c] (T, channel pairs); zero rows outside the image, zero channels
    // C .. CK - 1. FP32 two-pass mean and biased variance, as the FP32 kernel.
    for (int p = tid; p < Cfg::NHN; p += Cfg::kThreads)
    {
        int const hr = p / Cfg::HTW;
        int const gy = y0 - 1 + hr;
        int const gx = x0 - 1 + (p - hr * Cfg::HTW);
        uint32_t* const row = reinterpret_cast<uint32_t*>(xn + p * Cfg::XNP);
        if (p < Cfg::NH && gy >= 0 && gy < H && gx >= 0 && gx < W)
        {
            T const* const col = xs + p;
            float sum = 0.0f;
#pragma unroll 8
            for (int c = 0; c < C; ++c)
            {
                sum += to_float(col[c * Cfg::NXP]);
            }
            float const mean = sum * (1.0f / C);
            float sq = 0.0f;
#pragma unroll 8
            for (int c = 0; c < C; ++c)
            {
                float const d = to_float(col[c * Cfg::NXP]) - mean;
                sq = fmaf(d, d, sq);
            }
            float const rstd = rsqrtf(sq * (1.0f / C) + eps);
#pragma unroll 4
            for (int c = 0; c + 1 < C; c += 2)
            {
                float const v0 = fmaf((to_float(col[c * Cfg::NXP]) - mean) * rstd, s_gamma[c], s_beta[c]);
                float const v1
                    = fmaf((to_float(col[(c + 1) * Cfg::NXP]) - mean) * rstd, s_gamma[c + 1], s_beta[c + 1]);
                row[c / 2] = pack_pair<T>(v0, v1);
            }
            if constexpr (C % 2 == 1)
            {
                float const v0
                    = fmaf((to_float(col[(C - 1) * Cfg::NXP]) - mean) * rstd, s_gamma[C - 1], s_beta[C - 1]);
                row[C / 2] = pack_pair<T>(v0, 0.0f);
            }
#pragma unroll
            for (int c2 = (C + 1) / 2; c2 < Cfg::CK / 2; ++c2)
            {
                row[c2] = 0u;
            }
        }
        else
        {
#pragma unroll
            for (int c2 = 0; c2 < Cfg::CK / 2; ++c2)
            {
                row[c2] = 0u;
            }
        }
    }
    __syncthreads(); // xn complete; xs (aliased by hs) no longer read

    // ---- hidden chunks. Per chunk: GEMM1 + GELU -> hs | barrier A | DW + GELU -> h2 | barrier B | GEMM2 -> acc.
    // Weights go global -> registers -> (16-bit) shared around the DW phase, whose work hides the L2 latency and
    // whose register pressure is lowest: W2 of this chunk (GEMM2 of the previous chunk finished with w2b before
    // barrier A) and W1 and the depthwise weights of the next chunk (GEMM1 finished with w1b before barrier A; wds is
    // double-buffered because DW reads this chunk's weights meanwhile).
#pragma unroll 1
    for (int chunk = 0; chunk < Cfg::kChunks; ++chunk)
    {
        int const j0 = chunk * K;
        tc_gemm1_gelu<T, Cfg>(xn, w1b, hs, warp, lane);
        __syncthreads(); // A: hs complete; every warp is done with GEMM1 (w1b) and with the previous GEMM2 (w2b, h2)
        bool const more = chunk + 1 < Cfg::kChunks;
        float r2[Cfg::kW2Iters][2];
        float r1[Cfg::kW1Iters][2];
        float rd[Cfg::kWdIters];
        tc_load_w2<Cfg>(r2, w2, j0);
        if (more)
        {
            tc_load_w1<Cfg>(r1, w1, j0 + K);
            tc_load_wd<Cfg>(rd, wdw, j0 + K);
        }
        tc_depthwise_gelu<T, Cfg>(hs, wds + (chunk % 2) * K * 9, h2);
        tc_store_w2<T, Cfg>(w2b, r2);
        if (more)
        {
            tc_store_w1<T, Cfg>(w1b, r1);
            tc_store_wd<Cfg>(wds + ((chunk + 1) % 2) * K * 9, rd);
        }
        __syncthreads(); // B: h2 and w2b complete; next W1 and depthwise weights complete; DW done with hs
        tc_gemm2<T, Cfg>(h2, w2b, acc, mp, ng, lane);
    }

    // ---- output tile -> os[c][q] in T (aliases hs, whose last reader, DW, finished before barrier B), then coalesced
    // stores of y.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
    {
#pragma unroll
        for (int i = 0; i < NW2; ++i)
        {
            int const c = (2 * mp + mt) * 16 + lane / 4;
            int const q = (ng * NW2 + i) * 8 + 2 * (lane % 4);
            if (c < C)
            {
                *reinterpret_cast<uint32_t*>(os + c * Cfg::OSP + q) = pack_pair<T>(acc[mt][i][0], acc[mt][i][1]);
            }
            if (c + 8 < C)
            {
                *reinterpret_cast<uint32_t*>(os + (c + 8) * Cfg::OSP + q)
                    = pack_pair<T>(acc[mt][i][2], acc[mt][i][3]);
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
            yb[c * hw + static_cast<int64_t>(gy) * W + gx] = os[c * Cfg::OSP + q];
        }
    }
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
    size_t const bytes = static_cast<size_t>(B * C * H * W) * elem;
    if (overlaps(x, bytes, y, bytes))
    {
        return MSTPP_ERR_OVERLAP;
    }
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        auto const go = [&](auto launch) { return launch(xt, yt, ln_gamma, ln_beta, w1, wdw, w2, B, H, W, eps, s); };
        if constexpr (std::is_same_v<T, float>)
        {
            // FP32 storage: exact FP32 FMA (no TF32, by policy).
            switch (C)
            {
            case 31: return go(launch_ffn<T, Ffn31, ffn_fma_kernel<T, Ffn31>>);
            case 62: return go(launch_ffn<T, Ffn62, ffn_fma_kernel<T, Ffn62>>);
            default: return go(launch_ffn<T, Ffn124, ffn_fma_kernel<T, Ffn124>>);
            }
        }
        else
        {
            // FP16 / BF16 storage: both 1x1 convolutions on tensor cores with operands of the storage type.
            if constexpr (std::is_same_v<T, __half>)
            {
                switch (C)
                {
                case 31: return go(launch_ffn<T, FfnTc31h, ffn_tc_kernel<T, FfnTc31h>>);
                case 62: return go(launch_ffn<T, FfnTc62h, ffn_tc_kernel<T, FfnTc62h>>);
                default: return go(launch_ffn<T, FfnTc124h, ffn_tc_kernel<T, FfnTc124h>>);
                }
            }
            else
            {
                switch (C)
                {
                case 31: return go(launch_ffn<T, FfnTc31, ffn_tc_kernel<T, FfnTc31>>);
                case 62: return go(launch_ffn<T, FfnTc62, ffn_tc_kernel<T, FfnTc62>>);
                default: return go(launch_ffn<T, FfnTc124, ffn_tc_kernel<T, FfnTc124>>);
                }
            }
        }
    });
}
