// L2 normalisation along the last dim of [rows, L], the q/k normalisation of MST++'s spectral attention:
// few rows (31 x heads x B) of a huge length (L = H*W, 249,856 at 512x488). One block per row would leave most
// of the GPU idle, so each row is split into chunks, one block per chunk, in two kernels:
//   pass 1: every block writes its chunk's sum of squares (float32) to workspace[row][chunk];
//   pass 2: every block sums its row's partials in a fixed order, then scales its chunk.
// No float atomics, so the result does not depend on scheduling. Pass 2 walks the blocks in reverse order:
// the chunks pass 1 read last are the likeliest to still be in L2, which saves DRAM reads of x.
//
// Rows need not be 16-byte aligned (L may be odd): each row splits into a scalar head up to the first aligned
// element, a body of 16-byte packs that the chunks share, and a scalar tail; chunk 0 also does head and tail.
#include <cmath>

#include "common.cuh"

namespace mstpp
{
namespace
{

constexpr int kThreads = 256;
constexpr int kUnroll = 4;          // packs in flight per thread and loop iteration
constexpr int64_t kMaxChunks = 256; // bounds the workspace and pass 2's per-block reduction of the partials
constexpr int kMinPacksPerChunk = kThreads;
constexpr int kMaxPacksPerChunk = kThreads * 8;
constexpr int kTargetBlocksPerSm = 16; // about two waves at 8 resident blocks of 256 threads per SM

// Where one row's head, packed body and tail are. kPack == 1 means unpacked (x and y differently aligned).
template <typename T, int kPack>
struct RowSplit
{
    int64_t head;  // leading elements before the first 16-byte boundary
    int64_t packs; // whole packs after the head
    int64_t tail;  // elements after the packs

