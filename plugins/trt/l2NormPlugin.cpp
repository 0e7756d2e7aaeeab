// MstL2Norm: x / max(||x||_2, eps) along the last dim, and its creator.
#include "pluginInternal.h"

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

L2NormPlugin::L2NormPlugin(float epsilon) noexcept
    : PluginBase(kName)
    , mEpsilon(epsilon)
{
}

IPluginV3* L2NormPlugin::clone() noexcept
{
    try
    {
        return new L2NormPlugin(mEpsilon);
    }
    catch (...)
    {
        return nullptr;
    }
}

bool L2NormPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return supportsElementwiseUnary(pos, inOut, nbInputs, nbOutputs);
}

size_t L2NormPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    // The workspace only grows with rows and L, so the profile's max shape covers every shape it allows.
    Dims const& x = inputs[0].max;
    return mstpp_l2norm_workspace_size(volume(x, 0, x.nbDims - 1), x.d[x.nbDims - 1]);
}

int32_t L2NormPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    return checkKernel(mstpp_l2norm_rows(inputs[0], outputs[0], volume(x, 0, x.nbDims - 1), x.d[x.nbDims - 1],
                           mEpsilon, kernelDtype(inputDesc[0].type), workspace, stream),
        "MstL2Norm");
}

void L2NormPlugin::collectFields() noexcept
{
    mFields.emplace_back("epsilon", &mEpsilon, PluginFieldType::kFLOAT32, 1);
}

L2NormPluginCreator::L2NormPluginCreator() noexcept
    : CreatorBase(L2NormPlugin::kName, {PluginField("epsilon", nullptr, PluginFieldType::kFLOAT32, 1)})
{
}

IPluginV3* L2NormPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    float epsilon = L2NormPlugin::kDefaultEpsilon;
    FieldSpec const specs[] = {{"epsilon", &epsilon, nullptr}};
    if (!parseFields(L2NormPlugin::kName, fc, specs, 1))
    {
        return nullptr;
    }
    if (!validEpsilon(epsilon))
    {
        logError("MstL2Norm: epsilon must be finite and >= 0");
        return nullptr;
    }
    try
    {
        return new L2NormPlugin(epsilon);
    }
    catch (...)
    {
        return nullptr;
    }
}

} // namespace trt
} // namespace mstpp
