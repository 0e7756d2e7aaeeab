// Pass 2 of the attention, FP32 FMA path (FP32 storage): the halo-tile kernel y = x + M x + bproj + dw2(GELU(dw1(Wv x))).
// Part of the spectral-attention kernels; included once, by msa.cu (the design, algebra and precision notes are at
// the top of msa.cu). Everything here lives in msa.cu's translation unit.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "block_common.cuh"
#include "dwconv.cuh"
#include "mma16.cuh"

namespace mstpp
{
namespace
{

// =============================================================================================================
// Pass 2: the fused halo-tile kernel.
//
// Compile-time shape of one instantiation. kC: channels; kTH x kTW: output tile; kK: v channels per chunk;
// kNB1: channels per GEMM1 item (4 or 8); kR1 / kR2: rows per DW1 / DW2 unit; kSplitW: separate Wv and Mt
// buffers (staged one phase ahead) or one shared buffer. Shared memory (floats, every region 16-byte aligned):
//   xs   [CP][NH2P]     x over the 2-pixel halo (zero outside the image and in the padding channels / pixels);
//                       at the end the output tile [C][NOP]
//   vs   [K][NH2P]      v of the chunk over the halo; after DW1, ps [K][NOP] = dw2 output of the chunk
//   ts   [K][NH1P]      GELU(dw1(v)) over the 1-pixel halo, zero outside the image
//   wvs  [C][K + 4]     Wv rows of the chunk, transposed
//   mts  [K][CP + 4]    Mt rows of the chunk (M columns), the same memory as wvs when !kSplitW
//   wd1s, wd2s [K][9]   depthwise kernels of the chunk
template <int kC, int kTH, int kTW, int kK, int kNB1, int kR1, int kR2, bool kSplitW>
struct MsaConfig
{
    static constexpr int C = kC;
    static constexpr int TH = kTH;
    static constexpr int TW = kTW;
    static constexpr int K = kK;
    static constexpr int kThreads = 256;
    static constexpr int CP = round_up(C, 32);
    static constexpr int kChunks = CP / K;
    static constexpr int NB1 = kNB1;
    static constexpr int NB2 = 8;
    static constexpr int R1 = kR1;
    static constexpr int R2 = kR2;
    static constexpr bool kSplit = kSplitW;

    static constexpr int HTW2 = TW + 4; // 2-pixel halo: pitch of a vs / xs row
    static constexpr int HTH2 = TH + 4;
    static constexpr int NH2 = HTH2 * HTW2;
    static constexpr int NH2P = round_up(NH2, 4);
    static constexpr int HTW1 = TW + 2; // 1-pixel halo
    static constexpr int HTH1 = TH + 2;
    static constexpr int NH1 = HTH1 * HTW1;
    static constexpr int NH1P = round_up(NH1, 4);
    static constexpr int NO = TH * TW;
    static constexpr int NOP = round_up(NO, 4);

    static constexpr int WVP = K + 4;  // row pitch of the staged Wv chunk [C][K]
    static constexpr int MTP = CP + 4; // row pitch of the staged Mt chunk [K][CP]

    // GEMM1 items: (halo pixel quad, group of NB1 channels), looped over by the block.
    static constexpr int NQ1 = NH2P / 4;
    static constexpr int kItems1 = NQ1 * (K / NB1);
    static constexpr int kItems1Iters = cdiv(kItems1, kThreads);
    // GEMM2 items: (4 output pixels quad + NQ2 * p, group of NB2 channels), owned by one thread throughout.
    static constexpr int NQ2 = NOP / 4;
    static constexpr int kItems2 = NQ2 * (CP / NB2);
    static constexpr int kItems2PerThread = cdiv(kItems2, kThreads);
    // DW units: (channel, column, block of R rows).
    static constexpr int NRB1 = cdiv(HTH1, R1);
    static constexpr int kDw1Units = K * HTW1 * NRB1;
    static constexpr int kDw1Iters = cdiv(kDw1Units, kThreads);
    static constexpr int NRB2 = cdiv(TH, R2);
    static constexpr int kDw2Units = K * TW * NRB2;
    static constexpr int kDw2Iters = cdiv(kDw2Units, kThreads);
    // Staging and loading.
    static constexpr int kWvIters = cdiv(C, kThreads / K);
    static constexpr int kMtIters = K / (kThreads / CP);
    static constexpr int kWdIters = cdiv(K * 9, kThreads);
    static constexpr int kLoadElems = C * NH2P;
    static constexpr int kLoadIters = cdiv(kLoadElems, kThreads);
    static constexpr int kLoadBatch = 8;

