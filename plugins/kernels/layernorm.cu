// LayerNorm over the channel dim, for the two layouts MST++ has:
//   rows: x is [rows, C] (channels-last, what nn.LayerNorm sees inside MSAB),
//   NCHW: x is [B, C, HW] (normalise across C for every pixel, no permute).
//
// MST++'s shapes are "many items x few channels": ~250k items of C = 31, 62 or 124. Those widths get a tiled
// kernel; any other C in [1, 1024] takes a simple generic kernel.
//
// Tiled kernel: a block owns a tile of kTileItems items (rows or pixels). It copies the tile's raw bytes from
// global to shared memory with 16-byte packs (coalesced, whatever C is), lets G threads per item compute the
// statistics from shared memory (G = C / 31, so every thread holds 31 values in registers: two-pass mean and
// variance, no E[x^2] - E[x]^2 cancellation), writes the normalised values back in place, and copies the tile
// out with 16-byte packs. Global memory is touched exactly once per element each way.
//
// Bank conflicts in the compute phase: thread t reads channel (t % G) + k*G of item t / G.
//   rows layout  (item stride C, channel stride 1): C = 31*G is -G mod 32, so the 32/G items and G lanes of a
//                warp land on 32 distinct banks without padding.
//   NCHW layout  (item stride 1, channel stride P): P is padded to 32/G mod 32 for the same property.
#include <cmath>

#include "common.cuh"