    __device__ RowSplit(T const* row, int64_t L)
    {
        int64_t const misalign = (reinterpret_cast<uintptr_t>(row) / sizeof(T)) % kPack;
        head = misalign == 0 ? 0 : kPack - misalign;
        head = head < L ? head : L;
        packs = (L - head) / kPack;
        tail = L - head - packs * kPack;
    }
};

struct ChunkIndex
{
    int64_t row;
    int64_t chunk;
};

// Launch assumptions (both passes): blockDim.x == kThreads; gridDim.x == rows * chunks, chunks *
// packs_per_chunk covering the longest row body; x and y contiguous [rows, L], not overlapping, with
// (x - y) a multiple of 16 bytes when kPack > 1, so one split serves both.
template <typename T, int kPack>
__global__ void __launch_bounds__(kThreads) l2norm_partial_kernel(
    T const* __restrict__ x, float* __restrict__ partial, int64_t L, int64_t chunks, int64_t packs_per_chunk)
{
    ChunkIndex const at{blockIdx.x / chunks, blockIdx.x % chunks};
    T const* row = x + at.row * L;
    RowSplit<T, kPack> const split(row, L);
    T const* body = row + split.head;
    int64_t const begin = at.chunk * packs_per_chunk;
    int64_t const end = begin + packs_per_chunk < split.packs ? begin + packs_per_chunk : split.packs;

    float acc[kUnroll] = {};
    for (int64_t p0 = begin + threadIdx.x; p0 < end; p0 += kThreads * kUnroll)
    {
        Pack<T, kPack> buf[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            int64_t const p = p0 + u * kThreads;
            if (p < end)
            {
                buf[u] = load_pack<T, kPack>(body + p * kPack);
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            if (p0 + u * kThreads < end)
            {
#pragma unroll
                for (int i = 0; i < kPack; ++i)
                {
                    float const v = to_float(buf[u].v[i]);
                    acc[u] = fmaf(v, v, acc[u]);
                }
            }
        }
    }
    float sum = 0.0f;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
    {
        sum += acc[u];
    }
    if (at.chunk == 0)
    {
        int64_t const tail_start = split.head + split.packs * kPack;
        for (int64_t e = threadIdx.x; e < split.head + split.tail; e += kThreads)
        {
            float const v = to_float(row[e < split.head ? e : tail_start + (e - split.head)]);
            sum = fmaf(v, v, sum);
        }
    }
    sum = block_sum<kThreads>(sum);
    if (threadIdx.x == 0)
    {
        partial[at.row * chunks + at.chunk] = sum;
    }
}

template <typename T, int kPack>
__global__ void __launch_bounds__(kThreads) l2norm_scale_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ partial, int64_t L, int64_t chunks, int64_t packs_per_chunk, float eps)
{
    int64_t const linear = gridDim.x - 1 - blockIdx.x;
    ChunkIndex const at{linear / chunks, linear % chunks};

    __shared__ float s_scale;
    if (threadIdx.x < 32)
    {
        // Lane l sums partials l, l + 32, ... in order; the butterfly then fixes the order across lanes.
        float sum = 0.0f;
        for (int64_t c = threadIdx.x; c < chunks; c += 32)
        {
            sum += partial[at.row * chunks + c];
        }
        sum = warp_sum(sum);
        if (threadIdx.x == 0)
        {
            s_scale = 1.0f / fmaxf(sqrtf(sum), eps);
        }
    }
    __syncthreads();
    float const scale = s_scale;

    int64_t const offset = at.row * L;
    T const* xrow = x + offset;
    T* yrow = y + offset;
    RowSplit<T, kPack> const split(xrow, L);
    int64_t const begin = at.chunk * packs_per_chunk;
    int64_t const end = begin + packs_per_chunk < split.packs ? begin + packs_per_chunk : split.packs;
    for (int64_t p0 = begin + threadIdx.x; p0 < end; p0 += kThreads * kUnroll)
    {
        Pack<T, kPack> buf[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            int64_t const p = p0 + u * kThreads;
            if (p < end)
            {
                buf[u] = load_pack<T, kPack>(xrow + split.head + p * kPack);
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            int64_t const p = p0 + u * kThreads;
            if (p < end)
            {
#pragma unroll
                for (int i = 0; i < kPack; ++i)
                {
                    buf[u].v[i] = from_float<T>(to_float(buf[u].v[i]) * scale);
                }
                store_pack(yrow + split.head + p * kPack, buf[u]);
            }
        }
    }
    if (at.chunk == 0)
    {
        int64_t const tail_start = split.head + split.packs * kPack;
        for (int64_t e = threadIdx.x; e < split.head + split.tail; e += kThreads)
        {
            int64_t const i = e < split.head ? e : tail_start + (e - split.head);
            yrow[i] = from_float<T>(to_float(xrow[i]) * scale);
        }
    }
}

struct Plan
{
    int64_t chunks;
    int64_t packs_per_chunk;
};

// Chunk size: aim for kTargetBlocksPerSm blocks per SM in total, within [1, 8] packs per thread and at most
// kMaxChunks chunks per row (workspace bound).
Plan make_plan(int64_t rows, int64_t L, int pack, int sms)
{
    int64_t const packs = ceil_div(L, pack);
    int64_t const target_blocks = static_cast<int64_t>(sms) * kTargetBlocksPerSm;
    int64_t ppc = ceil_div(rows * packs, target_blocks);
    ppc = ceil_div(ppc, kThreads) * kThreads;
    ppc = ppc < kMinPacksPerChunk ? kMinPacksPerChunk : (ppc > kMaxPacksPerChunk ? kMaxPacksPerChunk : ppc);
    int64_t const min_ppc = ceil_div(packs, kMaxChunks);
    ppc = ppc < min_ppc ? min_ppc : ppc;
    return Plan{ceil_div(packs, ppc), ppc};
}

template <typename T, int kPack>
int launch(T const* x, T* y, int64_t rows, int64_t L, float eps, float* partial, int sms, cudaStream_t stream)
{
    Plan const plan = make_plan(rows, L, kPack, sms);
    if (rows > kMaxGridX / plan.chunks)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    unsigned const blocks = static_cast<unsigned>(rows * plan.chunks);
    l2norm_partial_kernel<T, kPack><<<blocks, kThreads, 0, stream>>>(x, partial, L, plan.chunks, plan.packs_per_chunk);
    int status = launch_status();
    if (status != MSTPP_OK)
    {
        return status;
    }
    l2norm_scale_kernel<T, kPack><<<blocks, kThreads, 0, stream>>>(
        x, y, partial, L, plan.chunks, plan.packs_per_chunk, eps);
    return launch_status();
}

} // namespace
} // namespace mstpp

extern "C" size_t mstpp_l2norm_workspace_size(int64_t rows, int64_t L)
{
    if (rows <= 0 || L <= 0)
    {
        return 0;
    }
    // make_plan never uses more chunks than this, whatever the dtype and SM count.
    int64_t const max_chunks = mstpp::ceil_div(L, mstpp::kMinPacksPerChunk);
    int64_t const chunks = max_chunks < mstpp::kMaxChunks ? max_chunks : mstpp::kMaxChunks;
    return static_cast<size_t>(rows * chunks) * sizeof(float);
}

extern "C" int mstpp_l2norm_rows(void const* x, void* y, int64_t rows, int64_t L, float eps, int dtype,
    void* workspace, void* stream)
{
    using namespace mstpp;
    if (rows < 0 || L < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    if (!(eps >= 0.0f) || !std::isfinite(eps))
    {
        return MSTPP_ERR_BAD_EPS;
    }
    if (rows == 0 || L == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || workspace == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    int status = MSTPP_OK;
    int const sms = device_sm_count(&status);
    if (status != MSTPP_OK)
    {
        return status;
    }
    float* partial = static_cast<float*>(workspace);
    cudaStream_t const s = as_stream(stream);
    bool const packed = (reinterpret_cast<uintptr_t>(x) - reinterpret_cast<uintptr_t>(y)) % kPackBytes == 0;
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        return packed ? launch<T, Pack<T>::kSize>(xt, yt, rows, L, eps, partial, sms, s)
                      : launch<T, 1>(xt, yt, rows, L, eps, partial, sms, s);
    });
}
