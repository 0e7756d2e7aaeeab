// Pass 1 of the attention: the per-image Gram matrix S = X X^T (FP32 FMA path and tensor-core path), split over pixels with a fixed-order reduction.
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

constexpr int kHeadDim = 31;      // channels per head at every MST++ level
constexpr float kNormEps = 1e-12f; // F.normalize's eps, applied to each norm

// Upper-triangular tiles of an nt x nt tile grid, numbered row by row: t -> (ti, tj) with ti <= tj.
__device__ __forceinline__ void tri_tile(int t, int nt, int& ti, int& tj)
{
    int row = 0;
    while (t >= nt - row)
    {
        t -= nt - row;
        ++row;
    }
    ti = row;
    tj = row + t;
}

// =============================================================================================================
// Pass 1: partial Gram matrices.
//
// A block owns a contiguous range of pixels of one image and walks it in chunks of P pixels: the chunk is staged
// in shared memory pixel-major, xs[p][c] (pitch CP + 4, so a warp's 8 pixels x 4 channels stores are
// conflict-free and a thread reads TS consecutive channels as float4). Thread t owns the TS x TS tile
// t % kTiles of the upper triangle of X X^T and the pixels p = g, g + G, ... of every chunk (group g = t / kTiles).
// At the end the G groups are summed by a fixed-order tree in shared memory and group 0 writes the block's
// partial: kTiles tiles of TS x TS floats, tile-major.
template <int kC, int kTS, int kG, int kP, int kMaxBlocks>
struct GramConfig
{
    static constexpr int C = kC;
    static constexpr int TS = kTS;
    static constexpr int G = kG;
    static constexpr int P = kP;
    static constexpr int kMaxBlocksPerImage = kMaxBlocks; // bounds the workspace and the final reduction
    static constexpr int CP = round_up(C, 32);
    static constexpr int NT = CP / TS;
    static constexpr int kTiles = NT * (NT + 1) / 2;
    static constexpr int kTileElems = TS * TS;
    static constexpr int kPartialFloats = kTiles * kTileElems;
    static constexpr int kThreads = round_up(kTiles * G, 32);
    static constexpr int PPC = CP + 4;
    static constexpr int kLoadElems = CP * P;
    static constexpr int kLoadIters = cdiv(kLoadElems, kThreads);
    static constexpr int kLoadBatch = TS == 4 ? 8 : 4; // loads in flight per thread (64 accumulators at TS = 8)
    static constexpr int kRedFloats = ((G + 1) / 2) * kPartialFloats;
    static constexpr int kSmemFloats = cmax(P * PPC, kRedFloats);

    static_assert(TS % 4 == 0 && CP % TS == 0, "tiles are read as float4");
    static_assert(P % 8 == 0 && CP % 4 == 0, "the staging map moves 8 pixels x 4 channels per warp step");
    static_assert(kTiles * G <= kThreads && kThreads <= 1024, "one thread per (tile, group)");
    static_assert(kSmemFloats * 4 <= 48 * 1024, "static shared memory");
};

// C = 31: 4x4 tiles (36 of them), 7 groups: 252 threads. C = 62: 8x8 tiles (36), 7 groups. C = 124: 8x8 tiles
// (136), 2 groups: 272 threads in 9 warps. Each thread accumulates TS^2 products per pixel from 2 TS/4 float4.
using Gram31 = GramConfig<31, 4, 7, 256, 256>;
using Gram62 = GramConfig<62, 8, 7, 128, 256>;
using Gram124 = GramConfig<124, 8, 2, 64, 128>;

// Pixel range of the blocks of one image: ppb pixels each (a multiple of P), nblk blocks. Depends only on N.
struct GramPlan
{
    int64_t nblk;
    int64_t ppb;
};

template <typename Cfg>
GramPlan gram_plan(int64_t N)
{
    int64_t const chunks = ceil_div(N, Cfg::P);
    int64_t const want = chunks < Cfg::kMaxBlocksPerImage ? chunks : Cfg::kMaxBlocksPerImage;
    int64_t const ppb = ceil_div(ceil_div(N, want), Cfg::P) * Cfg::P;
    return GramPlan{ceil_div(N, ppb), ppb};
}

