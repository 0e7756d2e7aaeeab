// The per-image small kernels of the attention: logits and norms from S (or directly for tiny images), softmax and the fold M = Wproj . blockdiag(A) . Wv.
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

namespace mstpp
{
namespace
{

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


} // namespace
} // namespace mstpp