    static constexpr int kWvFloats = round_up(C * WVP, 4);
    static constexpr int kMtFloats = K * MTP;
    static constexpr int kWdFloats = round_up(K * 9, 4);
    static constexpr int kOffXs = 0;
    static constexpr int kOffVs = kOffXs + CP * NH2P;
    static constexpr int kOffTs = kOffVs + K * NH2P;
    static constexpr int kOffWv = kOffTs + K * NH1P;
    static constexpr int kOffMt = kSplit ? kOffWv + kWvFloats : kOffWv;
    static constexpr int kOffWd1 = kOffMt + (kSplit ? kMtFloats : cmax(kWvFloats, kMtFloats));
    static constexpr int kOffWd2 = kOffWd1 + kWdFloats;
    static constexpr int kSmemFloats = kOffWd2 + kWdFloats;
    static constexpr int kSmemBytes = kSmemFloats * static_cast<int>(sizeof(float));
    static constexpr int kMaxSmemBytes = 101376; // 99 KB: what a block may opt into on sm_86 / sm_89

    static_assert(CP % K == 0 && K % NB1 == 0 && NB1 % 4 == 0, "GEMM1 items are float4 groups of a chunk");
    static_assert(CP % NB2 == 0 && K % NB2 == 0, "GEMM2 channel groups lie inside one chunk");
    static_assert(kThreads % K == 0 && kThreads % CP == 0 && K % (kThreads / CP) == 0, "staging maps");
    static_assert(NOP <= NH2P, "ps [K][NOP] reuses vs");
    static_assert(C * NOP <= CP * NH2P, "the output tile reuses xs");
    static_assert(kSmemBytes <= kMaxSmemBytes, "stay within the 99 KB a block may opt into on sm_86/sm_89");
};

// Chosen for H100 (132 SMs, 2 blocks of 256 threads per SM under ~100 KB each) at MST++'s level sizes
// (C = 31 at 512x488, 62 at 256x244, 124 at 128x122); halo = (TH+4)(TW+4) pixels per tile:
//   C = 31:  12 x 12 tile, 16 x 16 halo (1.78 halo px per output px), 43 x 41 = 1763 blocks, 1 chunk of 32,
//            one weight buffer (Wv and the depthwise kernels arrive with x, Mt during DW), 97.4 KB
//   C = 62:   8 x 16 tile, 12 x 20 halo (1.88), 32 x 16 = 512 blocks (1.94 waves), 4 chunks of 16, split
//            buffers, 98.8 KB
//   C = 124:  8 x  8 tile, 12 x 12 halo (2.25), 16 x 16 = 256 blocks (0.97 waves), 8 chunks of 16, one
//            weight buffer, 100.4 KB
// The x tile (CP x halo floats) dominates shared memory, which is what bounds the tiles at C = 124.
using Msa31 = MsaConfig<31, 12, 12, 32, 8, 14, 6, false>;
using Msa62 = MsaConfig<62, 8, 16, 16, 4, 5, 4, true>;
using Msa124 = MsaConfig<124, 8, 8, 16, 4, 5, 2, false>;

// Wv rows j0..j0+K-1 -> wvs[c * WVP + j], zero for rows past C. Thread t copies row j = t / LR, channels
// c = t % LR + LR * i (LR = kThreads / K lanes per row: whole 32-byte sectors of a row per warp step). The
// addresses of step i are a base plus compile-time offsets, so the copy keeps two pointers live, not one per step.
template <typename Cfg>
__device__ __forceinline__ void stage_wv(float* wvs, float const* __restrict__ wv, int j0)
{
    constexpr int LR = Cfg::kThreads / Cfg::K;
    int const j = threadIdx.x / LR;
    int const c0 = threadIdx.x % LR;
    bool const row_ok = j0 + j < Cfg::C;
    float const* src = wv + (row_ok ? (j0 + j) * Cfg::C + c0 : 0);
    float* dst = wvs + c0 * Cfg::WVP + j;
#pragma unroll
    for (int i = 0; i < Cfg::kWvIters; ++i)
    {
        if (c0 + LR * i < Cfg::C)
        {
            cp_async4(dst + LR * i * Cfg::WVP, row_ok ? src + LR * i : wv, row_ok);
        }
    }
}

// Mt rows j0..j0+K-1 (already zero-padded to CP x CP) -> mts[j * MTP + o]; thread t copies column o = t % CP of
// rows t / CP + (kThreads / CP) * i.
template <typename Cfg>
__device__ __forceinline__ void stage_mt(float* mts, float const* __restrict__ mt, int j0)
{
    constexpr int kRowsPerStep = Cfg::kThreads / Cfg::CP;
    int const o = threadIdx.x % Cfg::CP;
    int const j = threadIdx.x / Cfg::CP;
    float const* src = mt + (j0 + j) * Cfg::CP + o;
    float* dst = mts + j * Cfg::MTP + o;
#pragma unroll
    for (int i = 0; i < Cfg::kMtIters; ++i)
    {
        cp_async4(dst + kRowsPerStep * i * Cfg::MTP, src + kRowsPerStep * i * Cfg::CP, true);
    }
}

// Depthwise kernels of channels j0..j0+K-1, [K][9] each, zero past C.
template <typename Cfg>
__device__ __forceinline__ void stage_wd(
    float* wd1s, float* wd2s, float const* __restrict__ wpos1, float const* __restrict__ wpos2, int j0)
{
#pragma unroll
    for (int i = 0; i < Cfg::kWdIters; ++i)
    {
        int const e = threadIdx.x + i * Cfg::kThreads;
        if (e < Cfg::K * 9)
        {
            bool const valid = j0 * 9 + e < Cfg::C * 9;
            cp_async4(wd1s + e, valid ? wpos1 + j0 * 9 + e : wpos1, valid);
            cp_async4(wd2s + e, valid ? wpos2 + j0 * 9 + e : wpos2, valid);
        }
    }
}

// vs[j][p] = sum_c xs[c][p] * Wv[j0 + j][c] for every halo pixel p (and the padding pixels, harmlessly).
template <typename Cfg>
__device__ __forceinline__ void gemm1_v(float const* xs, float const* wvs, float* vs)
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
            float const* wp = wvs + g * NB1;
            float acc[4][NB1];
#pragma unroll
            for (int n = 0; n < NB1; ++n)
            {
                acc[0][n] = acc[1][n] = acc[2][n] = acc[3][n] = 0.0f;
            }
#pragma unroll 4
            for (int c = 0; c < Cfg::C; ++c)
            {
                float4 const xv = *reinterpret_cast<float4 const*>(xp + c * Cfg::NH2P);
                float wv[NB1];
#pragma unroll
                for (int n4 = 0; n4 < NB1 / 4; ++n4)
                {
                    float4 const w4 = *reinterpret_cast<float4 const*>(wp + c * Cfg::WVP + 4 * n4);
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
                *reinterpret_cast<float4*>(vs + (g * NB1 + n) * Cfg::NH2P + 4 * quad)
                    = make_float4(acc[0][n], acc[1][n], acc[2][n], acc[3][n]);
            }
        }
    }
}

