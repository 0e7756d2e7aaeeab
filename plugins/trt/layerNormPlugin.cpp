// MstLayerNorm: LayerNorm over the last dim (layout 0) or over dim 1 of NCHW (layout 1), and its creator.
#include "pluginInternal.h"

#include <cstdio>

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

LayerNormPlugin::LayerNormPlugin(float epsilon, int32_t layout) noexcept
    : PluginBase(kName)
    , mEpsilon(epsilon)
    , mLayout(layout)
{
}

IPluginV3* LayerNormPlugin::clone() noexcept
{
    try
    {
        return new LayerNormPlugin(mEpsilon, mLayout);
    }
    catch (...)
    {
        return nullptr;
    }
}

bool LayerNormPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos > 3)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    switch (pos)
    {
    case 0: return isLinearStorage(desc);
    case 1:
    case 2: return desc.format == TensorFormat::kLINEAR && desc.type == DataType::kFLOAT;
    default: return desc.format == TensorFormat::kLINEAR && desc.type == inOut[0].desc.type;
    }
}

int32_t LayerNormPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (PluginBase::configurePlugin(in, nbInputs, out, nbOutputs) != 0)
    {
        return kFailure;
    }
    Dims const& x = in[0].desc.dims;
    int32_t const channelDim = mLayout == kNCHW ? 1 : x.nbDims - 1;
    if ((mLayout == kNCHW && x.nbDims != 4) || channelDim < 0)
    {
        logError("MstLayerNorm: layout 1 needs a 4-D NCHW input, layout 0 an input of rank >= 1");
        return kFailure;
    }
    int64_t const channels = x.d[channelDim];
    if (channels > MSTPP_LAYERNORM_MAX_C)
    {
        logError("MstLayerNorm: the normalised dim must have at most 1024 elements");
        return kFailure;
    }
    for (int32_t i = 1; i <= 2; ++i)
    {
        int64_t const n = volume(in[i].desc.dims, 0, in[i].desc.dims.nbDims);
        if (channels > 0 && n >= 0 && n != channels)
        {
            logError("MstLayerNorm: gamma and beta must have as many elements as the normalised dim");
            return kFailure;
        }
    }
    return 0;
}

int32_t LayerNormPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    auto const* gamma = static_cast<float const*>(inputs[1]);
    auto const* beta = static_cast<float const*>(inputs[2]);
    int32_t const dtype = kernelDtype(inputDesc[0].type);
    if (mLayout == kNCHW)
    {
        int64_t const channels = x.d[1];
        if (volume(inputDesc[1].dims, 0, inputDesc[1].dims.nbDims) != channels)
        {
            logError("MstLayerNorm: gamma does not match the channel dim");
            return kFailure;
        }
        return checkKernel(mstpp_layernorm_nchw(inputs[0], outputs[0], gamma, beta, x.d[0],
                               static_cast<int>(channels), volume(x, 2, 4), mEpsilon, dtype, stream),
            "MstLayerNorm (NCHW)");
    }
    int64_t const channels = x.d[x.nbDims - 1];
    if (volume(inputDesc[1].dims, 0, inputDesc[1].dims.nbDims) != channels)
    {
        logError("MstLayerNorm: gamma does not match the last dim");
        return kFailure;
    }
    return checkKernel(mstpp_layernorm_rows(inputs[0], outputs[0], gamma, beta, volume(x, 0, x.nbDims - 1),
                           static_cast<int>(channels), mEpsilon, dtype, stream),
        "MstLayerNorm");
}

void LayerNormPlugin::collectFields() noexcept
{
    mFields.emplace_back("epsilon", &mEpsilon, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back("layout", &mLayout, PluginFieldType::kINT32, 1);
}

LayerNormPluginCreator::LayerNormPluginCreator() noexcept
    : CreatorBase(LayerNormPlugin::kName,
        {PluginField("epsilon", nullptr, PluginFieldType::kFLOAT32, 1),
            PluginField("layout", nullptr, PluginFieldType::kINT32, 1)})
{
}

IPluginV3* LayerNormPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    float epsilon = LayerNormPlugin::kDefaultEpsilon;
    int32_t layout = LayerNormPlugin::kLAST_DIM;
    FieldSpec const specs[] = {{"epsilon", &epsilon, nullptr}, {"layout", nullptr, &layout}};
    if (!parseFields(LayerNormPlugin::kName, fc, specs, 2))
    {
        return nullptr;
    }
    if (!validEpsilon(epsilon) || (layout != LayerNormPlugin::kLAST_DIM && layout != LayerNormPlugin::kNCHW))
    {
        logError("MstLayerNorm: epsilon must be finite and >= 0, layout 0 (last dim) or 1 (NCHW)");
        return nullptr;
    }
    try
    {
        return new LayerNormPlugin(epsilon, layout);
    }
    catch (...)
    {
        return nullptr;
    }
}

} // namespace trt
} // namespace mstpp