namespace mstpp
{
namespace
{

constexpr int kTileItems = 64;

template <typename T, int C, int G, bool kNchw>
struct TileConfig
{
    static_assert(32 % G == 0 && kTileItems % (32 / G) == 0, "a warp must cover whole item groups");
    static constexpr int kThreads = kTileItems * G;
    static constexpr int kPerThread = (C + G - 1) / G;
    static constexpr int kPack = Pack<T>::kSize;
    static constexpr int kPixelStride = kTileItems + ((32 / G - kTileItems % 32) + 32) % 32;
    static constexpr int kItemStride = kNchw ? 1 : C;
    static constexpr int kChanStride = kNchw ? kPixelStride : 1;
    static constexpr int kSmemElems = kNchw ? C * kPixelStride : kTileItems * C;
    // Packs of a full tile; the shared tile and every channel row in it start 16-byte aligned.
    static constexpr int kPacksPerChan = kTileItems / kPack;
    static constexpr int kTilePacks = kNchw ? C * kPacksPerChan : kTileItems * C / kPack;
    static constexpr int kPackIters = (kTilePacks + kThreads - 1) / kThreads;
    static_assert((kTileItems * C * sizeof(T)) % kPackBytes == 0, "rows tiles must start 16-byte aligned");
    static_assert((kPixelStride * sizeof(T)) % kPackBytes == 0, "NCHW channel rows must be 16-byte aligned");
};

// Moves one tile between global memory (`gmem`: first element of the tile) and shared memory, in the direction
// kToShared says. Full tiles move as 16-byte packs, all loads of a thread issued before its stores so the
// memory system has several in flight; partial or misaligned tiles move element by element.
//   rows: the tile is n_items * C contiguous elements in both memories.
//   NCHW: channel c of the tile is n_items elements at gmem + c * hw and smem + c * kPixelStride.
template <typename Cfg, bool kNchw, bool kToShared, typename T, int C>
__device__ __forceinline__ void move_tile(T* smem, T* gmem, int n_items, int64_t hw, bool vec_ok)
{
    int const tid = threadIdx.x;
    if constexpr (!kNchw)
    {
        int const n = n_items * C;
        int packs = 0;
        if (vec_ok)
        {
            packs = n / Cfg::kPack;
            Pack<T> buf[Cfg::kPackIters];
#pragma unroll
            for (int i = 0; i < Cfg::kPackIters; ++i)
            {
                int const p = tid + i * Cfg::kThreads;
                if (p < packs)
                {
                    buf[i] = load_pack<T, Cfg::kPack>(kToShared ? gmem + p * Cfg::kPack : smem + p * Cfg::kPack);
                }
            }
#pragma unroll
            for (int i = 0; i < Cfg::kPackIters; ++i)
            {
                int const p = tid + i * Cfg::kThreads;
                if (p < packs)
                {
                    store_pack(kToShared ? smem + p * Cfg::kPack : gmem + p * Cfg::kPack, buf[i]);
                }
            }
        }
        for (int e = packs * Cfg::kPack + tid; e < n; e += Cfg::kThreads)
        {
            if (kToShared)
                smem[e] = gmem[e];
            else
                gmem[e] = smem[e];
        }
    }
    else if (vec_ok && n_items == kTileItems)
    {
        Pack<T> buf[Cfg::kPackIters];
#pragma unroll
        for (int i = 0; i < Cfg::kPackIters; ++i)
        {
            int const p = tid + i * Cfg::kThreads;
            if (p < Cfg::kTilePacks)
            {
                int const c = p / Cfg::kPacksPerChan;
                int const q = (p % Cfg::kPacksPerChan) * Cfg::kPack;
                buf[i] = load_pack<T, Cfg::kPack>(kToShared ? gmem + c * hw + q : smem + c * Cfg::kPixelStride + q);
            }
        }
#pragma unroll
        for (int i = 0; i < Cfg::kPackIters; ++i)
        {
            int const p = tid + i * Cfg::kThreads;
            if (p < Cfg::kTilePacks)
            {
                int const c = p / Cfg::kPacksPerChan;
                int const q = (p % Cfg::kPacksPerChan) * Cfg::kPack;
                store_pack(kToShared ? smem + c * Cfg::kPixelStride + q : gmem + c * hw + q, buf[i]);
            }
        }
    }
    else
    {
        for (int e = tid; e < C * n_items; e += Cfg::kThreads)
        {
            int const c = e / n_items;
            int const q = e - c * n_items;
            if (kToShared)
                smem[c * Cfg::kPixelStride + q] = gmem[c * hw + q];
            else
                gmem[c * hw + q] = smem[c * Cfg::kPixelStride + q];
        }
    }
}

// Launch assumptions: blockDim.x == Cfg::kThreads (64 * G); gridDim.x == images * tiles_per_image;
// x and y contiguous and not overlapping; vec_ok only if x and y are 16-byte aligned (and, for NCHW, hw is a
// multiple of the pack size). rows layout: images == 1, items == rows. NCHW: items == hw.
template <typename T, int C, int G, bool kNchw>
__global__ void __launch_bounds__(kTileItems* G) layernorm_tiled_kernel(T const* __restrict__ x,
    T* __restrict__ y, float const* __restrict__ gamma, float const* __restrict__ beta, int64_t items,
    int64_t tiles_per_image, float eps, bool vec_ok)
{
    using Cfg = TileConfig<T, C, G, kNchw>;
    __shared__ alignas(kPackBytes) T tile[Cfg::kSmemElems];
    __shared__ float s_gamma[C];
    __shared__ float s_beta[C];

    int64_t const image = blockIdx.x / tiles_per_image;
    int64_t const item0 = (blockIdx.x % tiles_per_image) * kTileItems;
    int const n_items = static_cast<int>(items - item0 < kTileItems ? items - item0 : kTileItems);
    int64_t const offset = kNchw ? image * C * items + item0 : item0 * C;

    for (int c = threadIdx.x; c < C; c += Cfg::kThreads)
    {
        s_gamma[c] = gamma[c];
        s_beta[c] = beta[c];
    }
    move_tile<Cfg, kNchw, true, T, C>(tile, const_cast<T*>(x) + offset, n_items, items, vec_ok);
    __syncthreads();

    int const item = threadIdx.x / G;
    int const lane = threadIdx.x % G;
    bool const valid = item < n_items;
    T* const row = tile + item * Cfg::kItemStride;
    constexpr float kInvC = 1.0f / C;

    // Items past the end of a partial tile compute on zeros: every lane must reach the group shuffles.
    float v[Cfg::kPerThread];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < Cfg::kPerThread; ++k)
    {
        int const j = lane + k * G;
        v[k] = (valid && j < C) ? to_float(row[j * Cfg::kChanStride]) : 0.0f;
        sum += v[k];
    }
    float const mean = group_sum<G>(sum) * kInvC;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < Cfg::kPerThread; ++k)
    {
        if (lane + k * G < C)
        {
            float const d = v[k] - mean;
            sq = fmaf(d, d, sq);
        }
    }
    float const rstd = rsqrtf(group_sum<G>(sq) * kInvC + eps);
    if (valid)
    {
#pragma unroll
        for (int k = 0; k < Cfg::kPerThread; ++k)
        {
            int const j = lane + k * G;
            if (j < C)
            {
                row[j * Cfg::kChanStride] = from_float<T>(fmaf((v[k] - mean) * rstd, s_gamma[j], s_beta[j]));
            }
        }
    }
    __syncthreads();
    move_tile<Cfg, kNchw, false, T, C>(tile, y + offset, n_items, items, vec_ok);
}

