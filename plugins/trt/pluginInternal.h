// What the plugin sources share besides the classes of mstppPlugins.h: logging, field parsing, dtype mapping, and
// the helpers of the fused-block plugins (MstFfn, MstMsa). Internal to the plugin library; not installed.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "mstppPlugins.h"

namespace mstpp
{
namespace trt
{

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";
constexpr int32_t kFailure = 1;
constexpr int32_t kHeadDim = 31; // channels per MST++ attention head

// Set by setLoggerFinder() when the library is loaded through IPluginRegistry::loadLibrary.
extern std::atomic<ILoggerFinder*> gLoggerFinder;

// Logs through TensorRT's logger (the finder's, else getLogger()), else to stderr; never throws.
void logError(char const* message) noexcept;

// MSTPP_DTYPE_* of a TensorRT storage type, -1 for types the kernels do not handle.
int32_t kernelDtype(DataType type) noexcept;
bool isLinearStorage(PluginTensorDesc const& desc) noexcept;
// One linear input of a type our kernels store, and one output of the same type and format.
bool supportsElementwiseUnary(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept;
// Product of dims [begin, end); -1 if any of them is unknown (build time, dynamic shapes).
int64_t volume(Dims const& dims, int32_t begin, int32_t end) noexcept;
// 0 for MSTPP_OK; otherwise logs "<what> failed: <reason>" and returns kFailure.
int32_t checkKernel(int status, char const* what) noexcept;

bool readFloat(PluginField const& field, float& value) noexcept;
bool readInt(PluginField const& field, int32_t& value) noexcept;
// A float array field of any length >= 1 (FLOAT32, or FLOAT64 converted to float32).
bool readFloatArray(PluginField const& field, std::vector<float>& values);
bool validEpsilon(float epsilon) noexcept;

// Reads the creator fields into the named float/int outputs; logs and fails on anything else.
struct FieldSpec
{
    char const* name;
    float* f32;
    int32_t* i32;
};
bool parseFields(char const* plugin, PluginFieldCollection const* fc, FieldSpec const* specs, int32_t nbSpecs) noexcept;

// Fused-block plugins (blockPlugin.cpp): the creator side. Reads `epsilon` (only when `epsilon` is not null) and
// the spec's weight arrays, checking C and every array's length; logs and fails on anything else.
bool parseBlockFields(BlockSpec const& spec, PluginFieldCollection const* fc, float* epsilon,
    std::vector<std::vector<float>>& arrays);
// The creator's field list of a fused-block plugin (epsilon first when `withEpsilon`).
std::vector<PluginField> blockFieldNames(BlockSpec const& spec, bool withEpsilon);

// Element counts of the fused-block weight arrays as functions of C (BlockArraySpec::count).
inline int64_t countC(int64_t c)
{
    return c;
}
inline int64_t countCC(int64_t c)
{
    return c * c;
}
inline int64_t count4CC(int64_t c)
{
    return 4 * c * c;
}
inline int64_t count4C9(int64_t c)
{
    return 4 * c * 9;
}
inline int64_t countC9(int64_t c)
{
    return c * 9;
}
inline int64_t countHeads(int64_t c)
{
    return c / kHeadDim;
}

} // namespace trt
} // namespace mstpp
