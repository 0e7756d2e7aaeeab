// MstFfn: the MST++ feed-forward half of an MSAB, residual included (mstpp_ffn_nchw), and its creator.
#include "pluginInternal.h"

#include <utility>

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

namespace
{

BlockArraySpec const kFfnArrays[] = {{"ln_gamma", "C", countC}, {"ln_beta", "C", countC},
    {"w1", "4*C*C", count4CC}, {"wdw", "4*C*9", count4C9}, {"w2", "C*4*C", count4CC}};

} // namespace

BlockSpec const FfnPlugin::kSpec{FfnPlugin::kName, kFfnArrays, 5, 0};

FfnPlugin::FfnPlugin(float epsilon, std::vector<std::vector<float>> arrays)
    : BlockPlugin(kSpec, std::move(arrays))
    , mEpsilon(epsilon)
{
}

IPluginV3* FfnPlugin::clone() noexcept
{
    try
    {
        // Deep copy of the host weights; the clone makes its own device copy when it is prepared to run.
        return new FfnPlugin(mEpsilon, mArrays);
    }
    catch (...)
    {
        return nullptr;
    }
}

int32_t FfnPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    if (!readyToRun(x))
    {
        return kFailure;
    }
    return checkKernel(mstpp_ffn_nchw(inputs[0], outputs[0], deviceArray(0), deviceArray(1), deviceArray(2),
                           deviceArray(3), deviceArray(4), x.d[0], mChannels, x.d[2], x.d[3], mEpsilon,
                           kernelDtype(inputDesc[0].type), stream),
        "MstFfn");
}

void FfnPlugin::collectFields() noexcept
{
    mFields.emplace_back("epsilon", &mEpsilon, PluginFieldType::kFLOAT32, 1);
    BlockPlugin::collectFields();
}

FfnPluginCreator::FfnPluginCreator() noexcept
    : CreatorBase(FfnPlugin::kName, blockFieldNames(FfnPlugin::kSpec, true))
{
}

IPluginV3* FfnPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        float epsilon = FfnPlugin::kDefaultEpsilon;
        std::vector<std::vector<float>> arrays;
        if (!parseBlockFields(FfnPlugin::kSpec, fc, &epsilon, arrays))
        {
            return nullptr;
        }
        return new FfnPlugin(epsilon, std::move(arrays));
    }
    catch (...)
    {
        logError("MstFfn: out of host memory");
        return nullptr;
    }
}

} // namespace trt
} // namespace mstpp
