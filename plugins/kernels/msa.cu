// The MST++ spectral-wise self-attention (SpectralMSA) with the MSAB residual, on NCHW tensors:
//   y = x + Wproj . (blockdiag(A_h) . v) + bproj + dw2(GELU(dw1(v))),   v = Wv . x
//   A_h = softmax_rows(rescale[h] * kn_h . qn_h^T),  kn/qn: rows of Wk . x / Wq . x of head h, L2-normalised
//                                                    over the N = H*W pixels (norm clamped at 1e-12)
// for C = 31, 62, 124 channels (heads = C / 31, 31 channels per head). dw1, dw2: depthwise 3x3, zero padding 1,
// no bias; GELU is the exact erf form. All weights are float32; x and y share the storage dtype.
//
// Algebra. With X = x[b] as a [C, N] matrix, q = Wq X, k = Wk X, v = Wv X, and the Gram matrix S = X X^T [C, C]:
//   k_i . q_j       = (Wk S Wq^T)_ij      (the attention numerators, used on the diagonal head blocks only)
//   ||k_i||^2       = (Wk S Wk^T)_ii,     ||q_j||^2 = (Wq S Wq^T)_jj
//   kn_i . qn_j     = (Wk S Wq^T)_ij / (max(||k_i||, 1e-12) max(||q_j||, 1e-12))
// and every linear step after the softmax folds into one matrix per batch item,
//   M = Wproj . blockdiag(A_h) . Wv      so that   Wproj . (blockdiag(A) . v) = M . x.
// Hence y = x + M x + bproj + dw2(GELU(dw1(Wv x))): x is read twice (once for S, once for y) and y written once;
// q, k, v, the attention output and the positional branch never reach global memory. (Checked in float64
// against architecture.mst_plus_plus.SpectralMSA: equal to ~1e-15.)
//
// Kernels, in stream order:
//   1. gram_partial: blocks of P pixels x all channels of one image; each block writes the upper-triangular
//      tiles of its partial X X^T (float32) to the workspace. No atomics.
//   2. gram_reduce: S[b] = sum of the partials, in block order (bitwise deterministic), mirrored to a full [C, C].
//   3. attn_logits: one warp per row of Wk S (and of Wq S): ||k_i||^2, ||q_j||^2 and the d numerators of row i.
//      Images of at most 32 pixels skip 1-3 and run attn_direct instead: the same outputs from k = Wk x and
//      q = Wq x (one lane per pixel), because the Gram form is at its worst there (below).
//   4. attn_fold: per batch item, A_h = softmax(rescale[h] * logits / norms) (FP32, expf), then 8 rows of
//      M = (Wproj . blockdiag(A)) . Wv per block, stored transposed (Mt[c][o], zero-padded to CP x CP).
//   5. msa_fused: halo tiles (below): y = x + M x + bproj + dw2(GELU(dw1(Wv x))).
//
// Pass 2 tiling. A block owns TH x TW output pixels of one image and loads x over the tile plus a 2-pixel halo,
// (TH+4) x (TW+4) pixels, all channels, into shared memory (float, zero outside the image). Channels of v are
// processed in chunks of K (the C + padding channels, padded with zero weights):
//   GEMM1  vs[K][halo2 px]  = Wv[chunk] . xs          (zero outside the image since xs is, and there is no bias:
//                                                     the zero padding dw1 expects)
//   DW1    ts[K][halo1 px]  = GELU(dw1(vs)), set to 0 at pixels outside the image (the zero padding dw2 expects;
//                             GELU(dw1(v)) is not 0 there)
//   DW2    ps[K][out px]    = dw2(ts)                 (in vs's memory: vs is dead after DW1)
//   GEMM2  acc[out px][C]  += Mt[chunk] . xs(out px), and the threads that own the chunk's channels add ps
// acc starts at x + bproj (the residual) and stays in registers across chunks; at the end it goes through shared
// memory to coalesced stores of y. Weights of a chunk are copied with cp.async (Wv transposed, Mt rows, the two
// depthwise kernels), one phase ahead of their use where separate Wv / Mt buffers fit, as in ffn.cu.
//
// Register blocking. GEMM1: 4 consecutive halo pixels x NB1 channels per item (a float4 of xs and NB1/4 float4
// of weights per input channel). GEMM2: 4 output pixels x 8 channels per item, the 4 pixels strided by a quarter
// of the tile so that a warp reads consecutive pixels (conflict-free scalar loads; output pixels are not 16-byte
// aligned inside the halo layout). DW: one thread slides down R rows of one column of one channel.
//
// Precision. Everything is float32 FMA (no TF32/tensor cores): the Gram matrix (per-thread sequential sums over
// each block's pixels, then a fixed-order tree over thread groups, then a fixed-order sum over blocks), the d x d
// logits and norms, the softmax (expf), the fold of M, and pass 2. No atomics anywhere, so results are bitwise
// reproducible. The Gram form rounds differently from PyTorch's q/k path and squares the conditioning of the
// norms (normal equations vs. the projection itself): a row of k whose values mostly cancel,
// ||Wk_i x|| << ||Wk_i|| ||x||, gets a relative error of about eps_fp32 * (||Wk_i|| ||x|| / ||Wk_i x||)^2 in its
// norm and numerators instead of eps_fp32 * ||Wk_i|| ||x|| / ||Wk_i x||. Measured on CPU with this arithmetic,
// relative to max|y|: 2e-7..6e-7 on random O(1) data (PyTorch float32: ~2e-7), 2e-6..4e-6 on strongly
// channel-correlated data at 64x64, and up to 5e-3 for a single pixel (S of rank one), hence the direct path for
// N <= 32. Near-flat images (all pixels almost equal) are rank-one-like too and remain the weak case. Since a
// cosine is in [-1, 1] exactly, the fold kernel clamps it there: a norm that cancelled to ~0 cannot blow a logit up.
//
// x and y must not overlap (tiles read their halo from pixels other tiles write), nor may the workspace
// overlap either of them (MSTPP_ERR_OVERLAP).
#include <atomic>
#include <climits>
#include <cmath>

