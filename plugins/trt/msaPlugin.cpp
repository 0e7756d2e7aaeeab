// MstMsa: the MST++ spectral attention half of an MSAB, residual included (mstpp_msa_nchw), and its creator.
#include "pluginInternal.h"

#include <utility>

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

namespace
{

BlockArraySpec const kMsaArrays[] = {{"wq", "C*C", countCC}, {"wk", "C*C", countCC}, {"wv", "C*C", countCC},
    {"rescale", "C/31", countHeads}, {"wproj", "C*C", countCC}, {"bproj", "C", countC}, {"wpos1", "C*9", countC9},
    {"wpos2", "C*9", countC9}};

} // namespace

BlockSpec const MsaPlugin::kSpec{MsaPlugin::kName, kMsaArrays, 8, 5};

MsaPlugin::MsaPlugin(std::vector<std::vector<float>> arrays)
    : BlockPlugin(kSpec, std::move(arrays))
{
}

IPluginV3* MsaPlugin::clone() noexcept
{
    try
    {
        return new MsaPlugin(mArrays);
    }
    catch (...)
    {
        return nullptr;
    }
}

int32_t MsaPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (BlockPlugin::configurePlugin(in, nbInputs, out, nbOutputs) != 0)
    {
        return kFailure;
    }
    // The profile's largest shape must fit the kernel's limits (then every smaller one does, and its workspace
    // covers them: mstpp_msa_workspace_size is non-decreasing in B, H, W).
    Dims const& x = in[0].max;
    if (x.nbDims == 4 && volume(x, 0, 4) > 0 && mstpp_msa_workspace_size(x.d[0], mChannels, x.d[2], x.d[3]) == 0)
    {
        char message[256];
        std::snprintf(message, sizeof(message), "MstMsa: the largest x shape [%lld, %d, %lld, %lld] is too large",
            static_cast<long long>(x.d[0]), mChannels, static_cast<long long>(x.d[2]),
            static_cast<long long>(x.d[3]));
        logError(message);
        return kFailure;
    }
    return 0;
}

size_t MsaPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != 1)
    {
        return 0;
    }
    // Non-decreasing in B, H and W (mstpp_kernels.h), so the profile's max shape covers every shape it allows.
    Dims const& x = inputs[0].max;
    if (x.nbDims != 4 || volume(x, 0, 4) <= 0)
    {
        return 0;
    }
    return mstpp_msa_workspace_size(x.d[0], mChannels, x.d[2], x.d[3]);
}

int32_t MsaPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    if (!readyToRun(x))
    {
        return kFailure;
    }
    return checkKernel(mstpp_msa_nchw(inputs[0], outputs[0], deviceArray(0), deviceArray(1), deviceArray(2),
                           deviceArray(3), deviceArray(4), deviceArray(5), deviceArray(6), deviceArray(7), x.d[0],
                           mChannels, x.d[2], x.d[3], kernelDtype(inputDesc[0].type), workspace, stream),
        "MstMsa");
}

MsaPluginCreator::MsaPluginCreator() noexcept
    : CreatorBase(MsaPlugin::kName, blockFieldNames(MsaPlugin::kSpec, false))
{
}

IPluginV3* MsaPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<std::vector<float>> arrays;
        if (!parseBlockFields(MsaPlugin::kSpec, fc, nullptr, arrays))
        {
            return nullptr;
        }
        return new MsaPlugin(std::move(arrays));
    }
    catch (...)
    {
        logError("MstMsa: out of host memory");
        return nullptr;
    }
}

} // namespace trt
} // namespace mstpp
