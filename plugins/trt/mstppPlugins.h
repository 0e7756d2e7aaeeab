// TensorRT IPluginV3 wrappers around the MST++ kernels (plugins/kernels/mstpp_kernels.h):
//   MstLayerNorm (x, gamma, beta) -> y    LayerNorm over the last dim (layout 0) or over dim 1 of NCHW (layout 1)
//   MstL2Norm    (x) -> y                 x / max(||x||_2, eps) along the last dim
//   MstGelu      (x) -> y                 exact (erf) GELU
//   MstFfn       (x) -> y                 the MST++ feed-forward half of an MSAB, residual included:
//                                         y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x)))) on NCHW, weights as fields
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

class FfnPlugin final : public PluginBase
{
public:
    static constexpr char const* kName = "MstFfn";
    static constexpr float kDefaultEpsilon = 1e-5F;

    // The host weights (float32, the layouts of mstpp_ffn_nchw) are copied into the plugin; C = lnGamma.size().
    // The caller (the creator) has validated C and every size.
    FfnPlugin(float epsilon, std::vector<float> lnGamma, std::vector<float> lnBeta, std::vector<float> w1,
        std::vector<float> wdw, std::vector<float> w2);
    ~FfnPlugin() noexcept override;
    FfnPlugin(FfnPlugin const&) = delete;
    FfnPlugin& operator=(FfnPlugin const&) = delete;

    IPluginV3* clone() noexcept override;
    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t onShapeChange(
        PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t nbInputs() const noexcept override
    {
        return 1;
    }
    int32_t minRank() const noexcept override
    {
        return 4;
    }
    void collectFields() noexcept override;

private:
    // Copies the five arrays into one device allocation of this object (once; a no-op when already there).
    int32_t uploadWeights() noexcept;
    void releaseWeights() noexcept;
    // Rank 4 with dim 1 equal to C (or not yet known).
    bool checkShape(Dims const& dims) const noexcept;

    float mEpsilon;
    int32_t mChannels;
    std::vector<float> mLnGamma; // [C]
    std::vector<float> mLnBeta;  // [C]
    std::vector<float> mW1;      // [4C, C]
    std::vector<float> mWdw;     // [4C, 3, 3]
    std::vector<float> mW2;      // [C, 4C]
    float* mDeviceWeights{nullptr}; // owned by this object only; never shared between clones
    int32_t mDevice{-1};            // the CUDA device mDeviceWeights lives on
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

} // namespace trt
} // namespace mstpp
