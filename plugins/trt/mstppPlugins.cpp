// TensorRT IPluginV3 wrappers for the MST++ kernels; see mstppPlugins.h and plugins/README.md.
//
// Built twice by the Makefile. MSTPP_STATIC_REGISTRATION=1 registers the creators when the library is loaded
// (ctypes.CDLL, trtexec --staticPlugins); =0 exports getCreators/setLoggerFinder instead, for
// IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, --setPluginsToSerialize), which refuses creators that
// are already registered.
#include "mstppPlugins.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

#include "mstpp_kernels.h"

#ifndef MSTPP_STATIC_REGISTRATION
#define MSTPP_STATIC_REGISTRATION 1
#endif

namespace mstpp
{
namespace trt
{
namespace
{

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";
constexpr int32_t kFailure = 1;

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

void logError(char const* message) noexcept
{
    ILogger* logger = nullptr;
    if (ILoggerFinder* finder = gLoggerFinder.load())
    {
        logger = finder->findLogger();
    }
    if (logger == nullptr)
    {
        logger = ::getLogger();
    }
    char line[512];
    std::snprintf(line, sizeof(line), "[mstpp plugins] %s", message);
    if (logger != nullptr)
    {
        logger->log(ILogger::Severity::kERROR, line);
    }
    else
    {
        std::fprintf(stderr, "%s\n", line);
    }
}

// -1 for storage types the kernels do not handle.
int32_t kernelDtype(DataType type) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: return MSTPP_DTYPE_FLOAT32;
    case DataType::kHALF: return MSTPP_DTYPE_FLOAT16;
    case DataType::kBF16: return MSTPP_DTYPE_BFLOAT16;
    default: return -1;
    }
}

bool isLinearStorage(PluginTensorDesc const& desc) noexcept
{
    return desc.format == TensorFormat::kLINEAR && kernelDtype(desc.type) >= 0;
}

// One linear input of a type our kernels store, and one output of the same type and format.
bool supportsElementwiseUnary(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    return pos == 0 ? isLinearStorage(desc)
                    : desc.format == TensorFormat::kLINEAR && desc.type == inOut[0].desc.type;
}

// Product of dims [begin, end); -1 if any of them is unknown (build time, dynamic shapes).
int64_t volume(Dims const& dims, int32_t begin, int32_t end) noexcept
{
    int64_t v = 1;
    for (int32_t i = begin; i < end; ++i)
    {
        if (dims.d[i] < 0)
        {
            return -1;
        }
        v *= dims.d[i];
    }
    return v;
}

int32_t checkKernel(int status, char const* what) noexcept
{
    if (status == MSTPP_OK)
    {
        return 0;
    }
    char message[256];
    std::snprintf(message, sizeof(message), "%s failed: %s", what, mstpp_error_string(status));
    logError(message);
    return kFailure;
}

bool readFloat(PluginField const& field, float& value) noexcept
{
    if (field.data == nullptr || field.length != 1)
    {
        return false;
    }
    if (field.type == PluginFieldType::kFLOAT32)
    {
        std::memcpy(&value, field.data, sizeof(float));
        return true;
    }
    if (field.type == PluginFieldType::kFLOAT64)
    {
        double d = 0.0;
        std::memcpy(&d, field.data, sizeof(double));
        value = static_cast<float>(d);
        return true;
    }
    return false;
}

bool readInt(PluginField const& field, int32_t& value) noexcept
{
    if (field.data == nullptr || field.length != 1 || field.type != PluginFieldType::kINT32)
    {
        return false;
    }
    std::memcpy(&value, field.data, sizeof(int32_t));
    return true;
}

// A float array field of any length >= 1 (FLOAT32, or FLOAT64 converted to float32).
bool readFloatArray(PluginField const& field, std::vector<float>& values)
{
    if (field.data == nullptr || field.length < 1)
    {
        return false;
    }
    values.resize(static_cast<size_t>(field.length));
    if (field.type == PluginFieldType::kFLOAT32)
    {
        std::memcpy(values.data(), field.data, values.size() * sizeof(float));
        return true;
    }
    if (field.type == PluginFieldType::kFLOAT64)
    {
        auto const* d = static_cast<double const*>(field.data);
        for (size_t i = 0; i < values.size(); ++i)
        {
            values[i] = static_cast<float>(d[i]);
        }
        return true;
    }
    return false;
}

bool validEpsilon(float epsilon) noexcept
{
    return std::isfinite(epsilon) && epsilon >= 0.0F;
}

// Reads the creator fields into the named float/int outputs; logs and fails on anything else.
struct FieldSpec
{
    char const* name;
    float* f32;
    int32_t* i32;
};

bool parseFields(char const* plugin, PluginFieldCollection const* fc, FieldSpec const* specs, int32_t nbSpecs) noexcept
{
    if (fc == nullptr)
    {
        return true;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        FieldSpec const* spec = nullptr;
        for (int32_t s = 0; s < nbSpecs && field.name != nullptr; ++s)
        {
            if (std::strcmp(field.name, specs[s].name) == 0)
            {
                spec = &specs[s];
            }
        }
        bool const ok = spec != nullptr
            && (spec->f32 != nullptr ? readFloat(field, *spec->f32) : readInt(field, *spec->i32));
        if (!ok)
        {
            char message[256];
            std::snprintf(message, sizeof(message), "%s: unknown field or wrong type/length: '%s'", plugin,
                field.name != nullptr ? field.name : "(null)");
            logError(message);
            return false;
        }
    }
    return true;
}

} // namespace

