// Exact GELU, y = 0.5 * x * (1 + erf(x / sqrt(2))), element-wise in float32 whatever the storage type: the
// erf form is what torch.nn.GELU() computes by default, and the tanh approximation differs by up to ~1e-3.
#include "common.cuh"

namespace mstpp
{
namespace
{

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8; // a grid-stride grid of SMs x 8 blocks keeps 2048 threads per SM busy

__device__ __forceinline__ float gelu(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

// Launch assumptions: blockDim.x == kThreads; any gridDim.x (grid-stride); x and y contiguous, not overlapping,
// and aligned to sizeof(Pack<T, kPack>). Elements past the last whole pack are done by the first threads.
template <typename T, int kPack>
__global__ void __launch_bounds__(kThreads) gelu_kernel(T const* __restrict__ x, T* __restrict__ y, int64_t n)
{
    int64_t const packs = n / kPack;
    int64_t const stride = static_cast<int64_t>(gridDim.x) * kThreads;
    int64_t const first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    for (int64_t p = first; p < packs; p += stride)
    {
        Pack<T, kPack> pack = load_pack<T, kPack>(x + p * kPack);
#pragma unroll
        for (int i = 0; i < kPack; ++i)
        {
            pack.v[i] = from_float<T>(gelu(to_float(pack.v[i])));
        }
        store_pack(y + p * kPack, pack);
    }
    int64_t const e = packs * kPack + first;
    if (e < n)
    {
        y[e] = from_float<T>(gelu(to_float(x[e])));
    }
}

template <typename T, int kPack>
int launch(T const* x, T* y, int64_t n, int sms, cudaStream_t stream)
{
    int64_t const needed = ceil_div(n / kPack > 0 ? n / kPack : 1, kThreads);
    int64_t const cap = static_cast<int64_t>(sms) * kBlocksPerSm;
    unsigned const blocks = static_cast<unsigned>(needed < cap ? needed : cap);
    gelu_kernel<T, kPack><<<blocks, kThreads, 0, stream>>>(x, y, n);
    return launch_status();
}

} // namespace
} // namespace mstpp

extern "C" int mstpp_gelu(void const* x, void* y, int64_t n, int dtype, void* stream)
{
    using namespace mstpp;
    if (n < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    if (n == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    int status = MSTPP_OK;
    int const sms = device_sm_count(&status);
    if (status != MSTPP_OK)
    {
        return status;
    }
    cudaStream_t const s = as_stream(stream);
    bool const packed = is_aligned(x, kPackBytes) && is_aligned(y, kPackBytes);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        return packed ? launch<T, Pack<T>::kSize>(xt, yt, n, sms, s) : launch<T, 1>(xt, yt, n, sms, s);
    });
}