// ts[j][r1 * HTW1 + c1] = GELU(sum_{a,b} wd1[j][a][b] * vs[j][(r1 + a) * HTW2 + c1 + b]) at the 1-pixel-halo
// pixels inside the image, 0 at those outside (the zero padding of the second depthwise convolution). Units of two
// columns (dwconv.cuh). V = float: FP32 FMA with the exact GELU (kFast false, FP32 storage) or the tanh.approx form
// (kFast, BF16 storage); V = __half (FP16 storage): HFMA2 and the half2 tanh form. Pitches in elements of V.
template <typename Cfg, typename V, bool kFast, int kVsPitch, int kTsPitch>
__device__ __forceinline__ void depthwise1_gelu(V const* vs, float const* wd1s, V* ts, int y0, int x0, int H, int W)
{
    constexpr int R = Cfg::R1;
    static_assert(Cfg::HTH1 % R == 0 && Cfg::HTW1 % 2 == 0 && kVsPitch % 2 == 0 && kTsPitch % 2 == 0, "DW1 units");
    dw::for_each_unit<Cfg::K, Cfg::HTW1 / 2, Cfg::HTH1 / R, Cfg::kThreads>([&](int j, int cp, int rb) {
        int const r0 = rb * R;
        int const gx = x0 - 1 + 2 * cp;
        bool const in0 = gx >= 0 && gx < W;
        bool const in1 = gx + 1 >= 0 && gx + 1 < W;
        V const* const ip = vs + j * kVsPitch + r0 * Cfg::HTW2 + 2 * cp;
        V* const op = ts + j * kTsPitch + r0 * Cfg::HTW1 + 2 * cp;
        if constexpr (std::is_same_v<V, __half>)
        {
            __half2 w[9];
            dw::load_taps(wd1s + j * 9, w);
            __half2 o[R];
            dw::conv3x3_pair<R, Cfg::HTW2>(ip, w, o);
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                int const gy = y0 - 1 + r0 + r;
                bool const row_in = gy >= 0 && gy < H;
                __half2 const g = dw::gelu_fast2(o[r]);
                uint32_t const mask = (row_in && in0 ? 0x0000ffffu : 0u) | (row_in && in1 ? 0xffff0000u : 0u);
                *reinterpret_cast<uint32_t*>(op + r * Cfg::HTW1) = *reinterpret_cast<uint32_t const*>(&g) & mask;
            }
        }
        else
        {
            float w[9];
            dw::load_taps(wd1s + j * 9, w);
            float2 o[R];
            dw::conv3x3_pair<R, Cfg::HTW2>(ip, w, o);
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                int const gy = y0 - 1 + r0 + r;
                bool const row_in = gy >= 0 && gy < H;
                float const g0 = kFast ? dw::gelu_fast(o[r].x) : gelu_erf(o[r].x);
                float const g1 = kFast ? dw::gelu_fast(o[r].y) : gelu_erf(o[r].y);
                *reinterpret_cast<float2*>(op + r * Cfg::HTW1)
                    = make_float2(row_in && in0 ? g0 : 0.0f, row_in && in1 ? g1 : 0.0f);
            }
        }
    });
}

