// Helpers shared by the fused block kernels (ffn.cu, msa.cu): compile-time tiling arithmetic, the exact GELU,
// 4-byte cp.async staging, and the host side's shared-memory opt-in and overlap test.
#pragma once

#include <atomic>

#include "common.cuh"

namespace mstpp
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

// The erf form nn.GELU() uses (not the tanh approximation).
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

// Opts the kernel into more than 48 KB of dynamic shared memory, once per device (the attribute is set on the
// function for the current device; repeating it is harmless but costs a driver call).
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

// Whether the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share an address.
inline bool overlaps(void const* a, size_t a_bytes, void const* b, size_t b_bytes)
{
    auto const pa = reinterpret_cast<uintptr_t>(a);
    auto const pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

} // namespace mstpp
