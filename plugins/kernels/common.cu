// Host helpers shared by the kernel files, and the error strings of the C ABI.
#include <atomic>

#include "common.cuh"

namespace mstpp
{

int device_sm_count(int* status)
{
    // Grid sizing asks on every call; the attribute query is cheap but not free, and device count is small.
    constexpr int kMaxDevices = 64;
    static std::atomic<int> cache[kMaxDevices];
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess)
    {
        *status = static_cast<int>(err);
        return 0;
    }
    if (device < kMaxDevices)
    {
        int const cached = cache[device].load(std::memory_order_relaxed);
        if (cached > 0)
        {
            return cached;
        }
    }
    int sms = 0;
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess)
    {
        *status = static_cast<int>(err);
        return 0;
    }
    if (device < kMaxDevices)
    {
        cache[device].store(sms, std::memory_order_relaxed);
    }
    return sms;
}

} // namespace mstpp

extern "C" const char* mstpp_error_string(int code)
{
    switch (code)
    {
    case MSTPP_OK: return "success";
    case MSTPP_ERR_NULL_POINTER: return "a required pointer is NULL";
    case MSTPP_ERR_BAD_SHAPE: return "bad shape: a size is negative or the problem is too large for one launch";
    case MSTPP_ERR_BAD_DTYPE: return "unsupported dtype (0 = float32, 1 = float16, 2 = bfloat16)";
    case MSTPP_ERR_UNSUPPORTED_WIDTH:
        return "unsupported channel count (LayerNorm: [1, 1024]; FFN and MSA: 31, 62 or 124; conv: Cin 3, 31 or 62 and "
               "Cout 31, 62 or 124; upfuse: Clow 62 or 124)";
    case MSTPP_ERR_BAD_EPS: return "eps must be finite and >= 0";
    case MSTPP_ERR_OVERLAP: return "x and y (or the workspace) overlap (this kernel cannot work in place)";
    case MSTPP_ERR_UNSUPPORTED_CONV: return "unsupported convolution: (ksize, stride, pad) must be (3, 1, 1) or (4, 2, 1)";
    default: break;
    }
    if (code > 0)
    {
        return cudaGetErrorString(static_cast<cudaError_t>(code));
    }
    return "unknown mstpp error code";
}