constexpr int kGenericThreads = 256;
constexpr int kGenericMaxPerLane = MSTPP_LAYERNORM_MAX_C / 32;

// Any C in [1, 1024], rows layout: one warp per row, each lane keeps up to 32 values in registers for an exact
// two-pass variance. Launch assumptions: blockDim.x == kGenericThreads, one row per warp, gridDim.x covers rows.
template <typename T>
__global__ void __launch_bounds__(kGenericThreads) layernorm_rows_generic_kernel(T const* __restrict__ x,
    T* __restrict__ y, float const* __restrict__ gamma, float const* __restrict__ beta, int64_t rows, int C,
    float eps)
{
    int const lane = threadIdx.x % 32;
    int64_t const r = static_cast<int64_t>(blockIdx.x) * (kGenericThreads / 32) + threadIdx.x / 32;
    if (r >= rows)
    {
        return; // uniform across the warp, so the shuffles below stay full-warp
    }
    T const* xr = x + r * C;
    T* yr = y + r * C;
    float v[kGenericMaxPerLane];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kGenericMaxPerLane; ++k)
    {
        int const j = lane + 32 * k;
        v[k] = j < C ? to_float(xr[j]) : 0.0f;
        sum += v[k];
    }
    float const mean = warp_sum(sum) / C;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kGenericMaxPerLane; ++k)
    {
        if (lane + 32 * k < C)
        {
            float const d = v[k] - mean;
            sq = fmaf(d, d, sq);
        }
    }
    float const rstd = rsqrtf(warp_sum(sq) / C + eps);
#pragma unroll
    for (int k = 0; k < kGenericMaxPerLane; ++k)
    {
        int const j = lane + 32 * k;
        if (j < C)
        {
            yr[j] = from_float<T>(fmaf((v[k] - mean) * rstd, gamma[j], beta[j]));
        }
    }
}

// Any C in [1, 1024], NCHW layout: one thread per pixel, reads coalesced across pixels. Welford's update keeps
// the statistics exact in one pass over the channels; the second pass re-reads x (mostly from L1/L2).
// Launch assumptions: blockDim.x == kGenericThreads; gridDim.x == B * blocks_per_image.
template <typename T>
__global__ void __launch_bounds__(kGenericThreads) layernorm_nchw_generic_kernel(T const* __restrict__ x,
    T* __restrict__ y, float const* __restrict__ gamma, float const* __restrict__ beta, int C, int64_t hw,
    int64_t blocks_per_image, float eps)
{
    int64_t const image = blockIdx.x / blocks_per_image;
    int64_t const p = (blockIdx.x % blocks_per_image) * kGenericThreads + threadIdx.x;
    if (p >= hw)
    {
        return;
    }
    T const* xp = x + image * C * hw + p;
    T* yp = y + image * C * hw + p;
    float mean = 0.0f;
    float m2 = 0.0f;
    for (int c = 0; c < C; ++c)
    {
        float const v = to_float(xp[c * hw]);
        float const d = v - mean;
        mean += d / static_cast<float>(c + 1);
        m2 = fmaf(d, v - mean, m2);
    }
    float const rstd = rsqrtf(m2 / C + eps);
    for (int c = 0; c < C; ++c)
    {
        float const v = to_float(xp[c * hw]);
        yp[c * hw] = from_float<T>(fmaf((v - mean) * rstd, gamma[c], beta[c]));
    }
}

