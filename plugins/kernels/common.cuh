// Helpers shared by the MST++ kernels: storage <-> float conversion, 16-byte packs, group reductions,
// argument checks and launch bookkeeping. Device code only touches memory through these helpers, so the
// kernels stay written in float and the storage type is a template parameter.
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "mstpp_kernels.h"

namespace mstpp
{

// ---------------------------------------------------------------------------------------------------------
// Storage type <-> float

__device__ __forceinline__ float to_float(float v)
{
    return v;
}
__device__ __forceinline__ float to_float(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

// ---------------------------------------------------------------------------------------------------------
// 16-byte packs: the widest load/store a thread can issue, and what saturates DRAM with the fewest instructions.

constexpr int kPackBytes = 16;

// N elements moved as one access of N * sizeof(T) bytes; the default N fills 16 bytes. N == 1 is the
// unpacked fallback for pointers that are not suitably aligned.
template <typename T, int N = kPackBytes / static_cast<int>(sizeof(T))>
struct alignas(sizeof(T) * N) Pack
{
    static constexpr int kSize = N;
    T v[N];
};

// `p` must be aligned to sizeof(Pack<T, N>) (global or shared memory).
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(T const* p)
{
    Pack<T, N> out;
    if constexpr (sizeof(out) == kPackBytes)
    {
        uint4 const raw = *reinterpret_cast<uint4 const*>(p);
        memcpy(&out, &raw, kPackBytes);
    }
    else
    {
        out = *reinterpret_cast<Pack<T, N> const*>(p);
    }
    return out;
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, Pack<T, N> const& pack)
{
    if constexpr (sizeof(pack) == kPackBytes)
    {
        uint4 raw;
        memcpy(&raw, &pack, kPackBytes);
        *reinterpret_cast<uint4*>(p) = raw;
    }
    else
    {
        *reinterpret_cast<Pack<T, N>*>(p) = pack;
    }
}

__host__ __device__ inline bool is_aligned(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// ---------------------------------------------------------------------------------------------------------
// Reductions. All lanes of the warp must call these (full shuffle mask), even lanes with no data.

// Sum over aligned groups of kGroup consecutive lanes (kGroup a power of two <= 32); every lane gets its
// group's total. The butterfly order is fixed, so the result is reproducible.
template <int kGroup>
__device__ __forceinline__ float group_sum(float v)
{
    static_assert(kGroup >= 1 && kGroup <= 32 && (kGroup & (kGroup - 1)) == 0, "group must be a power of two");
#pragma unroll
    for (int offset = kGroup / 2; offset > 0; offset /= 2)
    {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    return group_sum<32>(v);
}

// Sum over the block; the total is returned to every thread. kThreads is the block size, a multiple of 32.
// Contains __syncthreads(), so every thread of the block must call it.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v)
{
    static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be a multiple of the warp size");
    constexpr int kWarps = kThreads / 32;
    __shared__ float warp_totals[kWarps];
    __shared__ float total;
    int const lane = threadIdx.x % 32;
    int const warp = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0)
    {
        warp_totals[warp] = v;
    }
    __syncthreads();
    if (warp == 0)
    {
        float w = lane < kWarps ? warp_totals[lane] : 0.0f;
        w = warp_sum(w);
        if (lane == 0)
        {
            total = w;
        }
    }
    __syncthreads();
    return total;
}

// ---------------------------------------------------------------------------------------------------------
// Host side

// Number of SMs of the current device (cached per device). Returns 0 and sets *status on failure.
int device_sm_count(int* status);

// Status of the kernel launch just made: cudaGetLastError() as an mstpp return code.
inline int launch_status()
{
    return static_cast<int>(cudaGetLastError());
}

inline bool valid_dtype(int dtype)
{
    return dtype == MSTPP_DTYPE_FLOAT32 || dtype == MSTPP_DTYPE_FLOAT16 || dtype == MSTPP_DTYPE_BFLOAT16;
}

inline cudaStream_t as_stream(void* stream)
{
    return static_cast<cudaStream_t>(stream);
}

// Calls fn(T{}) with T the storage type named by dtype; the caller has validated dtype.
template <typename Fn>
int dispatch_dtype(int dtype, Fn&& fn)
{
    switch (dtype)
    {
    case MSTPP_DTYPE_FLOAT16: return fn(__half{});
    case MSTPP_DTYPE_BFLOAT16: return fn(__nv_bfloat16{});
    default: return fn(float{});
    }
}

inline int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

constexpr int64_t kMaxGridX = 2147483647;

} // namespace mstpp
