// Pass 2 of the attention on tensor cores (FP16 / BF16 storage): the same halo-tile computation with the 1x1 products as mma.sync.
// Part of the spectral-attention kernels; included once, by msa.cu (the design, algebra and precision notes are at
// the top of msa.cu). Everything here lives in msa.cu's translation unit.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "block_common.cuh"
#include "dwconv.cuh"
#include "mma16.cuh"
#include "msa_gram.cuh"
#include "msa_pass2.cuh"

namespace mstpp
{
namespace
{

// =============================================================================================================
// Pass 2 on tensor cores (16-bit storage).
//
// Shared memory (bytes; every region 16-byte aligned):
//   xs   [NH2R][CPX]  16-bit  x over the 2-pixel halo, pixel-major (channel pairs are the B fragment registers),
//                             zero outside the image, in the padding channels and in the padding pixels
//   outs [CP][NOP]    float   y of the tile: x + bproj + M x (GEMM2), then + dw2 output, chunk by chunk
//   vs   [K][NH2P]    float   v = Wv x of the chunk over the halo (GEMM1)
//   ts   [K][NH1P]    float   GELU(dw1(v)) over the 1-pixel halo, zero outside the image
//   wd1s, wd2s [K][9] float   depthwise kernels of the chunk
// Pitches: CPX / 2 = 4 mod 8 words and NH2P, NOP = 8 mod 32 words, so fragment loads and float2 fragment stores
// (8 groups x 4 lanes) are bank-conflict-free. Weights come from the fold kernel as packed A fragments (16 bytes
// per lane per 16 x 16 tile, read through L1: the same few KB for every block of the image).
template <int kC, int kTH, int kTW, int kR1, int kR2, int kMinBlocks>
struct MsaTcConfig
{
    static constexpr int C = kC;
    static constexpr int TH = kTH;
    static constexpr int TW = kTW;
    static constexpr int K = 16; // v channels per chunk: one mma row block
    static constexpr int kThreads = 256;
    static constexpr int kWarps = kThreads / 32;
    static constexpr int kMinBlocksPerSm = kMinBlocks;
    static constexpr int CP = round_up(C, 32);
    static constexpr int KT = CP / 16; // k-steps (and row blocks) of a C x C product
    static constexpr int kChunks = CP / K;
    static constexpr int R1 = kR1;
    static constexpr int R2 = kR2;

    static constexpr int HTW2 = TW + 4;
    static constexpr int HTH2 = TH + 4;
    static constexpr int NH2 = HTH2 * HTW2;
    static constexpr int HTW1 = TW + 2;
    static constexpr int HTH1 = TH + 2;
    static constexpr int NH1 = HTH1 * HTW1;
    static constexpr int NO = TH * TW;
    static constexpr int NT1 = cdiv(NH2, 8); // GEMM1 n-tiles: 8 halo pixels
    static constexpr int NT2 = cdiv(NO, 8);  // GEMM2 n-tiles: 8 output pixels
    static constexpr int NH2R = NT1 * 8;
    static constexpr int CPX = CP + 8;
    static constexpr int NH2P = round_up(NH2R - 8, 32) + 8;
    static constexpr int NH1P = round_up(NH1, 4);
    static constexpr int NOP = round_up(NT2 * 8 - 8, 32) + 8;
    // FP16 storage keeps v and GELU(dw1(v)) as FP16 in the same buffers (pitches in halves): GEMM1's half2 fragment
    // stores (8 rows x 4 lanes) conflict-free at NH2PH / 2 = 4 mod 32 words.
    static constexpr int NH2PH = 2 * dw::pitch_words(NH2R / 2, 4);
    static constexpr int NH1PH = 2 * dw::pitch_words(cdiv(NH1, 2), (HTW1 / 2) % 32);

    // DW units (channel, column, block of R rows), as in MsaConfig; weight staging.
    static constexpr int NRB1 = cdiv(HTH1, R1);
    static constexpr int kDw1Units = K * HTW1 * NRB1;
    static constexpr int kDw1Iters = cdiv(kDw1Units, kThreads);
    static constexpr int NRB2 = cdiv(TH, R2);
    static constexpr int kDw2Units = K * TW * NRB2;
    static constexpr int kDw2Iters = cdiv(kDw2Units, kThreads);
    static constexpr int kWdIters = cdiv(K * 9, kThreads);
    static constexpr int kLoadElems = C * NH2;
    static constexpr int kLoadIters = cdiv(kLoadElems, kThreads);
    static constexpr int kLoadBatch = 8;