#include "common.cuh"

namespace mstpp
{
namespace
{

__host__ __device__ constexpr int round_up(int a, int b)
{
    return (a + b - 1) / b * b;
}

__host__ __device__ constexpr int cdiv(int a, int b)
{
    return (a + b - 1) / b;
}

__host__ __device__ constexpr int cmax(int a, int b)
{
    return a > b ? a : b;
}

constexpr int kHeadDim = 31;      // channels per head at every MST++ level
constexpr float kNormEps = 1e-12f; // F.normalize's eps, applied to each norm

__device__ __forceinline__ float gelu_erf(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

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
    float const* src = partial + static_cast<int64_t>(image) * nblk * E + e;
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

// One warp per row r of [Wk; Wq] . S (2C rows per image): T = w_r S (lane owns columns lane + 32m), then
//   k row i:  nk2[i] = T . Wk[i],  raw[i][j] = T . Wq[h d + j] for the d rows j of its head h
//   q row j:  nq2[j] = T . Wq[j]
// Warp sums use a fixed butterfly, so results are reproducible. S (C^2 floats) is read through L1.
// Launch assumptions: blockDim.x == kSmallThreads; gridDim.x == B * blocks_per_image, 8 rows per block.
template <int C>
__global__ void __launch_bounds__(kSmallThreads) attn_logits_kernel(float const* __restrict__ gram,
    float const* __restrict__ wq, float const* __restrict__ wk, float* __restrict__ raw, float* __restrict__ nk2,
    float* __restrict__ nq2, int blocks_per_image)
{
    constexpr int d = kHeadDim;
    constexpr int CW = cdiv(C, 32);
    constexpr int kWarps = kSmallThreads / 32;
    int const image = blockIdx.x / blocks_per_image;
    int const r = (blockIdx.x - image * blocks_per_image) * kWarps + threadIdx.x / 32;
    int const lane = threadIdx.x % 32;
    if (r >= 2 * C)
    {
        return; // whole warp: r is uniform across it
    }
    bool const is_k = r < C;
    int const row = is_k ? r : r - C;
    float const* const w = (is_k ? wk : wq) + row * C;
    float const* const s = gram + static_cast<int64_t>(image) * C * C;

    float t[CW];
#pragma unroll
    for (int m = 0; m < CW; ++m)
    {
        t[m] = 0.0f;
    }
#pragma unroll 4
    for (int k = 0; k < C; ++k)
    {
        float const wv = __ldg(w + k);
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            int const c = lane + 32 * m;
            if (c < C)
            {
                t[m] = fmaf(wv, __ldg(s + k * C + c), t[m]);
            }
        }
    }
    float part = 0.0f;
#pragma unroll
    for (int m = 0; m < CW; ++m)
    {
        int const c = lane + 32 * m;
        if (c < C)
        {
            part = fmaf(t[m], __ldg(w + c), part);
        }
    }
    float const norm2 = warp_sum(part);
    if (lane == 0)
    {
        (is_k ? nk2 : nq2)[static_cast<int64_t>(image) * C + row] = norm2;
    }
    if (is_k)
    {
        int const h = row / d;
        float mine = 0.0f;
#pragma unroll 1
        for (int jj = 0; jj < d; ++jj)
        {
            float const* const qrow = wq + (h * d + jj) * C;
            float p = 0.0f;
#pragma unroll
            for (int m = 0; m < CW; ++m)
            {
                int const c = lane + 32 * m;
                if (c < C)
                {
                    p = fmaf(t[m], __ldg(qrow + c), p);
                }
            }
            float const total = warp_sum(p);
            if (lane == jj)
            {
                mine = total;
            }
        }
        if (lane < d)
        {
            raw[(static_cast<int64_t>(image) * C + row) * d + lane] = mine;
        }
    }
}

// Small images (N <= kDirectMaxPixels): the same outputs as attn_logits_kernel, computed from k = Wk x and
// q = Wq x directly (one lane per pixel) instead of through S. With few pixels S has rank <= N, and a row of k or
// q whose values nearly cancel (|w . x_n| << |w| |x_n|) loses about twice as many digits through the Gram
// matrix as through the projection itself; N = 1 is the extreme case.
// Launch assumptions: blockDim.x == kSmallThreads; gridDim.x == B * blocks_per_image, 8 rows per block; N <= 32.
constexpr int kDirectMaxPixels = 32;

template <typename T, int C>
__global__ void __launch_bounds__(kSmallThreads) attn_direct_kernel(T const* __restrict__ x,
    float const* __restrict__ wq, float const* __restrict__ wk, float* __restrict__ raw, float* __restrict__ nk2,
    float* __restrict__ nq2, int N, int blocks_per_image)
{
    constexpr int d = kHeadDim;
    constexpr int kWarps = kSmallThreads / 32;
    int const image = blockIdx.x / blocks_per_image;
    int const r = (blockIdx.x - image * blocks_per_image) * kWarps + threadIdx.x / 32;
    int const lane = threadIdx.x % 32;
    if (r >= 2 * C)
    {
        return; // whole warp: r is uniform across it
    }
    bool const is_k = r < C;
    int const row = is_k ? r : r - C;
    float const* const w = (is_k ? wk : wq) + row * C;
    T const* const xn = x + static_cast<int64_t>(image) * C * N + lane; // pixel `lane` of channel 0
    bool const has_pixel = lane < N;

    float kv = 0.0f;
    if (has_pixel)
    {
#pragma unroll 4
        for (int c = 0; c < C; ++c)
        {
            kv = fmaf(__ldg(w + c), to_float(xn[c * N]), kv);
        }
    }
    float const norm2 = warp_sum(kv * kv);
    if (lane == 0)
    {
        (is_k ? nk2 : nq2)[static_cast<int64_t>(image) * C + row] = norm2;
    }
    if (is_k)
    {
        int const h = row / d;
        float mine = 0.0f;
#pragma unroll 1
        for (int jj = 0; jj < d; ++jj)
        {
            float const* const qrow = wq + (h * d + jj) * C;
            float qv = 0.0f;
            if (has_pixel)
            {
#pragma unroll 4
                for (int c = 0; c < C; ++c)
                {
                    qv = fmaf(__ldg(qrow + c), to_float(xn[c * N]), qv);
                }
            }
            float const total = warp_sum(kv * qv);
            if (lane == jj)
            {
                mine = total;
            }
        }
        if (lane < d)
        {
            raw[(static_cast<int64_t>(image) * C + row) * d + lane] = mine;
        }
    }
}

// max(sqrt(s), eps) for a squared norm s that rounding may have made slightly negative (NaN stays NaN).
__device__ __forceinline__ float norm_from_square(float s)
{
    float const n = sqrtf(s < 0.0f ? 0.0f : s);
    return n < kNormEps ? kNormEps : n;
}

// Per image: A (all heads) into shared memory, then 8 rows o of M = (Wproj . blockdiag(A)) . Wv per block
// (one warp per row), stored transposed and zero-padded: Mt[c][o] = M[o][c] for c, o < CP.
// Launch assumptions: blockDim.x == kSmallThreads; gridDim.x == B * (CP / 8).
template <int C>
__global__ void __launch_bounds__(kSmallThreads) attn_fold_kernel(float const* __restrict__ raw,
    float const* __restrict__ nk2, float const* __restrict__ nq2, float const* __restrict__ rescale,
    float const* __restrict__ wproj, float const* __restrict__ wv, float* __restrict__ mt)
{
    constexpr int d = kHeadDim;
    constexpr int CP = round_up(C, 32);
    constexpr int CW = CP / 32;
    constexpr int kWarps = kSmallThreads / 32;
    constexpr int kBlocksPerImage = CP / kWarps;
    static_assert(C <= kSmallThreads, "one thread per softmax row");
    __shared__ float attn[C * d];
    __shared__ float ps[kWarps][CP];
    __shared__ float ms[kWarps][CP + 1];

    int const tid = threadIdx.x;
    int const image = blockIdx.x / kBlocksPerImage;
    int const o0 = (blockIdx.x - image * kBlocksPerImage) * kWarps;
    int64_t const ic = static_cast<int64_t>(image) * C;

    // ---- softmax rows: A[r][j] = softmax_j(rescale[h] * raw[r][j] / (max(|k_r|, eps) * max(|q_hd+j|, eps)))
    if (tid < C)
    {
        int const h = tid / d;
        float const nk = norm_from_square(nk2[ic + tid]);
        float const scale = rescale[h];
        float z[d];
        float zmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < d; ++j)
        {
            // kn . qn is a cosine: |.| <= 1 exactly. Through the Gram matrix a norm can lose most of its digits
            // (see the header), so keep the rounding error from pushing the logit outside [-rescale, rescale].
            float cosine = raw[(ic + tid) * d + j] / (nk * norm_from_square(nq2[ic + h * d + j]));
            cosine = cosine > 1.0f ? 1.0f : (cosine < -1.0f ? -1.0f : cosine); // NaN stays NaN
            z[j] = scale * cosine;
            zmax = fmaxf(zmax, z[j]);
        }
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < d; ++j)
        {
            z[j] = expf(z[j] - zmax);
            sum += z[j];
        }
#pragma unroll
        for (int j = 0; j < d; ++j)
        {
            attn[tid * d + j] = z[j] / sum;
        }
    }
    __syncthreads();

