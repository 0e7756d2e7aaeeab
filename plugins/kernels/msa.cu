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
// Precision (FP32 storage). Everything is float32 FMA (no TF32/tensor cores): the Gram matrix (per-thread sequential
// sums over each block's pixels, then a fixed-order tree over thread groups, then a fixed-order sum over blocks),
// the d x d logits and norms, the softmax (expf), the fold of M, and pass 2. No atomics anywhere, so results are
// bitwise reproducible. The Gram form rounds differently from PyTorch's q/k path and squares the conditioning of the
// norms (normal equations vs. the projection itself): a row of k whose values mostly cancel, ||Wk_i x|| << ||Wk_i||
// ||x||, gets a relative error of about eps_fp32 * (||Wk_i|| ||x|| / ||Wk_i x||)^2 in its norm and numerators
// instead of eps_fp32 * ||Wk_i|| ||x|| / ||Wk_i x||. Measured on CPU with this arithmetic, relative to max|y|:
// 2e-7..6e-7 on random O(1) data (PyTorch float32: ~2e-7), 2e-6..4e-6 on strongly channel-correlated data at 64x64,
// and up to 5e-3 for a single pixel (S of rank one), hence the direct path for N <= 32. Near-flat images (all pixels
// almost equal) are rank-one-like too and remain the weak case. Since a cosine is in [-1, 1] exactly, the fold
// kernel clamps it there: a norm that cancelled to ~0 cannot blow a logit up.
//
// Tensor-core path (FP16 / BF16 storage; FP32 storage keeps the path above, no TF32). mstpp_msa_nchw dispatches on
// dtype; the C ABI and the workspace query are unchanged (the workspace holds both paths' regions).
//   1. gram_tc + gram_reduce_tc: S = X X^T with mma.m16n8k16 (16-bit operands, float32 accumulate). The operands
//      are the stored x values themselves, and a product of two 16-bit values is exact in float32, so only the
//      order of the float32 additions changes (inside the tensor core, then per warp over k-steps, then the fixed
//      order over pixel groups and over blocks as before): deterministic. Only the tiles on or above the diagonal
//      are computed and the reduction mirrors them, so S is exactly symmetric.
//   2. attn_logits / attn_direct and the softmax as above; attn_fold<C, T> writes M = Wproj . blockdiag(A) . Wv
//      rounded to T, and Wv rounded to T, as ready-made A fragments (16 bytes per lane per 16 x 16 tile).
//   3. msa_tc: per tile, x over the halo in shared memory as raw 16-bit values, pixel-major (a B fragment
//      register is two consecutive channels of one pixel); GEMM2 (M x over the output pixels) runs first and
//      writes x + bproj + M x (float32) to a tile buffer; then per chunk of 16 v channels GEMM1 (v = Wv x over
//      the halo, float32 out of the accumulators) -> dw1 + GELU -> dw2, added to the tile buffer, all float32 on
//      CUDA cores as in the FP32 path (the same depthwise code). C = 31 / 62 are zero-padded to 32 / 64 (the
//      padding channels of x are zeroed in shared memory, those of M / Wv in the fold). Wv x and M x are not
//      stacked into one [2C x C] GEMM: M x is needed only at the TH x TW output pixels, v on the whole halo
//      (1.8-2.3x as many), so stacking would add M x work on the halo, and keeping GEMM2 separate lets its
//      epilogue (+ x + bproj) stay in registers.
//   mma.sync rather than nvcuda::wmma: the m16n8k16 fragment layouts are specified (PTX ISA), so the operands are
//   read straight from layouts chosen for the rest of the kernel (B fragments from the pixel-major x tile through
//   conflict-free 32-bit loads, including the gathered output pixels of GEMM2; A fragments pre-packed once per
//   image by the fold), and the accumulators are consumed in registers (float2 stores of v, the residual / bias
//   epilogue, the Gram partials stored fragment-wise) instead of going through store_matrix_sync's opaque layout
//   and an extra shared-memory round trip. wmma's fragment layout is unspecified, and its 16x16x16 shape would
//   waste half of the n = 8 tiles that the halo / output pixel counts (multiples of 8, not 16) fill exactly. The
//   fragment indexing was checked on the CPU by an emulation of the PTX fragment tables (mma16.cuh).
// Precision of the tensor-core path: the Gram matrix as for FP32 (exact products, float32 sums). Wv and M enter
// the mma as 16-bit values: each element is rounded by at most u |w| (u = 2^-11 FP16, 2^-8 BF16), so M x moves by
// at most u sum_c |M_oc x_c| and v by u sum_c |Wv_jc x_c| (then through dw1, GELU, dw2). Typical errors are
// ~u sqrt(C) |M||x| (random rounding signs), i.e. of the order of the storage rounding of y itself (u |y|),
// which is why the operands may be rounded to the storage type; tests/test_kernels_msa.py derives and checks both
// bounds. FP16 operands cannot overflow for trained weights (|M|, |Wv| << 65504); elements below 2^-24 flush to 0.
//
// Why FP16 / BF16 storage was slower than FP32 on the FP32-math path (0.286 vs 0.220 ms at C = 31, H100): not the
// conversions and not the shared-memory layout. SASS of this file before the tensor-core path (sm_90,
// cuobjdump): msa_fused<half, C = 31> has 2480 instructions vs 2464 for float (8 HADD2.F32 conversions in the x
// load, 5 F2FP packs in the y store), the same 128 registers and no spills; gram_partial 664 vs 656; both convert
// on load, so shared memory holds the same float layout. What stays the same is the number of global accesses:
// every x / y access is a scalar 2-byte LDG.U16 / STG.U16, i.e. as many load/store instructions, L1 wavefronts
// and 32-byte sectors per request as in FP32 (the Gram staging reads 16-byte half-sector runs per channel, each
// sector fetched twice; pass-2 tile rows are 24..32-byte runs straddling sectors; the y stores are 2-byte
// partial-sector writes), so halving the bytes saves nothing in the LSU / L1 / L2 transaction counts that bound
// these loops, and the partial-sector writes of y (byte-masked in L2, read-modify-write when a sector leaves L2
// partly written) are the likely extra cost. Not measured here (no GPU); ncu would confirm with
// l1tex__t_sectors_pipe_lsu_mem_global_op_{ld,st}.sum, lts__t_sectors_srcunit_tex_op_write.sum and
// dram__bytes_{read,write}.sum of msa_fused_kernel, float vs half. The tensor-core path moves the same scalar
// 2-byte accesses, but no longer spends ~2/3 of its issue slots on FP32 GEMM FMAs and their shared-memory loads.
//
// Cost model of the tensor-core path (C = 31 at 512 x 488, b = 1, N = 249856 pixels; H100: 132 SMs, ~3 TB/s
// achievable DRAM, 4 warp-instructions / clock / SM at ~1.75 GHz = ~0.92e12 warp-instructions / s):
//   bytes: x read twice (2 x 15.5 MB; the pass-2 halo re-reads mostly hit L2), y written (15.5 MB): 46.5 MB,
//          ~0.015 ms (FP32: 93 MB, ~0.03 ms)
//   tensor FLOPs (padded to 32 channels): Gram 6 of 8 tiles = 1.5 kFLOP / px, GEMM1 2 x 32 x 32 x 1.78 halo = 3.6
//          kFLOP / px, GEMM2 2 kFLOP / px: 1.8 GFLOP, a few microseconds of mma.sync
//   CUDA-core instructions per output pixel (thread-level): dw1 392 FMA + 43 GELU (~20 each) = ~1250, dw2 288,
//          shared-memory loads of the depthwise passes ~250, x halo load (55 elements x ~12) ~660, y store ~250,
//          fragment loads / epilogues ~150: ~2900 / px, 22.6 M warp-instructions, 0.025 ms at full issue rate
//   predicted: pass 2 ~0.035-0.045 ms (the FP32 path runs at ~1/2-1/3 of its issue bound; assume 60-70% here), Gram
//          ~0.007 ms (memory), reduce + logits + fold + launch gaps ~0.012 ms: ~0.055-0.065 ms per block at
//          C = 31 level 0 (vs 0.286 FP16 / 0.220 FP32 now), C = 62 256 x 244 ~0.045 ms, C = 124 128 x 122
//          ~0.04 ms (fixed per-launch costs dominate there). Unverified prediction: compile-checked only.
//
// x and y must not overlap (tiles read their halo from pixels other tiles write), nor may the workspace
// overlap either of them (MSTPP_ERR_OVERLAP).
#include <atomic>
#include <climits>
#include <cmath>
#include <type_traits>

