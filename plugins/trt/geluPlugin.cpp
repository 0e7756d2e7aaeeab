// MstGelu: exact (erf) GELU, and its creator.
#include "pluginInternal.h"

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

GeluPlugin::GeluPlugin() noexcept
    : PluginBase(kName)
{
}

IPluginV3* GeluPlugin::clone() noexcept
{
    try
    {
        return new GeluPlugin();
    }
    catch (...)
    {
        return nullptr;
    }
}

bool GeluPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return supportsElementwiseUnary(pos, inOut, nbInputs, nbOutputs);
}

int32_t GeluPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    return checkKernel(
        mstpp_gelu(inputs[0], outputs[0], volume(x, 0, x.nbDims), kernelDtype(inputDesc[0].type), stream),
        "MstGelu");
}

GeluPluginCreator::GeluPluginCreator() noexcept
    : CreatorBase(GeluPlugin::kName, {})
{
}

IPluginV3* GeluPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    if (!parseFields(GeluPlugin::kName, fc, nullptr, 0))
    {
        return nullptr;
    }
    try
    {
        return new GeluPlugin();
    }
    catch (...)
    {
        return nullptr;
    }
}

} // namespace trt
} // namespace mstpp
