// BlockPlugin: what the fused-block plugins MstFfn and MstMsa share (weights as fields, their device copy,
// shape checks, serialisation), and the creator-side field parsing of both.
#include "pluginInternal.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

// Weight lifetime. The weights arrive as creator fields (host float32 arrays) and every BlockPlugin object keeps
// its own host copy: that copy is what getFieldsToSerialize() writes into the plan and what clone() deep-copies.
// The device copy is one cudaMalloc per plugin object, owned by that object alone and freed in its destructor;
// clone() never shares it (no double free, no use after a sibling is destroyed). It is made once per object,
// before its first enqueue() and never inside enqueue():
//   - at run time, attachToContext() returns a clone that uploads right away (or fails, and with it
//     createExecutionContext()): context creation is the initialisation point, outside enqueueV3() and any CUDA
//     graph capture. onShapeChange(), which enqueueV3() may call, then finds the copy there and does nothing;
//   - in the builder (timing runs), where attachToContext() is not guaranteed, the first onShapeChange() of the
//     object, which TensorRT calls before enqueue(), uploads.
// enqueue() only reads the device pointer. The copy lives on the device that was current at upload time;
// the destructor frees it there. Size: MstFfn 2C + 36C + 8C*C floats (about 0.5 MB for C = 124), MstMsa
// C/31 + C + 18C + 4C*C floats (about 0.25 MB for C = 124), each array rounded up to 256 bytes.


namespace
{

bool validBlockChannels(int64_t c) noexcept
{
    return c == 31 || c == 62 || c == 124;
}

// Offset (in floats) of array i in the device allocation and, for i == arrays.size(), the total: every array is
// rounded up to 64 floats (256 bytes).
size_t deviceOffset(std::vector<std::vector<float>> const& arrays, size_t i) noexcept
{
    size_t offset = 0;
    for (size_t a = 0; a < i && a < arrays.size(); ++a)
    {
        offset += (arrays[a].size() + 63) / 64 * 64;
    }
    return offset;
}

// "a, b, c" (or "a, b and c" with `lastAnd`).
std::string joinNames(BlockSpec const& spec, bool lastAnd)
{
    std::string out;
    for (int32_t a = 0; a < spec.nbArrays; ++a)
    {
        if (a > 0)
        {
            out += lastAnd && a == spec.nbArrays - 1 ? " and " : ", ";
        }
        out += spec.arrays[a].name;
    }
    return out;
}

void logBlockError(char const* plugin, std::string const& text) noexcept
{
    char message[384];
    std::snprintf(message, sizeof(message), "%s: %s", plugin, text.c_str());
    logError(message);
}
} // namespace

// The creator side of a fused-block plugin: reads `epsilon` (only when `epsilon` is not null) and the spec's
// float arrays, all required, then checks C (the length of the channel array) and every other length. Logs one
// line naming the field and returns false on anything else. May throw std::bad_alloc.
bool parseBlockFields(
    BlockSpec const& spec, PluginFieldCollection const* fc, float* epsilon, std::vector<std::vector<float>>& arrays)
{
    arrays.assign(static_cast<size_t>(spec.nbArrays), std::vector<float>());
    std::vector<bool> present(static_cast<size_t>(spec.nbArrays), false);
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        char const* name = field.name != nullptr ? field.name : "(null)";
        bool ok = false;
        if (epsilon != nullptr && std::strcmp(name, "epsilon") == 0)
        {
            ok = readFloat(field, *epsilon);
        }
        for (int32_t a = 0; a < spec.nbArrays; ++a)
        {
            if (std::strcmp(name, spec.arrays[a].name) == 0)
            {
                ok = readFloatArray(field, arrays[a]);
                present[a] = ok;
            }
        }
        if (!ok)
        {
            logBlockError(spec.plugin,
                std::string("unknown field or wrong type/length: '") + name + "' (fields: "
                    + (epsilon != nullptr ? "epsilon, " : "") + joinNames(spec, false) + "; FLOAT32)");
            return false;
        }
    }
    for (int32_t a = 0; a < spec.nbArrays; ++a)
    {
        if (!present[a])
        {
            logBlockError(spec.plugin,
                std::string("missing field '") + spec.arrays[a].name + "' (" + joinNames(spec, true)
                    + " are required)");
            return false;
        }
    }
    if (epsilon != nullptr && !validEpsilon(*epsilon))
    {
        logBlockError(spec.plugin, "epsilon must be finite and >= 0");
        return false;
    }
    int64_t const c = static_cast<int64_t>(arrays[spec.channelArray].size());
    if (!validBlockChannels(c))
    {
        logBlockError(spec.plugin,
            std::string("C (the length of ") + spec.arrays[spec.channelArray].name
                + ") must be 31, 62 or 124, got " + std::to_string(c));
        return false;
    }
    for (int32_t a = 0; a < spec.nbArrays; ++a)
    {
        int64_t const expected = spec.arrays[a].count(c);
        int64_t const got = static_cast<int64_t>(arrays[a].size());
        if (got != expected)
        {
            logBlockError(spec.plugin,
                std::string("field '") + spec.arrays[a].name + "' must hold " + spec.arrays[a].formula + " = "
                    + std::to_string(expected) + " values for C = " + std::to_string(c) + ", got "
                    + std::to_string(got));
            return false;
        }
    }
    return true;
}

