// TensorRT IPluginV3 wrappers around the MST++ kernels (plugins/kernels/mstpp_kernels.h):
//   MstLayerNorm (x, gamma, beta) -> y    LayerNorm over the last dim (layout 0) or over dim 1 of NCHW (layout 1)
//   MstL2Norm    (x) -> y                 x / max(||x||_2, eps) along the last dim
//   MstGelu      (x) -> y                 exact (erf) GELU
//   MstFfn       (x) -> y                 the MST++ feed-forward half of an MSAB, residual included:
//                                         y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x)))) on NCHW, weights as fields
//   MstMsa       (x) -> y                 the MST++ spectral attention half of an MSAB, residual included:
//                                         y = x + SpectralMSA(x) on NCHW (mstpp_msa_nchw), weights as fields
// All are version "1" in namespace "", take and return LINEAR tensors, and keep the output dtype equal to x's.
// Build with `make plugins TENSORRT_ROOT=...`; see plugins/README.md for loading them.
#pragma once

#include <cstdint>
#include <vector>

#include <NvInfer.h>

namespace mstpp
{
namespace trt
{

using namespace nvinfer1;

// What the plugins share: one output with x's shape and dtype, no per-shape state, the capability
// plumbing of IPluginV3, name/version/namespace reporting and serialisation of the attribute fields.
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime
{
public:
    explicit PluginBase(char const* name) noexcept;

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(
        PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override;
    PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    // Number of inputs the plugin takes and smallest rank of x it accepts.
    virtual int32_t nbInputs() const noexcept = 0;
    virtual int32_t minRank() const noexcept = 0;
    // Fill mFields with the attributes to serialise (pointers into the plugin's own members).
    virtual void collectFields() noexcept = 0;

    std::vector<PluginField> mFields;

private:
    char const* mName;
    PluginFieldCollection mFieldCollection{};
};

class LayerNormPlugin final : public PluginBase
{
public:
    static constexpr char const* kName = "MstLayerNorm";
    static constexpr float kDefaultEpsilon = 1e-5F;
    enum Layout : int32_t
    {
        kLAST_DIM = 0, // normalise over the last dim (channels-last)
        kNCHW = 1      // normalise over dim 1 of a 4-D tensor
    };

    LayerNormPlugin(float epsilon, int32_t layout) noexcept;

    IPluginV3* clone() noexcept override;
    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t nbInputs() const noexcept override
    {
        return 3;
    }
    int32_t minRank() const noexcept override
    {
        return mLayout == kNCHW ? 4 : 1;
    }
    void collectFields() noexcept override;

private:
    float mEpsilon;
    int32_t mLayout;
};

class L2NormPlugin final : public PluginBase
{
public:
    static constexpr char const* kName = "MstL2Norm";
    static constexpr float kDefaultEpsilon = 1e-12F;

    explicit L2NormPlugin(float epsilon) noexcept;

    IPluginV3* clone() noexcept override;
    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t nbInputs() const noexcept override
    {
        return 1;
    }
    int32_t minRank() const noexcept override
    {
        return 2;
    }
    void collectFields() noexcept override;

private:
    float mEpsilon;
};

class GeluPlugin final : public PluginBase
{
public:
    static constexpr char const* kName = "MstGelu";

    GeluPlugin() noexcept;

    IPluginV3* clone() noexcept override;
    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t nbInputs() const noexcept override
    {
        return 1;
    }
    int32_t minRank() const noexcept override
    {
        return 0;
    }
    void collectFields() noexcept override {}
};

// A float32 array field of a fused-block plugin: its name, its length as a formula of C and as a function of C.
struct BlockArraySpec
{
    char const* name;
    char const* formula;
    int64_t (*count)(int64_t channels);
};

// What a fused-block plugin (MstFfn, MstMsa) declares about its array fields; C is the length of
// arrays[channelArray] and must be 31, 62 or 124 (the widths of the fused kernels).
struct BlockSpec
{
    char const* plugin;
    BlockArraySpec const* arrays;
    int32_t nbArrays;
    int32_t channelArray;
};

// Shared by the fused-block plugins: one 4-D NCHW input x with C channels, output of x's shape and dtype,
// FP32/FP16/BF16 linear storage, weights as float32 array fields kept on the host (serialised, deep-copied by
// clone()) plus one device copy per object, made in attachToContext() or the first onShapeChange(), never in
// enqueue() (see the comment above BlockPlugin in mstppPlugins.cpp).
class BlockPlugin : public PluginBase
{
public:
    // `arrays` in the order of spec.arrays, already validated by the creator (parseBlockFields).
    BlockPlugin(BlockSpec const& spec, std::vector<std::vector<float>> arrays);
    ~BlockPlugin() noexcept override;
    BlockPlugin(BlockPlugin const&) = delete;
    BlockPlugin& operator=(BlockPlugin const&) = delete;

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t onShapeChange(
        PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override;

protected:
    int32_t nbInputs() const noexcept override
    {
        return 1;
    }
    int32_t minRank() const noexcept override
    {
        return 4;
    }
    // Serialises the arrays (a subclass adds its scalar fields before calling this).
    void collectFields() noexcept override;

    // For enqueue(): true when the device copy exists and x is 4-D with C channels; logs otherwise.
    bool readyToRun(Dims const& x) const noexcept;
    // Device pointer of array i (valid when readyToRun()).
    float const* deviceArray(int32_t i) const noexcept;

    BlockSpec const& mSpec;
    int32_t mChannels;
    std::vector<std::vector<float>> mArrays;

private:
    // Copies the arrays into one device allocation of this object (once; a no-op when already there).
    int32_t uploadWeights() noexcept;
    void releaseWeights() noexcept;
    // Rank 4 with dim 1 equal to C (or not yet known).
    bool checkShape(Dims const& dims) const noexcept;

    float* mDeviceWeights{nullptr}; // owned by this object only; never shared between clones
    int32_t mDevice{-1};            // the CUDA device mDeviceWeights lives on
};

class FfnPlugin final : public BlockPlugin
{
public:
    static constexpr char const* kName = "MstFfn";
    static constexpr float kDefaultEpsilon = 1e-5F;
    // ln_gamma [C], ln_beta [C], w1 [4C, C], wdw [4C, 3, 3], w2 [C, 4C]: the layouts of mstpp_ffn_nchw.
    static BlockSpec const kSpec;

    // The caller (the creator) has validated epsilon, C and every size.
    FfnPlugin(float epsilon, std::vector<std::vector<float>> arrays);

    IPluginV3* clone() noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    void collectFields() noexcept override;

private:
    float mEpsilon;
};

class MsaPlugin final : public BlockPlugin
{
public:
    static constexpr char const* kName = "MstMsa";
    // wq, wk, wv [C, C], rescale [C/31], wproj [C, C], bproj [C], wpos1, wpos2 [C, 3, 3]: the layouts of
    // mstpp_msa_nchw.
    static BlockSpec const kSpec;

    // The caller (the creator) has validated C and every size.
    explicit MsaPlugin(std::vector<std::vector<float>> arrays);

    IPluginV3* clone() noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

// Creators: parse the attribute fields (unknown names are rejected, missing ones take their defaults).
class CreatorBase : public IPluginCreatorV3One
{
public:
    CreatorBase(char const* name, std::vector<PluginField> fields) noexcept;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    PluginFieldCollection const* getFieldNames() noexcept override;

private:
    char const* mName;
    std::vector<PluginField> mFieldNames;
    PluginFieldCollection mFieldCollection{};
};

class LayerNormPluginCreator final : public CreatorBase
{
public:
    LayerNormPluginCreator() noexcept;
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
};

class L2NormPluginCreator final : public CreatorBase
{
public:
    L2NormPluginCreator() noexcept;
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
};

class GeluPluginCreator final : public CreatorBase
{
public:
    GeluPluginCreator() noexcept;
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
};

class FfnPluginCreator final : public CreatorBase
{
public:
    FfnPluginCreator() noexcept;
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
};

class MsaPluginCreator final : public CreatorBase
{
public:
    MsaPluginCreator() noexcept;
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
};

} // namespace trt
} // namespace mstpp