// ps[j][r * TW + c] = sum_{a,b} wd2[j][a][b] * ts[j][(r + a) * HTW1 + c + b] for the output pixels (added to ps
// when kAdd); ps is FP32 with pitch NOP. V as in depthwise1_gelu (FP16 sums are widened to FP32 when stored).
template <typename Cfg, typename V, bool kAdd, int kTsPitch>
__device__ __forceinline__ void depthwise2(V const* ts, float const* wd2s, float* ps)
{
    constexpr int R = Cfg::R2;
    static_assert(Cfg::TH % R == 0 && Cfg::TW % 2 == 0 && Cfg::NOP % 2 == 0, "DW2 units");
    dw::for_each_unit<Cfg::K, Cfg::TW / 2, Cfg::TH / R, Cfg::kThreads>([&](int j, int cp, int rb) {
        int const r0 = rb * R;
        V const* const ip = ts + j * kTsPitch + r0 * Cfg::HTW1 + 2 * cp;
        float2* const op = reinterpret_cast<float2*>(ps + j * Cfg::NOP + r0 * Cfg::TW + 2 * cp);
        float2 f[R];
        if constexpr (std::is_same_v<V, __half>)
        {
            __half2 w[9];
            dw::load_taps(wd2s + j * 9, w);
            __half2 o[R];
            dw::conv3x3_pair<R, Cfg::HTW1>(ip, w, o);
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                f[r] = __half22float2(o[r]);
            }
        }
        else
        {
            float w[9];
            dw::load_taps(wd2s + j * 9, w);
            dw::conv3x3_pair<R, Cfg::HTW1>(ip, w, f);
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
        {
            float2* const p = op + r * (Cfg::TW / 2);
            if constexpr (kAdd)
            {
                float2 const v = *p;
                *p = make_float2(v.x + f[r].x, v.y + f[r].y);
            }
            else
            {
                *p = f[r];
            }
        }
    });
}