template <typename T, int C, int G, bool kNchw>
int launch_tiled(T const* x, T* y, float const* gamma, float const* beta, int64_t images, int64_t items,
    float eps, cudaStream_t stream)
{
    using Cfg = TileConfig<T, C, G, kNchw>;
    int64_t const tiles_per_image = ceil_div(items, kTileItems);
    if (images > kMaxGridX / tiles_per_image)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    bool const vec_ok = is_aligned(x, kPackBytes) && is_aligned(y, kPackBytes) && (!kNchw || items % Cfg::kPack == 0);
    layernorm_tiled_kernel<T, C, G, kNchw><<<static_cast<unsigned>(images * tiles_per_image), Cfg::kThreads, 0,
        stream>>>(x, y, gamma, beta, items, tiles_per_image, eps, vec_ok);
    return launch_status();
}

template <typename T, bool kNchw>
int launch_generic(T const* x, T* y, float const* gamma, float const* beta, int64_t images, int C, int64_t items,
    float eps, cudaStream_t stream)
{
    if (!kNchw)
    {
        int64_t const blocks = ceil_div(items, kGenericThreads / 32);
        if (blocks > kMaxGridX)
        {
            return MSTPP_ERR_BAD_SHAPE;
        }
        layernorm_rows_generic_kernel<T><<<static_cast<unsigned>(blocks), kGenericThreads, 0, stream>>>(
            x, y, gamma, beta, items, C, eps);
        return launch_status();
    }
    int64_t const per_image = ceil_div(items, kGenericThreads);
    if (images > kMaxGridX / per_image)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    layernorm_nchw_generic_kernel<T><<<static_cast<unsigned>(images * per_image), kGenericThreads, 0, stream>>>(
        x, y, gamma, beta, C, items, per_image, eps);
    return launch_status();
}

// images x items x C: rows layout is (1, rows, C), NCHW is (B, HW, C).
template <bool kNchw>
int layernorm(void const* x, void* y, float const* gamma, float const* beta, int64_t images, int C, int64_t items,
    float eps, int dtype, void* stream)
{
    if (images < 0 || items < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    if (C < 1 || C > MSTPP_LAYERNORM_MAX_C)
    {
        return MSTPP_ERR_UNSUPPORTED_WIDTH;
    }
    if (!(eps >= 0.0f) || !std::isfinite(eps))
    {
        return MSTPP_ERR_BAD_EPS;
    }
    if (images == 0 || items == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || gamma == nullptr || beta == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        switch (C)
        {
        case 31: return launch_tiled<T, 31, 1, kNchw>(xt, yt, gamma, beta, images, items, eps, s);
        case 62: return launch_tiled<T, 62, 2, kNchw>(xt, yt, gamma, beta, images, items, eps, s);
        case 124: return launch_tiled<T, 124, 4, kNchw>(xt, yt, gamma, beta, images, items, eps, s);
        default: return launch_generic<T, kNchw>(xt, yt, gamma, beta, images, C, items, eps, s);
        }
    });
}

} // namespace
} // namespace mstpp

extern "C" int mstpp_layernorm_rows(void const* x, void* y, float const* gamma, float const* beta, int64_t rows,
    int C, float eps, int dtype, void* stream)
{
    return mstpp::layernorm<false>(x, y, gamma, beta, 1, C, rows, eps, dtype, stream);
}

extern "C" int mstpp_layernorm_nchw(void const* x, void* y, float const* gamma, float const* beta, int64_t B,
    int C, int64_t HW, float eps, int dtype, void* stream)
{
    return mstpp::layernorm<true>(x, y, gamma, beta, B, C, HW, eps, dtype, stream);
}
