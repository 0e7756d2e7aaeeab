// Helpers shared by the fused block kernels (ffn.cu, msa.cu): compile-time tiling arithmetic, the exact GELU,
// and 4-byte cp.async staging.
#pragma once

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

} // namespace mstpp