    int const w = tid / 32;
    int const lane = tid % 32;
    int const o = o0 + w;
    if (o < C)
    {
        // P[o][jp] = sum_i Wproj[o][h d + i] * A_h[i][jj], jp = h d + jj
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            int const jp = lane + 32 * m;
            if (jp < C)
            {
                int const h = jp / d;
                int const jj = jp - h * d;
                float const* const prow = wproj + o * C + h * d;
                float const* const acol = attn + h * d * d + jj;
                float p = 0.0f;
#pragma unroll 8
                for (int i = 0; i < d; ++i)
                {
                    p = fmaf(__ldg(prow + i), acol[i * d], p);
                }
                ps[w][jp] = p;
            }
        }
        __syncwarp();
        // M[o][c] = sum_jp P[o][jp] * Wv[jp][c]
        float acc[CW];
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            acc[m] = 0.0f;
        }
#pragma unroll 4
        for (int jp = 0; jp < C; ++jp)
        {
            float const p = ps[w][jp];
#pragma unroll
            for (int m = 0; m < CW; ++m)
            {
                int const c = lane + 32 * m;
                if (c < C)
                {
                    acc[m] = fmaf(p, __ldg(wv + jp * C + c), acc[m]);
                }
            }
        }
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            ms[w][lane + 32 * m] = acc[m]; // 0 for the padding channels c >= C
        }
    }
    else
    {
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            ms[w][lane + 32 * m] = 0.0f;
        }
    }
    __syncthreads();
    float* const mti = mt + static_cast<int64_t>(image) * CP * CP;
    for (int e = tid; e < CP * kWarps; e += kSmallThreads)
    {
        int const c = e / kWarps;
        int const oo = e - c * kWarps;
        mti[c * CP + o0 + oo] = ms[oo][c];
    }
}

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
using Msa62 = MsaConfig<62, 8, 16, 16, 4, 5, 8, true>;
using Msa124 = MsaConfig<124, 8, 8, 16, 4, 10, 4, false>;

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
// pixels inside the image, 0 at those outside (the zero padding of the second depthwise convolution).
template <typename Cfg>
__device__ __forceinline__ void depthwise1_gelu(
    float const* vs, float const* wd1s, float* ts, int y0, int x0, int H, int W)
{
    constexpr int R = Cfg::R1;
    constexpr int ROWS = Cfg::HTH1;
    constexpr bool kEven = ROWS % R == 0;
#pragma unroll 1
    for (int it = 0; it < Cfg::kDw1Iters; ++it)
    {
        int const u = threadIdx.x + it * Cfg::kThreads;
        if (u < Cfg::kDw1Units)
        {
            int const col = u % Cfg::HTW1;
            int const rest = u / Cfg::HTW1;
            int const r0 = (rest % Cfg::NRB1) * R;
            int const j = rest / Cfg::NRB1;
            float const* hp = vs + j * Cfg::NH2P + r0 * Cfg::HTW2 + col;
            float w[9];
#pragma unroll
            for (int k = 0; k < 9; ++k)
            {
                w[k] = wd1s[j * 9 + k];
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
                if (kEven || r0 + i < ROWS + 2)
                {
                    float const v0 = hp[i * Cfg::HTW2];
                    float const v1 = hp[i * Cfg::HTW2 + 1];
                    float const v2 = hp[i * Cfg::HTW2 + 2];
#pragma unroll
                    for (int dy = 0; dy < 3; ++dy)
                    {
                        int const r = i - dy; // output row fed by input row i through kernel row dy
                        if (r >= 0 && r < R)
                        {
                            o[r] = fmaf(w[dy * 3 + 0], v0, o[r]);
                            o[r] = fmaf(w[dy * 3 + 1], v1, o[r]);
                            o[r] = fmaf(w[dy * 3 + 2], v2, o[r]);
                        }
                    }
                }
            }
            int const gx = x0 - 1 + col;
            bool const col_in = gx >= 0 && gx < W;
            float* op = ts + j * Cfg::NH1P + r0 * Cfg::HTW1 + col;
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                if (kEven || r0 + r < ROWS)
                {
                    int const gy = y0 - 1 + r0 + r;
                    op[r * Cfg::HTW1] = (col_in && gy >= 0 && gy < H) ? gelu_erf(o[r]) : 0.0f;
                }
            }
        }
    }
}