// Launch assumptions: blockDim.x == Cfg::kThreads; dynamic shared memory Cfg::kSmemBytes; gridDim.x ==
// B * tiles_per_image with tiles_per_image == ceil(H / TH) * tiles_x, tiles_x == ceil(W / TW); x and y are
// contiguous [B, C, H, W] and do not overlap; mt is [B][CP][CP] from attn_fold_kernel; weights are float32
// wv [C, C], bproj [C], wpos1 / wpos2 [C, 3, 3].
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 2) msa_fused_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ wv, float const* __restrict__ mt, float const* __restrict__ bproj,
    float const* __restrict__ wpos1, float const* __restrict__ wpos2, int H, int W, int tiles_x,
    int tiles_per_image)
{
    constexpr int C = Cfg::C;
    constexpr int K = Cfg::K;
    extern __shared__ float4 smem4[];
    float* const smem = reinterpret_cast<float*>(smem4);
    float* const xs = smem + Cfg::kOffXs;
    float* const vs = smem + Cfg::kOffVs;
    float* const ps = vs; // dw2 output of the chunk: vs is dead once DW1 has read it
    float* const ts = smem + Cfg::kOffTs;
    float* const wvs = smem + Cfg::kOffWv;
    float* const mts = smem + Cfg::kOffMt;
    float* const wd1s = smem + Cfg::kOffWd1;
    float* const wd2s = smem + Cfg::kOffWd2;

    int const tid = threadIdx.x;
    int const image = blockIdx.x / tiles_per_image;
    int const tile = blockIdx.x - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const y0 = ty * Cfg::TH;
    int const x0 = (tile - ty * tiles_x) * Cfg::TW;
    int64_t const hw = static_cast<int64_t>(H) * W;
    T const* const xb = x + static_cast<int64_t>(image) * C * hw;
    T* const yb = y + static_cast<int64_t>(image) * C * hw;
    float const* const mtb = mt + static_cast<int64_t>(image) * Cfg::CP * Cfg::CP;

    // The first chunk's weights are in flight while x is loaded (both layouts: the buffers are all free now).
    stage_wv<Cfg>(wvs, wv, 0);
    stage_wd<Cfg>(wd1s, wd2s, wpos1, wpos2, 0);
    if constexpr (Cfg::kSplit)
    {
        stage_mt<Cfg>(mts, mtb, 0);
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
                int const c = e / Cfg::NH2P;
                int const p = e - c * Cfg::NH2P;
                int const hr = p / Cfg::HTW2;
                int const gy = y0 - 2 + hr;
                int const gx = x0 - 2 + (p - hr * Cfg::HTW2);
                if (p < Cfg::NH2 && gy >= 0 && gy < H && gx >= 0 && gx < W)
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
    // Padding channels [C, CP) of xs are read by GEMM2 (with zero weights): make them zeros, not stale NaNs.
    if constexpr (Cfg::CP > C)
    {
        for (int e = tid; e < (Cfg::CP - C) * Cfg::NH2P; e += Cfg::kThreads)
        {
            xs[C * Cfg::NH2P + e] = 0.0f;
        }
    }
    __syncthreads();

    // ---- GEMM2 accumulators start at x + bproj for the thread's output pixels and channels.
    constexpr int kI2 = Cfg::kItems2PerThread;
    constexpr int NB2 = Cfg::NB2;
    float acc[kI2][4][NB2];
    int xoff[kI2][4]; // halo-layout offset of each output pixel (0 for the padding pixels)
#pragma unroll
    for (int s = 0; s < kI2; ++s)
    {
        int const t = tid + s * Cfg::kThreads;
        int const quad = t % Cfg::NQ2;
        int const g = t / Cfg::NQ2;
#pragma unroll
        for (int p = 0; p < 4; ++p)
        {
            int const q = quad + p * Cfg::NQ2;
            bool const pixel_ok = t < Cfg::kItems2 && q < Cfg::NO;
            xoff[s][p] = pixel_ok ? (q / Cfg::TW + 2) * Cfg::HTW2 + q % Cfg::TW + 2 : 0;
#pragma unroll
            for (int n = 0; n < NB2; ++n)
            {
                int const c = g * NB2 + n;
                acc[s][p][n] = (pixel_ok && c < C) ? xs[c * Cfg::NH2P + xoff[s][p]] + __ldg(bproj + c) : 0.0f;
            }
        }
    }

    // ---- chunks of K channels of v. Every cp.async is waited for by the thread that issued it, then a barrier
    // publishes it. Split buffers: Wv(chunk + 1) is copied during DW1/DW2/GEMM2 of this chunk, Mt and the
    // depthwise kernels of a chunk during its GEMM1. One buffer: Wv and the depthwise kernels at the top of the
    // chunk (with x for the first chunk), Mt during DW1/DW2.
#pragma unroll 1
    for (int chunk = 0; chunk < Cfg::kChunks; ++chunk)
    {
        int const j0 = chunk * K;
        if constexpr (!Cfg::kSplit)
        {
            if (chunk > 0)
            {
                __syncthreads(); // previous GEMM2 done with the weight buffer, previous DW2 with wd1s/wd2s
                stage_wv<Cfg>(wvs, wv, j0);
                stage_wd<Cfg>(wd1s, wd2s, wpos1, wpos2, j0);
            }
        }
        cp_async_wait_all();
        __syncthreads(); // Wv chunk landed; previous GEMM2 done with ps (= vs) and mts
        if constexpr (Cfg::kSplit)
        {
            if (chunk > 0)
            {
                stage_mt<Cfg>(mts, mtb, j0);
                stage_wd<Cfg>(wd1s, wd2s, wpos1, wpos2, j0);
            }
        }
        gemm1_v<Cfg>(xs, wvs, vs);
        if constexpr (Cfg::kSplit)
        {
            cp_async_wait_all();
        }
        __syncthreads(); // vs complete; GEMM1 done with wvs; (split) Mt and depthwise kernels landed
        if constexpr (Cfg::kSplit)
        {
            if (chunk + 1 < Cfg::kChunks)
            {
                stage_wv<Cfg>(wvs, wv, j0 + K);
            }
        }
        else
        {
            stage_mt<Cfg>(mts, mtb, j0);
        }
        depthwise1_gelu<Cfg, float, false, Cfg::NH2P, Cfg::NH1P>(vs, wd1s, ts, y0, x0, H, W);
        __syncthreads(); // ts complete; vs dead
        depthwise2<Cfg, float, false, Cfg::NH1P>(ts, wd2s, ps);
        if constexpr (!Cfg::kSplit)
        {
            cp_async_wait_all();
        }
        __syncthreads(); // ps complete; (one buffer) Mt chunk landed

#pragma unroll
        for (int s = 0; s < kI2; ++s)
        {
            int const t = tid + s * Cfg::kThreads;
            if (t < Cfg::kItems2)
            {
                int const quad = t % Cfg::NQ2;
                int const g = t / Cfg::NQ2;
                float const* const wp = mts + g * NB2;
#pragma unroll 4
                for (int j = 0; j < K; ++j)
                {
                    float const* const xrow = xs + (j0 + j) * Cfg::NH2P;
                    float xv[4];
#pragma unroll
                    for (int p = 0; p < 4; ++p)
                    {
                        xv[p] = xrow[xoff[s][p]];
                    }
                    float wk[NB2];
#pragma unroll
                    for (int n4 = 0; n4 < NB2 / 4; ++n4)
                    {
                        float4 const w4 = *reinterpret_cast<float4 const*>(wp + j * Cfg::MTP + 4 * n4);
                        wk[4 * n4 + 0] = w4.x;
                        wk[4 * n4 + 1] = w4.y;
                        wk[4 * n4 + 2] = w4.z;
                        wk[4 * n4 + 3] = w4.w;
                    }
#pragma unroll
                    for (int p = 0; p < 4; ++p)
                    {
#pragma unroll
                        for (int n = 0; n < NB2; ++n)
                        {
                            acc[s][p][n] = fmaf(xv[p], wk[n], acc[s][p][n]);
                        }
                    }
                }
                // The positional branch of the chunk's channels, for the threads that own them.
                int const cl = g * NB2 - j0;
                if (cl >= 0 && cl < K)
                {
#pragma unroll
                    for (int p = 0; p < 4; ++p)
                    {
                        int const q = quad + p * Cfg::NQ2;
                        if (q < Cfg::NO)
                        {
#pragma unroll
                            for (int n = 0; n < NB2; ++n)
                            {
                                acc[s][p][n] += ps[(cl + n) * Cfg::NOP + q];
                            }
                        }
                    }
                }
            }
        }
    }

    // ---- output tile -> xs as [C][NOP] (after every thread's last GEMM2 read of xs), then coalesced stores.
    __syncthreads();
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
            for (int p = 0; p < 4; ++p)
            {
                int const q = quad + p * Cfg::NQ2;
#pragma unroll
                for (int n = 0; n < NB2; ++n)
                {
                    if (q < Cfg::NO && g * NB2 + n < C)
                    {
                        os[(g * NB2 + n) * Cfg::NOP + q] = acc[s][p][n];
                    }
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


} // namespace
} // namespace mstpp
