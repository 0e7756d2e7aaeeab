// mstpp_capability(): the widths and geometries this build's kernels accept, as one table the bindings read.
//
// Each list must match the argument checks of the kernel it names (the MSTPP_ERR_UNSUPPORTED_* returns in
// ffn.cu, msa.cu, conv.cu, layernorm.cu). mstpp/kernels.py refuses to load a build whose lists do not cover what
// MST++ needs (architecture/parts.py), and the GPU tests (tests/test_kernels_*.py) launch every one of those widths.
#include <cstdint>

#include "mstpp_kernels.h"

namespace
{

// Version 2: mstpp_capability itself was appended to the ABI of version 1.
constexpr int64_t kAbiVersion[] = {2};
constexpr int64_t kLayerNormMaxC[] = {MSTPP_LAYERNORM_MAX_C};
constexpr int64_t kBlockChannels[] = {31, 62, 124}; // the three MST++ levels; FFN and MSA share them
constexpr int64_t kHeadDim[] = {31};
constexpr int64_t kConvIn[] = {3, 31, 62};
constexpr int64_t kConvOut[] = {31, 62, 124};
constexpr int64_t kConvGeometries[] = {3, 1, 1, 4, 2, 1};
constexpr int64_t kUpfuseChannels[] = {62, 124};

struct Capability
{
    int64_t const* values;
    int count;
};

template <int N>
constexpr Capability list(int64_t const (&values)[N])
{
    return {values, N};
}

} // namespace

extern "C" MSTPP_API int mstpp_capability(int what, int64_t* out, int capacity)
{
    Capability cap{nullptr, 0};
    switch (what)
    {
    case MSTPP_CAP_ABI_VERSION: cap = list(kAbiVersion); break;
    case MSTPP_CAP_LAYERNORM_MAX_C: cap = list(kLayerNormMaxC); break;
    case MSTPP_CAP_FFN_CHANNELS: cap = list(kBlockChannels); break;
    case MSTPP_CAP_MSA_CHANNELS: cap = list(kBlockChannels); break;
    case MSTPP_CAP_MSA_HEAD_DIM: cap = list(kHeadDim); break;
    case MSTPP_CAP_CONV_IN_CHANNELS: cap = list(kConvIn); break;
    case MSTPP_CAP_CONV_OUT_CHANNELS: cap = list(kConvOut); break;
    case MSTPP_CAP_CONV_GEOMETRIES: cap = list(kConvGeometries); break;
    case MSTPP_CAP_UPFUSE_CHANNELS: cap = list(kUpfuseChannels); break;
    default: return MSTPP_ERR_BAD_SHAPE;
    }
    if (out != nullptr)
    {
        for (int i = 0; i < cap.count && i < capacity; ++i)
        {
            out[i] = cap.values[i];
        }
    }
    return cap.count;
}