// ps[j][r * TW + c] = sum_{a,b} wd2[j][a][b] * ts[j][(r + a) * HTW1 + c + b] for the output pixels.
template <typename Cfg>
__device__ __forceinline__ void depthwise2(float const* ts, float const* wd2s, float* ps)
{
    constexpr int R = Cfg::R2;
    constexpr int ROWS = Cfg::TH;
    constexpr bool kEven = ROWS % R == 0;
#pragma unroll 1
    for (int it = 0; it < Cfg::kDw2Iters; ++it)
    {
        int const u = threadIdx.x + it * Cfg::kThreads;
        if (u < Cfg::kDw2Units)
        {
            int const col = u % Cfg::TW;
            int const rest = u / Cfg::TW;
            int const r0 = (rest % Cfg::NRB2) * R;
            int const j = rest / Cfg::NRB2;
            float const* hp = ts + j * Cfg::NH1P + r0 * Cfg::HTW1 + col;
            float w[9];
#pragma unroll
            for (int k = 0; k < 9; ++k)
            {
                w[k] = wd2s[j * 9 + k];
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
                if (kEven || r0 + i < ROWS + 2)
                {
                    float const v0 = hp[i * Cfg::HTW1];
                    float const v1 = hp[i * Cfg::HTW1 + 1];
                    float const v2 = hp[i * Cfg::HTW1 + 2];
#pragma unroll
                    for (int dy = 0; dy < 3; ++dy)
                    {
                        int const r = i - dy;
                        if (r >= 0 && r < R)
                        {
                            o[r] = fmaf(w[dy * 3 + 0], v0, o[r]);
                            o[r] = fmaf(w[dy * 3 + 1], v1, o[r]);
                            o[r] = fmaf(w[dy * 3 + 2], v2, o[r]);
                        }
                    }
                }
            }
            float* op = ps + j * Cfg::NOP + r0 * Cfg::TW + col;
#pragma unroll
            for (int r = 0; r < R; ++r)
            {
                if (kEven || r0 + r < ROWS)
                {
                    op[r * Cfg::TW] = o[r];
                }
            }
        }
    }
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
        depthwise1_gelu<Cfg>(vs, wd1s, ts, y0, x0, H, W);
        __syncthreads(); // ts complete; vs dead
        depthwise2<Cfg>(ts, wd2s, ps);
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

// =============================================================================================================
// Host side.

// Opts the kernel into more than 48 KB of dynamic shared memory, once per device.
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

bool overlaps(void const* a, size_t a_bytes, void const* b, size_t b_bytes)
{
    auto const pa = reinterpret_cast<uintptr_t>(a);
    auto const pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

constexpr size_t kWorkspaceAlign = 256;

size_t align_bytes(size_t n)
{
    return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Workspace regions (byte offsets from the 256-byte-aligned base), all float32:
//   partial [B][nblk][kPartialFloats]   per-block Gram tiles
//   gram    [B][C][C]                    S
//   raw     [B][C][31]                   logits numerators of every row with its head's columns
//   nk2     [B][C], nq2 [B][C]           squared norms of the rows of k and q
//   mt      [B][CP][CP]                  M transposed, zero-padded
// `bytes` includes kWorkspaceAlign of slack so that any base pointer can be aligned up.
struct MsaLayout
{
    GramPlan plan;
    int gram_blocks_per_image; // gram_reduce blocks per image
    size_t partial, gram, raw, nk2, nq2, mt, bytes;
};

template <typename G>
MsaLayout msa_layout(int64_t B, int64_t N)
{
    constexpr int C = G::C;
    MsaLayout L{};
    L.plan = gram_plan<G>(N);
    L.gram_blocks_per_image = cdiv(G::kPartialFloats, kSmallThreads);
    size_t off = 0;
    auto region = [&](size_t floats) {
        size_t const at = off;
        off += align_bytes(floats * sizeof(float));
        return at;
    };
    size_t const b = static_cast<size_t>(B);
    L.partial = region(b * static_cast<size_t>(L.plan.nblk) * G::kPartialFloats);
    L.gram = region(b * C * C);
    L.raw = region(b * C * kHeadDim);
    L.nk2 = region(b * C);
    L.nq2 = region(b * C);
    L.mt = region(b * G::CP * G::CP);
    L.bytes = off + kWorkspaceAlign;
    return L;
}

// Shape limits shared by the workspace query and the entry point: false if the problem is too large.
bool msa_shape_ok(int64_t B, int C, int64_t H, int64_t W)
{
    // Pixel coordinates are int in the kernels, element offsets int64; keep well inside int64.
    return H <= INT_MAX && W <= INT_MAX && H * W <= (INT64_MAX / 8) / (static_cast<int64_t>(C) * B);
}

bool msa_layout_for(int C, int64_t B, int64_t N, MsaLayout* out)
{
    switch (C)
    {
    case 31: *out = msa_layout<Gram31>(B, N); break;
    case 62: *out = msa_layout<Gram62>(B, N); break;
    case 124: *out = msa_layout<Gram124>(B, N); break;
    default: return false;
    }
    return out->plan.nblk <= kMaxGridX / B;
}

template <typename T, typename G, typename Cfg>
int launch_msa(T const* x, T* y, float const* wq, float const* wk, float const* wv, float const* rescale,
    float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B, int64_t H, int64_t W,
    char* ws, MsaLayout const& L, cudaStream_t stream)
{
    static_assert(G::C == Cfg::C && G::CP == Cfg::CP, "one channel count");
    constexpr int C = Cfg::C;
    int64_t const N = H * W;
    int64_t const tiles_x = ceil_div(W, Cfg::TW);
    int64_t const per_image = ceil_div(H, Cfg::TH) * tiles_x;
    constexpr int kLogitBlocks = cdiv(2 * C, kSmallThreads / 32);
    constexpr int kFoldBlocks = Cfg::CP / (kSmallThreads / 32);
    if (per_image > kMaxGridX || B > kMaxGridX / per_image || B * L.gram_blocks_per_image > kMaxGridX
        || B * kLogitBlocks > kMaxGridX || B * kFoldBlocks > kMaxGridX)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    float* const partial = reinterpret_cast<float*>(ws + L.partial);
    float* const gram = reinterpret_cast<float*>(ws + L.gram);
    float* const raw = reinterpret_cast<float*>(ws + L.raw);
    float* const nk2 = reinterpret_cast<float*>(ws + L.nk2);
    float* const nq2 = reinterpret_cast<float*>(ws + L.nq2);
    float* const mt = reinterpret_cast<float*>(ws + L.mt);

    static std::atomic<uint64_t> smem_done{0};
    auto fused = msa_fused_kernel<T, Cfg>;
    int status = allow_smem(fused, Cfg::kSmemBytes, smem_done);
    if (status != MSTPP_OK)
    {
        return status;
    }

    if (N <= kDirectMaxPixels)
    {
        attn_direct_kernel<T, C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, 0, stream>>>(
            x, wq, wk, raw, nk2, nq2, static_cast<int>(N), kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    else
    {
        int const nblk = static_cast<int>(L.plan.nblk);
        gram_partial_kernel<T, G><<<static_cast<unsigned>(B * nblk), G::kThreads, 0, stream>>>(
            x, partial, N, nblk, L.plan.ppb);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        gram_reduce_kernel<G><<<static_cast<unsigned>(B * L.gram_blocks_per_image), kSmallThreads, 0, stream>>>(
            partial, gram, nblk, L.gram_blocks_per_image);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        attn_logits_kernel<C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, 0, stream>>>(
            gram, wq, wk, raw, nk2, nq2, kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    attn_fold_kernel<C><<<static_cast<unsigned>(B * kFoldBlocks), kSmallThreads, 0, stream>>>(
        raw, nk2, nq2, rescale, wproj, wv, mt);
    if ((status = launch_status()) != MSTPP_OK)
    {
        return status;
    }
    fused<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(x, y, wv, mt, bproj,
        wpos1, wpos2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x),
        static_cast<int>(per_image));
    return launch_status();
}

} // namespace
} // namespace mstpp

extern "C" size_t mstpp_msa_workspace_size(int64_t B, int C, int64_t H, int64_t W)
{
    using namespace mstpp;
    if ((C != 31 && C != 62 && C != 124) || B <= 0 || H <= 0 || W <= 0 || !msa_shape_ok(B, C, H, W))
    {
        return 0;
    }
    MsaLayout L{};
    if (!msa_layout_for(C, B, H * W, &L))
    {
        return 0;
    }
    return L.bytes;
}

extern "C" int mstpp_msa_nchw(void const* x, void* y, float const* wq, float const* wk, float const* wv,
    float const* rescale, float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B,
    int C, int64_t H, int64_t W, int dtype, void* workspace, void* stream)
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
    if (B == 0 || H == 0 || W == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || wq == nullptr || wk == nullptr || wv == nullptr || rescale == nullptr
        || wproj == nullptr || bproj == nullptr || wpos1 == nullptr || wpos2 == nullptr || workspace == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    if (!msa_shape_ok(B, C, H, W))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    MsaLayout L{};
    if (!msa_layout_for(C, B, H * W, &L))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    size_t const tensor_bytes = static_cast<size_t>(B * C * H * W) * (dtype == MSTPP_DTYPE_FLOAT32 ? 4 : 2);
    if (overlaps(x, tensor_bytes, y, tensor_bytes) || overlaps(workspace, L.bytes, x, tensor_bytes)
        || overlaps(workspace, L.bytes, y, tensor_bytes))
    {
        return MSTPP_ERR_OVERLAP;
    }
    auto const base = reinterpret_cast<uintptr_t>(workspace);
    char* const ws = reinterpret_cast<char*>((base + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        switch (C)
        {
        case 31:
            return launch_msa<T, Gram31, Msa31>(
                xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
        case 62:
            return launch_msa<T, Gram62, Msa62>(
                xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
        default:
            return launch_msa<T, Gram124, Msa124>(
                xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
        }
    });
}