// ----------------------------------------------------------------------------------------------------------
// PluginBase

PluginBase::PluginBase(char const* name) noexcept
    : mName(name)
{
}

IPluginCapability* PluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

char const* PluginBase::getPluginName() const noexcept
{
    return mName;
}

char const* PluginBase::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* PluginBase::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t PluginBase::getNbOutputs() const noexcept
{
    return 1;
}

int32_t PluginBase::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != this->nbInputs())
    {
        return kFailure;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t PluginBase::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbOutputs != 1 || nbInputs != this->nbInputs())
    {
        logError("wrong number of inputs or outputs");
        return kFailure;
    }
    if (inputs[0].nbDims < minRank())
    {
        char message[128];
        std::snprintf(message, sizeof(message), "%s needs an input of rank >= %d, got rank %d", mName, minRank(),
            inputs[0].nbDims);
        logError(message);
        return kFailure;
    }
    outputs[0] = inputs[0];
    return 0;
}

int32_t PluginBase::configurePlugin(DynamicPluginTensorDesc const* /*in*/, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return nbInputs == this->nbInputs() && nbOutputs == 1 ? 0 : kFailure;
}

int32_t PluginBase::onShapeChange(PluginTensorDesc const* /*in*/, int32_t nbInputs, PluginTensorDesc const* /*out*/,
    int32_t nbOutputs) noexcept
{
    // Shapes are read from the descriptors in enqueue(); nothing is cached per shape.
    return nbInputs == this->nbInputs() && nbOutputs == 1 ? 0 : kFailure;
}

IPluginV3* PluginBase::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* PluginBase::getFieldsToSerialize() noexcept
{
    try
    {
        mFields.clear();
        collectFields();
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
        return &mFieldCollection;
    }
    catch (...)
    {
        logError("getFieldsToSerialize: out of memory");
        return nullptr;
    }
}

// ----------------------------------------------------------------------------------------------------------
// MstLayerNorm

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

// ----------------------------------------------------------------------------------------------------------
// MstL2Norm

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

// ----------------------------------------------------------------------------------------------------------
// MstGelu

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

// ----------------------------------------------------------------------------------------------------------
// Fused-block plugins: MstFfn and MstMsa (BlockPlugin holds what they share)
//
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

constexpr int32_t kHeadDim = 31; // channels per MST++ attention head

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

int64_t countC(int64_t c)
{
    return c;
}
int64_t countCC(int64_t c)
{
    return c * c;
}
int64_t count4CC(int64_t c)
{
    return 4 * c * c;
}
int64_t count4C9(int64_t c)
{
    return 4 * c * 9;
}
int64_t countC9(int64_t c)
{
    return c * 9;
}
int64_t countHeads(int64_t c)
{
    return c / kHeadDim;
}

BlockArraySpec const kFfnArrays[] = {{"ln_gamma", "C", countC}, {"ln_beta", "C", countC},
    {"w1", "4*C*C", count4CC}, {"wdw", "4*C*9", count4C9}, {"w2", "C*4*C", count4CC}};

BlockArraySpec const kMsaArrays[] = {{"wq", "C*C", countCC}, {"wk", "C*C", countCC}, {"wv", "C*C", countCC},
    {"rescale", "C/31", countHeads}, {"wproj", "C*C", countCC}, {"bproj", "C", countC}, {"wpos1", "C*9", countC9},
    {"wpos2", "C*9", countC9}};

} // namespace

BlockSpec const FfnPlugin::kSpec{FfnPlugin::kName, kFfnArrays, 5, 0};
BlockSpec const MsaPlugin::kSpec{MsaPlugin::kName, kMsaArrays, 8, 5};

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

// MstFfn

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

// MstMsa

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

// ----------------------------------------------------------------------------------------------------------
// Creators

CreatorBase::CreatorBase(char const* name, std::vector<PluginField> fields) noexcept
    : mName(name)
    , mFieldNames(std::move(fields))
{
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* CreatorBase::getPluginName() const noexcept
{
    return mName;
}

char const* CreatorBase::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* CreatorBase::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* CreatorBase::getFieldNames() noexcept
{
    return &mFieldCollection;
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

#if MSTPP_STATIC_REGISTRATION
REGISTER_TENSORRT_PLUGIN(LayerNormPluginCreator);
REGISTER_TENSORRT_PLUGIN(L2NormPluginCreator);
REGISTER_TENSORRT_PLUGIN(GeluPluginCreator);
REGISTER_TENSORRT_PLUGIN(FfnPluginCreator);
REGISTER_TENSORRT_PLUGIN(MsaPluginCreator);
#endif

} // namespace trt
} // namespace mstpp

#if !MSTPP_STATIC_REGISTRATION
// TENSORRTAPI only exports when building TensorRT itself, and the library is built with hidden visibility.
#define MSTPP_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" MSTPP_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    mstpp::trt::gLoggerFinder.store(finder);
}

extern "C" MSTPP_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static mstpp::trt::LayerNormPluginCreator layerNorm;
    static mstpp::trt::L2NormPluginCreator l2Norm;
    static mstpp::trt::GeluPluginCreator gelu;
    static mstpp::trt::FfnPluginCreator ffn;
    static mstpp::trt::MsaPluginCreator msa;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&layerNorm, &l2Norm, &gelu, &ffn, &msa};
    nbCreators = 5;
    return creators;
}
#endif