// Launch assumptions: blockDim.x == Cfg::kThreads; gridDim.x == B * nblk; x contiguous [B, C, N].
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 2) gram_partial_kernel(
    T const* __restrict__ x, float* __restrict__ partial, int64_t N, int nblk, int64_t ppb)
{
    constexpr int C = Cfg::C;
    constexpr int TS = Cfg::TS;
    constexpr int P = Cfg::P;
    __shared__ float4 smem4[Cfg::kSmemFloats / 4];
    float* const xs = reinterpret_cast<float*>(smem4);

    int const tid = threadIdx.x;
    int const image = blockIdx.x / nblk;
    int const blk = blockIdx.x - image * nblk;
    int64_t const begin = blk * ppb;
    int64_t const end = begin + ppb < N ? begin + ppb : N;
    T const* const xb = x + static_cast<int64_t>(image) * C * N;

    int const tile = tid % Cfg::kTiles;
    int const g = tid / Cfg::kTiles;
    bool const active = g < Cfg::G;
    int ti = 0;
    int tj = 0;
    tri_tile(tile, Cfg::NT, ti, tj);

    float acc[TS][TS];
#pragma unroll
    for (int a = 0; a < TS; ++a)
    {
#pragma unroll
        for (int b = 0; b < TS; ++b)
        {
            acc[a][b] = 0.0f;
        }
    }

#pragma unroll 1
    for (int64_t n0 = begin; n0 < end; n0 += P)
    {
        __syncthreads(); // the previous chunk's products are done with xs
        // Element e -> (pixel p, channel c): 32 consecutive e are 8 consecutive pixels x 4 channels, so a warp
        // reads 32-byte runs of x and stores to banks (4p + c) % 32 (pitch = 4 mod 32), all distinct.
        for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
        {
            float v[Cfg::kLoadBatch];
            int off[Cfg::kLoadBatch];
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * Cfg::kThreads;
                int const q = e % 32;
                int const r = e / 32;
                int const p = (r % (P / 8)) * 8 + q % 8;
                int const c = (r / (P / 8)) * 4 + q / 8;
                v[k] = 0.0f;
                off[k] = -1;
                if (i0 + k < Cfg::kLoadIters && e < Cfg::kLoadElems)
                {
                    off[k] = p * Cfg::PPC + c;
                    if (c < C && n0 + p < end)
                    {
                        v[k] = to_float(xb[c * N + n0 + p]);
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
        __syncthreads();
        if (active)
        {
            float const* const ra = xs + ti * TS;
            float const* const rb = xs + tj * TS;
#pragma unroll(TS == 4 ? 2 : 1)
            for (int p = g; p < P; p += Cfg::G)
            {
                float a[TS];
                float b[TS];
#pragma unroll
                for (int k = 0; k < TS / 4; ++k)
                {
                    float4 const va = *reinterpret_cast<float4 const*>(ra + p * Cfg::PPC + 4 * k);
                    float4 const vb = *reinterpret_cast<float4 const*>(rb + p * Cfg::PPC + 4 * k);
                    a[4 * k + 0] = va.x;
                    a[4 * k + 1] = va.y;
                    a[4 * k + 2] = va.z;
                    a[4 * k + 3] = va.w;
                    b[4 * k + 0] = vb.x;
                    b[4 * k + 1] = vb.y;
                    b[4 * k + 2] = vb.z;
                    b[4 * k + 3] = vb.w;
                }
#pragma unroll
                for (int i = 0; i < TS; ++i)
                {
#pragma unroll
                    for (int j = 0; j < TS; ++j)
                    {
                        acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
                    }
                }
            }
        }
    }

    // Fixed-order tree over the groups: groups [h, n) hand their tiles to groups [0, n - h) through xs.
    float* const red = xs;
#pragma unroll 1
    for (int n = Cfg::G; n > 1; n = (n + 1) / 2)
    {
        int const h = (n + 1) / 2;
        __syncthreads(); // xs is free (last products / previous round's reads done)
        if (active && g >= h && g < n)
        {
            float* dst = red + ((g - h) * Cfg::kTiles + tile) * Cfg::kTileElems;
#pragma unroll
            for (int i = 0; i < TS; ++i)
            {
#pragma unroll
                for (int j = 0; j < TS; j += 4)
                {
                    *reinterpret_cast<float4*>(dst + i * TS + j)
                        = make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
                }
            }
        }
        __syncthreads();
        if (active && g < n - h)
        {
            float const* src = red + (g * Cfg::kTiles + tile) * Cfg::kTileElems;
#pragma unroll
            for (int i = 0; i < TS; ++i)
            {
#pragma unroll
                for (int j = 0; j < TS; j += 4)
                {
                    float4 const s = *reinterpret_cast<float4 const*>(src + i * TS + j);
                    acc[i][j] += s.x;
                    acc[i][j + 1] += s.y;
                    acc[i][j + 2] += s.z;
                    acc[i][j + 3] += s.w;
                }
            }
        }
    }
    if (active && g == 0)
    {
        float* dst = partial + (static_cast<int64_t>(image) * nblk + blk) * Cfg::kPartialFloats
            + tile * Cfg::kTileElems;
#pragma unroll
        for (int i = 0; i < TS; ++i)
        {
#pragma unroll
            for (int j = 0; j < TS; j += 4)
            {
                *reinterpret_cast<float4*>(dst + i * TS + j)
                    = make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
            }
        }
    }
}

constexpr int kSmallThreads = 256; // block size of the reduction, logits and fold kernels

// sum_k src[k * E] for k = 0 .. nblk-1, added in that order (4 loads in flight).
__device__ __forceinline__ float sum_partials(float const* src, int nblk, int E)
{
    float sum = 0.0f;
    int k = 0;
    for (; k + 4 <= nblk; k += 4)
    {
        float const v0 = src[static_cast<int64_t>(k) * E];
        float const v1 = src[static_cast<int64_t>(k + 1) * E];
        float const v2 = src[static_cast<int64_t>(k + 2) * E];
        float const v3 = src[static_cast<int64_t>(k + 3) * E];
        sum += v0;
        sum += v1;
        sum += v2;
        sum += v3;
    }
    for (; k < nblk; ++k)
    {
        sum += src[static_cast<int64_t>(k) * E];
    }
    return sum;
}

// S[b] = sum over the image's nblk partials, in block order; element e of the tiled layout -> S[i][j] and S[j][i].
// Launch assumptions: gridDim.x == B * blocks_per_image, blocks_per_image * kSmallThreads >= kPartialFloats.
template <typename Cfg>
__global__ void __launch_bounds__(kSmallThreads) gram_reduce_kernel(
    float const* __restrict__ partial, float* __restrict__ gram, int nblk, int blocks_per_image)
{
    constexpr int C = Cfg::C;
    constexpr int E = Cfg::kPartialFloats;
    int const image = blockIdx.x / blocks_per_image;
    int const e = (blockIdx.x - image * blocks_per_image) * kSmallThreads + threadIdx.x;
    if (e >= E)
    {
        return;
    }
    float const sum = sum_partials(partial + static_cast<int64_t>(image) * nblk * E + e, nblk, E);
    int const tile = e / Cfg::kTileElems;
    int const within = e - tile * Cfg::kTileElems;
    int ti = 0;
    int tj = 0;
    tri_tile(tile, Cfg::NT, ti, tj);
    int const i = ti * Cfg::TS + within / Cfg::TS;
    int const j = tj * Cfg::TS + within % Cfg::TS;
    if (i < C && j < C)
    {
        float* const s = gram + static_cast<int64_t>(image) * C * C;
        s[i * C + j] = sum;
        if (ti != tj)
        {
            s[j * C + i] = sum; // diagonal tiles hold both (i, j) and (j, i), computed identically
        }
    }
}

// =============================================================================================================
// Pass 1 on tensor cores (16-bit storage): S = X X^T with mma.m16n8k16, FP32 accumulation.
//
// X [C, N] is the A operand (16 channel rows x 16 pixels) and X^T the B operand (16 pixels x 8 channels); in both,
// one 32-bit fragment register is two consecutive pixels of one channel, so the chunk is staged channel-major,
// xs[c][p] (16-bit, the raw storage bits: the operands are the stored values exactly, and each product of two of
// them is exact in FP32). Pitch PX = P + 8 elements (PX / 2 = 4 mod 32 words): the 8 groups x 4 lanes of a
// fragment load hit 32 distinct banks. Only the tiles (16-row block mt, 8-column block n8) with n8 >= 2 mt are
// computed (they cover i <= j); the reduction mirrors them. Warps = WT tile groups x WK pixel groups: warp
// (wt, wk) accumulates tiles wt, wt + WT, ... over the k-steps wk, wk + WK, ... of every chunk; the WK pixel
// groups are then added in fixed order through shared memory and pixel group 0 writes the block's partial as
// [tile][lane][4] floats (the accumulator fragments as they are).
template <int kC, int kP, int kMaxBlocks, int kWT>
struct GramTcConfig
{
    static constexpr int C = kC;
    static constexpr int P = kP;
    static constexpr int kMaxBlocksPerImage = kMaxBlocks;
    static constexpr int CP = round_up(C, 32);
    static constexpr int MT = CP / 16;                      // 16-row blocks
    static constexpr int N8 = CP / 8;                       // 8-column blocks
    static constexpr int kTiles = MT * N8 - MT * (MT - 1); // sum over mt of (N8 - 2 mt)
    static constexpr int kThreads = 256;
    static constexpr int kWarps = kThreads / 32;
    static constexpr int WT = kWT;
    static constexpr int WK = kWarps / WT;
    static constexpr int TPG = kTiles / WT; // tiles per warp
    static constexpr int kTileFloats = 128;
    static constexpr int kPartialFloats = kTiles * kTileFloats;
    static constexpr int PX = P + 8;
    static constexpr int KSTEPS = P / 16;
    static constexpr int kLoadElems = CP * P;
    static constexpr int kLoadIters = kLoadElems / kThreads;
    static constexpr int kLoadBatch = 8;
    static constexpr int kXsBytes = CP * PX * 2;
    static constexpr int kRedBytes = (WK - 1) * kPartialFloats * 4;
    static constexpr int kSmemBytes = round_up(cmax(kXsBytes, kRedBytes), 16);

    static_assert(P % 64 == 0, "PX / 2 = 4 mod 32 words: conflict-free fragment loads");
    static_assert(kWarps % WT == 0 && kTiles % WT == 0, "whole tile groups");
    static_assert(KSTEPS % WK == 0, "every pixel group gets the same number of k-steps");
    static_assert(kLoadElems % (kThreads * kLoadBatch) == 0, "whole load batches");
    static_assert(kSmemBytes <= 48 * 1024, "static shared memory");
};

// Same chunk size P and block bound as Gram31/62/124 (so the same GramPlan). C = 31: 6 tiles, one tile group,
// 8 pixel groups (24 accumulators). C = 62: 20 tiles, 2 groups of 10 (40 accumulators), 4 pixel groups. C = 124:
// 72 tiles, 8 groups of 9 (36 accumulators), one pixel group.
using GramTc31 = GramTcConfig<31, 256, 256, 1>;
using GramTc62 = GramTcConfig<62, 128, 256, 2>;
using GramTc124 = GramTcConfig<124, 64, 128, 8>;

// Tile t of the n8 >= 2 mt list (row by row) -> (mt, n8).
__host__ __device__ inline void tc_tile(int t, int n8_count, int& mt, int& n8)
{
    int row = 0;
    while (t >= n8_count - 2 * row)
    {
        t -= n8_count - 2 * row;
        ++row;
    }
    mt = row;
    n8 = 2 * row + t;
}

__device__ __forceinline__ uint32_t ld_shared32(uint16_t const* p)
{
    return *reinterpret_cast<uint32_t const*>(p);
}

// Launch assumptions: blockDim.x == Cfg::kThreads; gridDim.x == B * nblk; x contiguous [B, C, N] of 16-bit T.
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads) gram_tc_kernel(
    uint16_t const* __restrict__ x, float* __restrict__ partial, int64_t N, int nblk, int64_t ppb)
{
    constexpr int C = Cfg::C;
    constexpr int P = Cfg::P;
    constexpr int PX = Cfg::PX;
    constexpr int TPG = Cfg::TPG;
    __shared__ uint4 smem16[Cfg::kSmemBytes / 16];
    uint16_t* const xs = reinterpret_cast<uint16_t*>(smem16);

    int const tid = threadIdx.x;
    int const lane = tid % 32;
    int const warp = tid / 32;
    int const wt = warp % Cfg::WT;
    int const wk = warp / Cfg::WT;
    int const image = blockIdx.x / nblk;
    int const blk = blockIdx.x - image * nblk;
    int64_t const begin = blk * ppb;
    int64_t const end = begin + ppb < N ? begin + ppb : N;
    uint16_t const* const xb = x + static_cast<int64_t>(image) * C * N;

    // Fragment offsets of the warp's tiles in xs (k-step 0): A rows mt*16 + (g, g + 8), B rows n8*8 + g.
    int aoff[TPG];
    int boff[TPG];
#pragma unroll
    for (int i = 0; i < TPG; ++i)
    {
        int mt = 0;
        int n8 = 0;
        tc_tile(wt + Cfg::WT * i, Cfg::N8, mt, n8);
        aoff[i] = (mt * 16 + mma16::a_row(lane, 0)) * PX + mma16::a_col(lane, 0);
        boff[i] = (n8 * 8 + mma16::b_n(lane)) * PX + mma16::b_k(lane, 0);
    }
    // Register r of A is row + 8 (r & 1), column + 8 (r >> 1); register 1 of B is k + 8 (mma16.cuh).
    constexpr int kA1 = 8 * PX;
    constexpr int kA2 = 8;
    constexpr int kA3 = 8 * PX + 8;
    constexpr int kB1 = 8;

    float acc[TPG][4];
#pragma unroll
    for (int i = 0; i < TPG; ++i)
    {
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    }

#pragma unroll 1
    for (int64_t n0 = begin; n0 < end; n0 += P)
    {
        __syncthreads(); // the previous chunk's fragments are read
        // Element e -> (channel e / P, pixel e % P): a warp reads 64 contiguous bytes of one channel.
#pragma unroll 1
        for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
        {
            uint16_t v[Cfg::kLoadBatch];
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * Cfg::kThreads;
                int const c = e / P;
                int const p = e % P;
                v[k] = (c < C && n0 + p < end) ? xb[c * N + n0 + p] : uint16_t{0};
            }
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * Cfg::kThreads;
                xs[(e / P) * PX + e % P] = v[k];
            }
        }
        __syncthreads();
#pragma unroll 1
        for (int ks = wk; ks < Cfg::KSTEPS; ks += Cfg::WK)
        {
            int const k0 = ks * 16;
#pragma unroll
            for (int i = 0; i < TPG; ++i)
            {
                uint16_t const* const pa = xs + aoff[i] + k0;
                uint16_t const* const pb = xs + boff[i] + k0;
                uint4 a;
                a.x = ld_shared32(pa);
                a.y = ld_shared32(pa + kA1);
                a.z = ld_shared32(pa + kA2);
                a.w = ld_shared32(pa + kA3);
                mma16::mma<T>(acc[i], a, ld_shared32(pb), ld_shared32(pb + kB1));
            }
        }
    }

    // Pixel groups 1..WK-1 hand their accumulators to group 0, which adds them in group order.
    if constexpr (Cfg::WK > 1)
    {
        float* const red = reinterpret_cast<float*>(smem16);
        __syncthreads(); // every warp is done with xs
        if (wk > 0)
        {
#pragma unroll
            for (int i = 0; i < TPG; ++i)
            {
                int const t = wt + Cfg::WT * i;
                *reinterpret_cast<float4*>(red + ((wk - 1) * Cfg::kTiles + t) * Cfg::kTileFloats + lane * 4)
                    = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
            }
        }
        __syncthreads();
        if (wk == 0)
        {
#pragma unroll 1
            for (int k = 1; k < Cfg::WK; ++k)
            {
#pragma unroll
                for (int i = 0; i < TPG; ++i)
                {
                    int const t = wt + Cfg::WT * i;
                    float const* const src = red + ((k - 1) * Cfg::kTiles + t) * Cfg::kTileFloats + lane * 4;
                    float4 const s = *reinterpret_cast<float4 const*>(src);
                    acc[i][0] += s.x;
                    acc[i][1] += s.y;
                    acc[i][2] += s.z;
                    acc[i][3] += s.w;
                }
            }
        }
    }
    if (wk == 0)
    {
        float* const dst = partial + (static_cast<int64_t>(image) * nblk + blk) * Cfg::kPartialFloats;
#pragma unroll
        for (int i = 0; i < TPG; ++i)
        {
            int const t = wt + Cfg::WT * i;
            *reinterpret_cast<float4*>(dst + t * Cfg::kTileFloats + lane * 4)
                = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        }
    }
}