std::vector<PluginField> blockFieldNames(BlockSpec const& spec, bool withEpsilon)
{
    std::vector<PluginField> names;
    if (withEpsilon)
    {
        names.emplace_back("epsilon", nullptr, PluginFieldType::kFLOAT32, 1);
    }
    for (int32_t a = 0; a < spec.nbArrays; ++a)
    {
        names.emplace_back(spec.arrays[a].name, nullptr, PluginFieldType::kFLOAT32, 0);
    }
    return names;
}

BlockPlugin::BlockPlugin(BlockSpec const& spec, std::vector<std::vector<float>> arrays)
    : PluginBase(spec.plugin)
    , mSpec(spec)
    , mChannels(static_cast<int32_t>(arrays.at(static_cast<size_t>(spec.channelArray)).size()))
    , mArrays(std::move(arrays))
{
}

BlockPlugin::~BlockPlugin() noexcept
{
    releaseWeights();
}

void BlockPlugin::releaseWeights() noexcept
{
    if (mDeviceWeights == nullptr)
    {
        return;
    }
    int current = -1;
    bool const switchDevice = cudaGetDevice(&current) == cudaSuccess && current != mDevice && mDevice >= 0;
    if (switchDevice)
    {
        cudaSetDevice(mDevice);
    }
    // At process exit the CUDA context may already be gone; the error is harmless and deliberately ignored.
    cudaFree(mDeviceWeights);
    if (switchDevice)
    {
        cudaSetDevice(current);
    }
    mDeviceWeights = nullptr;
    mDevice = -1;
}

int32_t BlockPlugin::uploadWeights() noexcept
{
    if (mDeviceWeights != nullptr)
    {
        return 0;
    }
    float* device = nullptr;
    cudaError_t status
        = cudaMalloc(reinterpret_cast<void**>(&device), deviceOffset(mArrays, mArrays.size()) * sizeof(float));
    for (size_t a = 0; a < mArrays.size() && status == cudaSuccess; ++a)
    {
        status = cudaMemcpy(device + deviceOffset(mArrays, a), mArrays[a].data(), mArrays[a].size() * sizeof(float),
            cudaMemcpyHostToDevice);
    }
    if (status != cudaSuccess)
    {
        if (device != nullptr)
        {
            cudaFree(device);
        }
        char message[256];
        std::snprintf(message, sizeof(message), "%s: copying the weights to the device failed: %s", mSpec.plugin,
            cudaGetErrorString(status));
        logError(message);
        return kFailure;
    }
    cudaGetDevice(&mDevice);
    mDeviceWeights = device;
    return 0;
}

bool BlockPlugin::checkShape(Dims const& dims) const noexcept
{
    if (dims.nbDims != 4 || (dims.d[1] >= 0 && dims.d[1] != mChannels))
    {
        char message[256];
        std::snprintf(message, sizeof(message),
            "%s: x must be 4-D NCHW with %d channels (the length of %s), got rank %d, dim 1 = %lld", mSpec.plugin,
            mChannels, mSpec.arrays[mSpec.channelArray].name, dims.nbDims,
            dims.nbDims > 1 ? static_cast<long long>(dims.d[1]) : -1LL);
        logError(message);
        return false;
    }
    return true;
}

bool BlockPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return supportsElementwiseUnary(pos, inOut, nbInputs, nbOutputs);
}

int32_t BlockPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (PluginBase::configurePlugin(in, nbInputs, out, nbOutputs) != 0)
    {
        return kFailure;
    }
    return checkShape(in[0].desc.dims) ? 0 : kFailure;
}

int32_t BlockPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (PluginBase::onShapeChange(in, nbInputs, out, nbOutputs) != 0 || !checkShape(in[0].dims))
    {
        return kFailure;
    }
    return uploadWeights();
}

IPluginV3* BlockPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    auto* copy = static_cast<BlockPlugin*>(clone());
    if (copy != nullptr && copy->uploadWeights() != 0)
    {
        delete copy;
        return nullptr;
    }
    return copy;
}

bool BlockPlugin::readyToRun(Dims const& x) const noexcept
{
    char message[256];
    if (mDeviceWeights == nullptr)
    {
        std::snprintf(message, sizeof(message),
            "%s: enqueue before the weights were copied to the device (onShapeChange/attachToContext)",
            mSpec.plugin);
        logError(message);
        return false;
    }
    if (x.nbDims != 4 || x.d[1] != mChannels)
    {
        std::snprintf(message, sizeof(message), "%s: x is not NCHW with the plugin's channel count", mSpec.plugin);
        logError(message);
        return false;
    }
    return true;
}

float const* BlockPlugin::deviceArray(int32_t i) const noexcept
{
    return mDeviceWeights + deviceOffset(mArrays, static_cast<size_t>(i));
}

void BlockPlugin::collectFields() noexcept
{
    for (int32_t a = 0; a < mSpec.nbArrays; ++a)
    {
        std::vector<float>& values = mArrays[static_cast<size_t>(a)];
        mFields.emplace_back(
            mSpec.arrays[a].name, values.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(values.size()));
    }
}

} // namespace trt
} // namespace mstpp
