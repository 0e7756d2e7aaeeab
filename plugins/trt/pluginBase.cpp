// The shared base of every plugin (PluginBase, CreatorBase) and the helpers of pluginInternal.h.
#include "pluginInternal.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "mstpp_kernels.h"

namespace mstpp
{
namespace trt
{

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

} // namespace trt
} // namespace mstpp