// S[b] from the tensor-core partials: the same block-order sum as gram_reduce_kernel; element e = (tile, lane,
// i) of the fragment layout is S[i][j] (mma16::c_row / c_col), written with its mirror where i <= j, so S is
// exactly symmetric whatever order the tensor cores add in.
// Launch assumptions: gridDim.x == B * blocks_per_image, blocks_per_image * kSmallThreads >= kPartialFloats.
template <typename Cfg>
__global__ void __launch_bounds__(kSmallThreads) gram_reduce_tc_kernel(
    float const* __restrict__ partial, float* __restrict__ gram, int nblk, int blocks_per_image)
{
    constexpr int C = Cfg::C;
    constexpr int E = Cfg::kPartialFloats;
    int const image = blockIdx.x / blocks_per_image;
    int const e = (blockIdx.x - image * blocks_per_image) * kSmallThreads + threadIdx.x;
    if (e >= E)
    {
        return;
    }
    float const sum = sum_partials(partial + static_cast<int64_t>(image) * nblk * E + e, nblk, E);
    int const tile = e / Cfg::kTileFloats;
    int const lane = (e / 4) % 32;
    int const k = e % 4;
    int mt = 0;
    int n8 = 0;
    tc_tile(tile, Cfg::N8, mt, n8);
    int const i = mt * 16 + mma16::c_row(lane, k);
    int const j = n8 * 8 + mma16::c_col(lane, k);
    if (i <= j && j < C)
    {
        float* const s = gram + static_cast<int64_t>(image) * C * C;
        s[i * C + j] = sum;
        s[j * C + i] = sum;
    }
}

// One warp per row r of [Wk; Wq] . S (2C rows per image): T = w_r S (lane owns columns lane + 32m), then
//   k row i:  nk2[i] = T . Wk[i],  raw[i][j] = T . Wq[h d + j] for the d rows j of its head h (lane j)
//   q row j:  nq2[j] = T . Wq[j]
// The block first copies S (C^2 floats) into shared memory with one burst of cp.async, so the C-long loops run
// on shared-memory latency instead of a chain of L2 round trips (the profile of the previous version, which read
// S and the weights from L2 inside its loops, showed 12-37 us per call for ~1 us of arithmetic). Fixed summation
// orders (one butterfly for the norms, four interleaved chains for raw), so results are reproducible.
// Launch assumptions: blockDim.x == kSmallThreads; gridDim.x == B * blocks_per_image, 8 rows per block; dynamic
// shared memory LogitsSmem<C>::kBytes.

} // namespace
} // namespace mstpp