    static constexpr int kOffXs = 0;
    static constexpr int kOffOut = kOffXs + round_up(NH2R * CPX * 2, 16);
    static constexpr int kOffVs = kOffOut + CP * NOP * 4;
    static constexpr int kOffTs = kOffVs + K * NH2P * 4;
    static constexpr int kOffWd1 = kOffTs + K * NH1P * 4;
    static constexpr int kOffWd2 = kOffWd1 + round_up(K * 9, 4) * 4;
    static constexpr int kSmemBytes = kOffWd2 + round_up(K * 9, 4) * 4;
    static constexpr int kMaxSmemBytes = 101376;

    static_assert((CPX / 2) % 8 == 4, "conflict-free B fragment loads");
    static_assert(NH2P % 32 == 8 && NOP % 32 == 8 && NH2P >= NH2R && NOP >= NT2 * 8, "fragment stores");
    static_assert(kSmemBytes <= kMaxSmemBytes, "stay within the 99 KB a block may opt into on sm_86/sm_89");
    static_assert(NH2PH <= 2 * NH2P && NH1PH <= 2 * NH1P, "FP16 v and t fit the FP32 buffers");
};

// Tiles as in MsaConfig where they fit (x now takes half the bytes, v/dw buffers hold K = 16 channels):
//   C = 31:  12 x 12 tile, 1763 blocks at 512x488, 2 chunks, 71 KB (3 blocks per SM on H100)
//   C = 62:   8 x 16 tile,  512 blocks at 256x244, 4 chunks, 97 KB (2 per SM)
//   C = 124:  8 x  8 tile,  256 blocks at 128x122, 8 chunks, 92 KB (2 per SM)
using MsaTc31 = MsaTcConfig<31, 12, 12, 7, 6, 3>;
using MsaTc62 = MsaTcConfig<62, 8, 16, 5, 4, 2>;
using MsaTc124 = MsaTcConfig<124, 8, 8, 5, 2, 2>;

// Halo-layout index of output pixel q of the tile.
template <typename Cfg>
__device__ __forceinline__ int halo_pixel(int q)
{
    return (q / Cfg::TW + 2) * Cfg::HTW2 + q % Cfg::TW + 2;
}

// Launch assumptions: blockDim.x == Cfg::kThreads; dynamic shared memory Cfg::kSmemBytes; gridDim.x ==
// B * tiles_per_image as for msa_fused_kernel; x and y contiguous [B, C, H, W] of 16-bit T, not overlapping;
// frag from attn_fold_kernel<C, T> (Wv, then M of each image, packed A fragments of CP x CP).
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm) msa_tc_kernel(uint16_t const* __restrict__ x,
    T* __restrict__ y, uint16_t const* __restrict__ frag, float const* __restrict__ bproj,
    float const* __restrict__ wpos1, float const* __restrict__ wpos2, int H, int W, int tiles_x,
    int tiles_per_image)
{
    constexpr int C = Cfg::C;
    constexpr int KT = Cfg::KT;
    constexpr int CPX = Cfg::CPX;
    constexpr int NOP = Cfg::NOP;
    // FP16 storage: v and GELU(dw1(v)) in FP16, depthwise sums in HFMA2 (dwconv.cuh); BF16 storage: FP32.
    constexpr bool kHalf = std::is_same_v<T, __half>;
    extern __shared__ uint4 smem_tc[];
    char* const smem = reinterpret_cast<char*>(smem_tc);
    uint16_t* const xs = reinterpret_cast<uint16_t*>(smem + Cfg::kOffXs);
    float* const outs = reinterpret_cast<float*>(smem + Cfg::kOffOut);
    float* const vs = reinterpret_cast<float*>(smem + Cfg::kOffVs);
    float* const ts = reinterpret_cast<float*>(smem + Cfg::kOffTs);
    float* const wd1s = reinterpret_cast<float*>(smem + Cfg::kOffWd1);
    float* const wd2s = reinterpret_cast<float*>(smem + Cfg::kOffWd2);

    int const tid = threadIdx.x;
    int const lane = tid % 32;
    int const warp = tid / 32;
    int const image = blockIdx.x / tiles_per_image;
    int const tile = blockIdx.x - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const y0 = ty * Cfg::TH;
    int const x0 = (tile - ty * tiles_x) * Cfg::TW;
    int64_t const hw = static_cast<int64_t>(H) * W;
    uint16_t const* const xb = x + static_cast<int64_t>(image) * C * hw;
    T* const yb = y + static_cast<int64_t>(image) * C * hw;
    uint4 const* const wv_frag = reinterpret_cast<uint4 const*>(frag);
    uint4 const* const m_frag = wv_frag + static_cast<int64_t>(1 + image) * KT * KT * 32;

    stage_wd<Cfg>(wd1s, wd2s, wpos1, wpos2, 0); // in flight while x is loaded

    // ---- x halo tile -> xs[p][c] (raw 16-bit values; a warp reads runs of a halo row of one channel)
#pragma unroll 1
    for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
    {
        uint16_t v[Cfg::kLoadBatch];
        int off[Cfg::kLoadBatch];
#pragma unroll
        for (int k = 0; k < Cfg::kLoadBatch; ++k)
        {
            int const e = tid + (i0 + k) * Cfg::kThreads;
            v[k] = 0;
            off[k] = -1;
            if (i0 + k < Cfg::kLoadIters && e < Cfg::kLoadElems)
            {
                int const c = e / Cfg::NH2;
                int const p = e - c * Cfg::NH2;
                int const hr = p / Cfg::HTW2;
                int const gy = y0 - 2 + hr;
                int const gx = x0 - 2 + (p - hr * Cfg::HTW2);
                off[k] = p * CPX + c;
                if (gy >= 0 && gy < H && gx >= 0 && gx < W)
                {
                    v[k] = xb[c * hw + static_cast<int64_t>(gy) * W + gx];
                }
            }
        }
#pragma unroll
        for (int k = 0; k < Cfg::kLoadBatch; ++k)
        {
            if (off[k] >= 0)
            {
                xs[off[k]] = v[k];
            }
        }
    }
    // Zeros where nothing was loaded but the GEMMs read: padding channels [C, CP) of every row, and the padding
    // pixels [NH2, NH2R) (their v is never read, but NaN bits there would still be multiplied).
    if constexpr (Cfg::CP > C)
    {
        for (int e = tid; e < Cfg::NH2R * (Cfg::CP - C); e += Cfg::kThreads)
        {
            int const p = e / (Cfg::CP - C);
            xs[p * CPX + C + (e - p * (Cfg::CP - C))] = 0;
        }
    }
    if constexpr (Cfg::NH2R > Cfg::NH2)
    {
        for (int e = tid; e < (Cfg::NH2R - Cfg::NH2) * C; e += Cfg::kThreads)
        {
            int const p = e / C;
            xs[(Cfg::NH2 + p) * CPX + (e - p * C)] = 0;
        }
    }
    __syncthreads();

    // ---- GEMM2: outs[o][q] = sum_c M[o][c] x[c][q] + x[o][q] + bproj[o] for the output pixels q. Warp w takes
    // the n-tiles w, w + 8, ... of every row block mt; lane (g, t) feeds pixel 8 nt + g and owns outputs
    // (rows g, g + 8) x (pixels 8 nt + 2t, + 1).
#pragma unroll 1
    for (int mt = 0; mt < KT; ++mt)
    {
        uint4 a[KT];
#pragma unroll
        for (int ks = 0; ks < KT; ++ks)
        {
            a[ks] = __ldg(m_frag + (mt * KT + ks) * 32 + lane);
        }
        float bo[2];
#pragma unroll
        for (int h = 0; h < 2; ++h)
        {
            int const o = mt * 16 + mma16::c_row(lane, 2 * h);
            bo[h] = o < C ? __ldg(bproj + o) : 0.0f;
        }
#pragma unroll 1
        for (int nt = warp; nt < Cfg::NT2; nt += Cfg::kWarps)
        {
            int const qb = nt * 8 + mma16::b_n(lane);
            uint16_t const* const xp = xs + (qb < Cfg::NO ? halo_pixel<Cfg>(qb) : 0) * CPX;
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int ks = 0; ks < KT; ++ks)
            {
                mma16::mma<T>(d, a[ks], ld_shared32(xp + ks * 16 + mma16::b_k(lane, 0)),
                    ld_shared32(xp + ks * 16 + mma16::b_k(lane, 1)));
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
            {
                int const q = nt * 8 + mma16::c_col(lane, i);
                if (q < Cfg::NO)
                {
                    int const o = mt * 16 + mma16::c_row(lane, i);
                    d[i] += mma16::from_bits<T>(xs[halo_pixel<Cfg>(q) * CPX + o]) + bo[i / 2];
                }
            }
            float* const op = outs + nt * 8 + mma16::c_col(lane, 0);
            *reinterpret_cast<float2*>(op + (mt * 16 + mma16::c_row(lane, 0)) * NOP) = make_float2(d[0], d[1]);
            *reinterpret_cast<float2*>(op + (mt * 16 + mma16::c_row(lane, 2)) * NOP) = make_float2(d[2], d[3]);
        }
    }

    // ---- chunks of K = 16 channels of v: GEMM1 -> vs, DW1 -> ts, DW2 added to outs.
#pragma unroll 1
    for (int chunk = 0; chunk < Cfg::kChunks; ++chunk)
    {
        int const j0 = chunk * Cfg::K;
        if (chunk > 0)
        {
            stage_wd<Cfg>(wd1s, wd2s, wpos1, wpos2, j0); // the previous chunk's DW2 is done with them
        }
        {
            uint4 a[KT];
#pragma unroll
            for (int ks = 0; ks < KT; ++ks)
            {
                a[ks] = __ldg(wv_frag + (chunk * KT + ks) * 32 + lane);
            }
#pragma unroll 1
            for (int nt = warp; nt < Cfg::NT1; nt += Cfg::kWarps)
            {
                uint16_t const* const xp = xs + (nt * 8 + mma16::b_n(lane)) * CPX;
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int ks = 0; ks < KT; ++ks)
                {
                    mma16::mma<T>(d, a[ks], ld_shared32(xp + ks * 16 + mma16::b_k(lane, 0)),
                        ld_shared32(xp + ks * 16 + mma16::b_k(lane, 1)));
                }
                if constexpr (kHalf)
                {
                    __half* const vp = reinterpret_cast<__half*>(vs) + nt * 8 + mma16::c_col(lane, 0);
                    *reinterpret_cast<__half2*>(vp + mma16::c_row(lane, 0) * Cfg::NH2PH) = __floats2half2_rn(d[0], d[1]);
                    *reinterpret_cast<__half2*>(vp + mma16::c_row(lane, 2) * Cfg::NH2PH) = __floats2half2_rn(d[2], d[3]);
                }
                else
                {
                    float* const vp = vs + nt * 8 + mma16::c_col(lane, 0);
                    *reinterpret_cast<float2*>(vp + mma16::c_row(lane, 0) * Cfg::NH2P) = make_float2(d[0], d[1]);
                    *reinterpret_cast<float2*>(vp + mma16::c_row(lane, 2) * Cfg::NH2P) = make_float2(d[2], d[3]);
                }
            }
        }
        cp_async_wait_all();
        __syncthreads(); // vs complete; the chunk's depthwise kernels landed; (chunk 0) GEMM2's outs written
        if constexpr (kHalf)
        {
            __half* const vh = reinterpret_cast<__half*>(vs);
            __half* const th = reinterpret_cast<__half*>(ts);
            depthwise1_gelu<Cfg, __half, true, Cfg::NH2PH, Cfg::NH1PH>(vh, wd1s, th, y0, x0, H, W);
            __syncthreads(); // ts complete; vs free for the next GEMM1
            depthwise2<Cfg, __half, true, Cfg::NH1PH>(th, wd2s, outs + j0 * NOP);
        }
        else
        {
            depthwise1_gelu<Cfg, float, true, Cfg::NH2P, Cfg::NH1P>(vs, wd1s, ts, y0, x0, H, W);
            __syncthreads(); // ts complete; vs free for the next GEMM1
            depthwise2<Cfg, float, true, Cfg::NH1P>(ts, wd2s, outs + j0 * NOP);
        }
        __syncthreads(); // outs rows of the chunk final; ts and the depthwise kernels free
    }

    // ---- coalesced stores of y.
    for (int e = tid; e < C * Cfg::NO; e += Cfg::kThreads)
    {
        int const c = e / Cfg::NO;
        int const q = e - c * Cfg::NO;
        int const r = q / Cfg::TW;
        int const gy = y0 + r;
        int const gx = x0 + (q - r * Cfg::TW);
        if (gy < H && gx < W)
        {
            yb[c * hw + static_cast<int64_t>(gy) * W + gx] = from_float<T>(outs[c * NOP + q]);
        }
    }
}


} // namespace
} // namespace mstpp