#include "block_common.cuh"
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
template <int C>
struct LogitsSmem
{
    static constexpr int kWarps = kSmallThreads / 32;
    static constexpr int kS = 0;                    // S of the image, [C][C]
    static constexpr int kW = kS + C * C;           // each warp's row of Wk / Wq, [kWarps][C]
    static constexpr int kT = kW + kWarps * C;      // each warp's row of T, [kWarps][C]
    static constexpr int kBytes = (kT + kWarps * C) * static_cast<int>(sizeof(float));
};

template <int C>
__global__ void __launch_bounds__(kSmallThreads) attn_logits_kernel(float const* __restrict__ gram,
    float const* __restrict__ wq, float const* __restrict__ wk, float* __restrict__ raw, float* __restrict__ nk2,
    float* __restrict__ nq2, int blocks_per_image)
{
    using L = LogitsSmem<C>;
    constexpr int d = kHeadDim;
    constexpr int CW = cdiv(C, 32);
    extern __shared__ float smem[];
    int const image = blockIdx.x / blocks_per_image;
    int const warp = threadIdx.x / 32;
    int const r = (blockIdx.x - image * blocks_per_image) * L::kWarps + warp;
    int const lane = threadIdx.x % 32;
    float const* const s = gram + static_cast<int64_t>(image) * C * C;
    float* const ss = smem + L::kS;
    for (int e = threadIdx.x; e < C * C; e += kSmallThreads)
    {
        cp_async4(ss + e, s + e, true);
    }
    cp_async_wait_all();
    __syncthreads();
    if (r >= 2 * C)
    {
        return; // whole warp: r is uniform across it (and no block-wide barrier follows)
    }
    bool const is_k = r < C;
    int const row = is_k ? r : r - C;
    float const* const w = (is_k ? wk : wq) + row * C;
    float* const ws = smem + L::kW + warp * C;
    float* const ts = smem + L::kT + warp * C;
    for (int c = lane; c < C; c += 32)
    {
        ws[c] = __ldg(w + c);
    }
    __syncwarp();

    float t[CW];
#pragma unroll
    for (int m = 0; m < CW; ++m)
    {
        t[m] = 0.0f;
    }
#pragma unroll 4
    for (int k = 0; k < C; ++k)
    {
        float const wv = ws[k];
        float const* const srow = ss + k * C;
#pragma unroll
        for (int m = 0; m < CW; ++m)
        {
            int const c = lane + 32 * m;
            if (c < C)
            {
                t[m] = fmaf(wv, srow[c], t[m]);
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
            part = fmaf(t[m], ws[c], part);
            ts[c] = t[m];
        }
    }
    float const norm2 = warp_sum(part);
    if (lane == 0)
    {
        (is_k ? nk2 : nq2)[static_cast<int64_t>(image) * C + row] = norm2;
    }
    if (is_k)
    {
        __syncwarp(); // ts complete
        if (lane < d)
        {
            // raw[row][lane] = T . Wq[h d + lane]: each lane reads its own row of Wq (contiguous, L1-cached).
            float const* const qrow = wq + (row / d * d + lane) * C;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 2
            for (int c = 0; c + 4 <= C; c += 4)
            {
#pragma unroll
                for (int u = 0; u < 4; ++u)
                {
                    acc[u] = fmaf(ts[c + u], __ldg(qrow + c + u), acc[u]);
                }
            }
#pragma unroll
            for (int c = C / 4 * 4; c < C; ++c)
            {
                acc[0] = fmaf(ts[c], __ldg(qrow + c), acc[0]);
            }
            raw[(static_cast<int64_t>(image) * C + row) * d + lane] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
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
// T = __half / __nv_bfloat16 (the tensor-core path) instead stores M rounded to T as ready-made mma A fragments,
// frag + (1 + image) * CP * CP (mma16::packed_a_index), and the blocks of image 0 store Wv the same way at frag.
// Everything the block reads (Wv, the image's logits and squared norms, its 8 rows of Wproj) is copied into shared
// memory in one burst of cp.async first; the loops then run on shared memory (see attn_logits_kernel).
// Launch assumptions: blockDim.x == kSmallThreads; gridDim.x == B * (CP / 8); frag != nullptr unless T is float;
// dynamic shared memory FoldSmem<C>::kBytes.
template <int C>
struct FoldSmem
{
    static constexpr int kWarps = kSmallThreads / 32;
    static constexpr int CP = round_up(C, 32);
    static constexpr int kWv = 0;                          // Wv, [C][C]
    static constexpr int kAttn = kWv + C * C;              // raw logits, then A in place, [C][kHeadDim]
    static constexpr int kNk = kAttn + C * kHeadDim;       // squared norms of k, [C]
    static constexpr int kNq = kNk + C;                    // squared norms of q, then the clamped norms, [C]
    static constexpr int kProj = kNq + C;                  // the block's rows of Wproj, [kWarps][C]
    static constexpr int kPs = kProj + kWarps * C;         // P rows, [kWarps][CP]
    static constexpr int kMs = kPs + kWarps * CP;          // M rows, [kWarps][CP + 1]
    static constexpr int kBytes = (kMs + kWarps * (CP + 1)) * static_cast<int>(sizeof(float));
};

template <int C, typename T>
__global__ void __launch_bounds__(kSmallThreads) attn_fold_kernel(float const* __restrict__ raw,
    float const* __restrict__ nk2, float const* __restrict__ nq2, float const* __restrict__ rescale,
    float const* __restrict__ wproj, float const* __restrict__ wv, float* __restrict__ mt,
    uint16_t* __restrict__ frag)
{
    using L = FoldSmem<C>;
    constexpr int d = kHeadDim;
    constexpr int CP = L::CP;
    constexpr int CW = CP / 32;
    constexpr int kWarps = L::kWarps;
    constexpr int kBlocksPerImage = CP / kWarps;
    static_assert(C <= kSmallThreads, "one thread per softmax row");
    extern __shared__ float smem[];
    float* const wvs = smem + L::kWv;
    float* const attn = smem + L::kAttn;
    float* const nks = smem + L::kNk;
    float* const nqs = smem + L::kNq;
    float* const proj = smem + L::kProj;
    float (*const ps)[CP] = reinterpret_cast<float (*)[CP]>(smem + L::kPs);
    float (*const ms)[CP + 1] = reinterpret_cast<float (*)[CP + 1]>(smem + L::kMs);

    int const tid = threadIdx.x;
    int const image = blockIdx.x / kBlocksPerImage;
    int const o0 = (blockIdx.x - image * kBlocksPerImage) * kWarps;
    int64_t const ic = static_cast<int64_t>(image) * C;

    for (int e = tid; e < C * C; e += kSmallThreads)
    {
        cp_async4(wvs + e, wv + e, true);
    }
    for (int e = tid; e < C * d; e += kSmallThreads)
    {
        cp_async4(attn + e, raw + ic * d + e, true);
    }
    for (int e = tid; e < C; e += kSmallThreads)
    {
        cp_async4(nks + e, nk2 + ic + e, true);
        cp_async4(nqs + e, nq2 + ic + e, true);
    }
    for (int e = tid; e < kWarps * C; e += kSmallThreads)
    {
        int const o = o0 + e / C;
        cp_async4(proj + e, o < C ? wproj + o * C + e % C : wproj, o < C); // rows past C: zeros, nothing read
    }
    cp_async_wait_all();
    __syncthreads();
    if (tid < C)
    {
        nqs[tid] = norm_from_square(nqs[tid]); // once per q row instead of once per (k row, q row) pair
    }
    __syncthreads();

    // ---- softmax rows: A[r][j] = softmax_j(rescale[h] * raw[r][j] / (max(|k_r|, eps) * max(|q_hd+j|, eps))),
    //      in place over the row of logits (each thread reads its whole row before writing it)
    if (tid < C)
    {
        int const h = tid / d;
        float const nk = norm_from_square(nks[tid]);
        float const scale = rescale[h];
        float* const row = attn + tid * d;
        float z[d];
        float zmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < d; ++j)
        {
            // kn . qn is a cosine: |.| <= 1 exactly. Through the Gram matrix a norm can lose most of its digits
            // (see the header), so keep the rounding error from pushing the logit outside [-rescale, rescale].
            float cosine = row[j] / (nk * nqs[h * d + j]);
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
            row[j] = z[j] / sum;
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
                float const* const prow = proj + w * C + h * d;
                float const* const acol = attn + h * d * d + jj;
                float p = 0.0f;
#pragma unroll 8
                for (int i = 0; i < d; ++i)
                {
                    p = fmaf(prow[i], acol[i * d], p);
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
                    acc[m] = fmaf(p, wvs[jp * C + c], acc[m]);
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
    if constexpr (std::is_same_v<T, float>)
    {
        float* const mti = mt + static_cast<int64_t>(image) * CP * CP;
        for (int e = tid; e < CP * kWarps; e += kSmallThreads)
        {
            int const c = e / kWarps;
            int const oo = e - c * kWarps;
            mti[c * CP + o0 + oo] = ms[oo][c];
        }
    }
    else
    {
        constexpr int KT = CP / 16;
        uint16_t* const fm = frag + static_cast<int64_t>(1 + image) * CP * CP;
        for (int e = tid; e < CP * kWarps; e += kSmallThreads)
        {
            int const oo = e / CP;
            int const c = e - oo * CP;
            int const o = o0 + oo;
            int const at = mma16::packed_a_index(o, c, KT);
            fm[at] = mma16::to_bits<T>(ms[oo][c]); // 0 in the padding rows / columns
            if (image == 0)
            {
                frag[at] = mma16::to_bits<T>(o < C && c < C ? wvs[o * C + c] : 0.0f);
            }
        }
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

// ps[j][r * TW + c] = sum_{a,b} wd2[j][a][b] * ts[j][(r + a) * HTW1 + c + b] for the output pixels (added to
// ps when kAdd).
template <typename Cfg, bool kAdd = false>
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
                    if constexpr (kAdd)
                    {
                        op[r * Cfg::TW] += o[r];
                    }
                    else
                    {
                        op[r * Cfg::TW] = o[r];
                    }
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
};

// Tiles as in MsaConfig where they fit (x now takes half the bytes, v/dw buffers hold K = 16 channels):
//   C = 31:  12 x 12 tile, 1763 blocks at 512x488, 2 chunks, 71 KB (3 blocks per SM on H100)
//   C = 62:   8 x 16 tile,  512 blocks at 256x244, 4 chunks, 97 KB (2 per SM)
//   C = 124:  8 x  8 tile,  256 blocks at 128x122, 8 chunks, 92 KB (2 per SM)
using MsaTc31 = MsaTcConfig<31, 12, 12, 14, 12, 3>;
using MsaTc62 = MsaTcConfig<62, 8, 16, 5, 8, 2>;
using MsaTc124 = MsaTcConfig<124, 8, 8, 10, 8, 2>;

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
                float* const vp = vs + nt * 8 + mma16::c_col(lane, 0);
                *reinterpret_cast<float2*>(vp + mma16::c_row(lane, 0) * Cfg::NH2P) = make_float2(d[0], d[1]);
                *reinterpret_cast<float2*>(vp + mma16::c_row(lane, 2) * Cfg::NH2P) = make_float2(d[2], d[3]);
            }
        }
        cp_async_wait_all();
        __syncthreads(); // vs complete; the chunk's depthwise kernels landed; (chunk 0) GEMM2's outs written
        depthwise1_gelu<Cfg>(vs, wd1s, ts, y0, x0, H, W);
        __syncthreads(); // ts complete; vs free for the next GEMM1
        depthwise2<Cfg, true>(ts, wd2s, outs + j0 * NOP);
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

// =============================================================================================================
// Host side.

constexpr size_t kWorkspaceAlign = 256;

size_t align_bytes(size_t n)
{
    return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Workspace regions (byte offsets from the 256-byte-aligned base), all float32:
//   partial [B][nblk][kPartialFloats]   per-block Gram tiles (sized for an upper bound of nblk, see below)
//   gram    [B][C][C]                    S
//   raw     [B][C][31]                   logits numerators of every row with its head's columns
//   nk2     [B][C], nq2 [B][C]           squared norms of the rows of k and q
//   mt      [B][CP][CP]                  M transposed, zero-padded (FP32 path)
//   frag    [1 + B][CP * CP] 16-bit      Wv, then M of each image, as packed mma A fragments (tensor-core path)
// The workspace query has no dtype, so the layout holds both paths' regions (partial: the larger of the two
// partial layouts; frag adds (1 + B) * CP^2 * 2 bytes). `bytes` includes kWorkspaceAlign of slack so that any base
// pointer can be aligned up.
struct MsaLayout
{
    GramPlan plan;
    int gram_blocks_per_image;    // gram_reduce blocks per image
    int gram_tc_blocks_per_image; // gram_reduce_tc blocks per image
    size_t partial, gram, raw, nk2, nq2, mt, frag, bytes;
};

template <typename G, typename GT>
MsaLayout msa_layout(int64_t B, int64_t N)
{
    static_assert(G::C == GT::C && G::CP == GT::CP && G::P == GT::P
            && G::kMaxBlocksPerImage == GT::kMaxBlocksPerImage,
        "both Gram passes share one GramPlan");
    constexpr int C = G::C;
    constexpr int kPartialFloats = cmax(G::kPartialFloats, GT::kPartialFloats);
    MsaLayout L{};
    L.plan = gram_plan<G>(N);
    L.gram_blocks_per_image = cdiv(G::kPartialFloats, kSmallThreads);
    L.gram_tc_blocks_per_image = cdiv(GT::kPartialFloats, kSmallThreads);
    size_t off = 0;
    auto region = [&](size_t floats) {
        size_t const at = off;
        off += align_bytes(floats * sizeof(float));
        return at;
    };
    size_t const b = static_cast<size_t>(B);
    // The partials are sized for min(chunks of P pixels, kMaxBlocksPerImage) blocks, an upper bound of plan.nblk
    // that never decreases with N (plan.nblk itself drops, e.g. from 256 to 129 blocks when C = 31 and N passes
    // 65536): the size for the largest shape of a range then covers every smaller shape, which is how TensorRT
    // sizes a plugin's workspace (for the profile's max shape).
    int64_t const chunks = ceil_div(N, static_cast<int64_t>(G::P));
    size_t const nblk_bound = static_cast<size_t>(chunks < G::kMaxBlocksPerImage ? chunks : G::kMaxBlocksPerImage);
    L.partial = region(b * nblk_bound * kPartialFloats);
    L.gram = region(b * C * C);
    L.raw = region(b * C * kHeadDim);
    L.nk2 = region(b * C);
    L.nq2 = region(b * C);
    L.mt = region(b * G::CP * G::CP);
    L.frag = region(((b + 1) * G::CP * G::CP + 1) / 2); // 16-bit elements, counted in floats
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
    case 31: *out = msa_layout<Gram31, GramTc31>(B, N); break;
    case 62: *out = msa_layout<Gram62, GramTc62>(B, N); break;
    case 124: *out = msa_layout<Gram124, GramTc124>(B, N); break;
    default: return false;
    }
    return out->plan.nblk <= kMaxGridX / B;
}

// Opts the per-image kernels (logits, fold) into their dynamic shared memory, once per device and instantiation
// (S and Wv alone take 61.5 KB at C = 124).
template <int C, typename T>
int allow_per_image_smem()
{
    static std::atomic<uint64_t> logits_done{0};
    static std::atomic<uint64_t> fold_done{0};
    int const status = allow_smem(attn_logits_kernel<C>, LogitsSmem<C>::kBytes, logits_done);
    return status != MSTPP_OK ? status : allow_smem(attn_fold_kernel<C, T>, FoldSmem<C>::kBytes, fold_done);
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
    if (status == MSTPP_OK)
    {
        status = allow_per_image_smem<C, float>(); // the fold launched below is attn_fold_kernel<C, float>
    }
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
        attn_logits_kernel<C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, LogitsSmem<C>::kBytes,
            stream>>>(
            gram, wq, wk, raw, nk2, nq2, kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    attn_fold_kernel<C, float><<<static_cast<unsigned>(B * kFoldBlocks), kSmallThreads, FoldSmem<C>::kBytes,
        stream>>>(
        raw, nk2, nq2, rescale, wproj, wv, mt, nullptr);
    if ((status = launch_status()) != MSTPP_OK)
    {
        return status;
    }
    fused<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(x, y, wv, mt, bproj,
        wpos1, wpos2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x),
        static_cast<int>(per_image));
    return launch_status();
}

// The tensor-core path (16-bit T): the same stream order with gram_tc / gram_reduce_tc, the fold packing M and Wv
// as T fragments, and msa_tc_kernel. Images of at most kDirectMaxPixels pixels use attn_direct as above.
template <typename T, typename GT, typename Cfg>
int launch_msa_tc(T const* x, T* y, float const* wq, float const* wk, float const* wv, float const* rescale,
    float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B, int64_t H, int64_t W,
    char* ws, MsaLayout const& L, cudaStream_t stream)
{
    static_assert(GT::C == Cfg::C && GT::CP == Cfg::CP, "one channel count");
    constexpr int C = Cfg::C;
    int64_t const N = H * W;
    int64_t const tiles_x = ceil_div(W, Cfg::TW);
    int64_t const per_image = ceil_div(H, Cfg::TH) * tiles_x;
    constexpr int kLogitBlocks = cdiv(2 * C, kSmallThreads / 32);
    constexpr int kFoldBlocks = Cfg::CP / (kSmallThreads / 32);
    if (per_image > kMaxGridX || B > kMaxGridX / per_image || B * L.gram_tc_blocks_per_image > kMaxGridX
        || B * kLogitBlocks > kMaxGridX || B * kFoldBlocks > kMaxGridX)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    float* const partial = reinterpret_cast<float*>(ws + L.partial);
    float* const gram = reinterpret_cast<float*>(ws + L.gram);
    float* const raw = reinterpret_cast<float*>(ws + L.raw);
    float* const nk2 = reinterpret_cast<float*>(ws + L.nk2);
    float* const nq2 = reinterpret_cast<float*>(ws + L.nq2);
    uint16_t* const frag = reinterpret_cast<uint16_t*>(ws + L.frag);
    uint16_t const* const xbits = reinterpret_cast<uint16_t const*>(x);

    static std::atomic<uint64_t> smem_done{0};
    auto fused = msa_tc_kernel<T, Cfg>;
    int status = allow_smem(fused, Cfg::kSmemBytes, smem_done);
    if (status == MSTPP_OK)
    {
        status = allow_per_image_smem<C, T>();
    }
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
        gram_tc_kernel<T, GT><<<static_cast<unsigned>(B * nblk), GT::kThreads, 0, stream>>>(
            xbits, partial, N, nblk, L.plan.ppb);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        gram_reduce_tc_kernel<GT>
            <<<static_cast<unsigned>(B * L.gram_tc_blocks_per_image), kSmallThreads, 0, stream>>>(
                partial, gram, nblk, L.gram_tc_blocks_per_image);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        attn_logits_kernel<C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, LogitsSmem<C>::kBytes,
            stream>>>(
            gram, wq, wk, raw, nk2, nq2, kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    attn_fold_kernel<C, T><<<static_cast<unsigned>(B * kFoldBlocks), kSmallThreads, FoldSmem<C>::kBytes,
        stream>>>(
        raw, nk2, nq2, rescale, wproj, wv, nullptr, frag);
    if ((status = launch_status()) != MSTPP_OK)
    {
        return status;
    }
    fused<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(xbits, y, frag, bproj,
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
    // FP32 storage: the exact FP32 FMA path. FP16 / BF16 storage: the tensor-core path.
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        if constexpr (std::is_same_v<T, float>)
        {
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
        }
        else
        {
            switch (C)
            {
            case 31:
                return launch_msa_tc<T, GramTc31, MsaTc31>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            case 62:
                return launch_msa_tc<T, GramTc62, MsaTc62>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            default:
                return launch_msa_tc<T, GramTc124, MsaTc124>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            }
        }
    });
}
