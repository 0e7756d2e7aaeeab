// Host-side checks of build/libmstpp_plugins_dynamic.so that need TensorRT's headers but neither a GPU nor a
// TensorRT builder: the exported creators, and MstFfn's field validation, format support, shape checks,
// serialisation round trip and deep-copying clone(). Built and run by tests/test_kernels_build.py when
// TENSORRT_ROOT is set:
//   nvcc -std=c++17 -isystem $TENSORRT_ROOT/include plugin_check.cpp -ldl -o plugin_check
//   ./plugin_check build/libmstpp_plugins_dynamic.so
// Prints "OK <n> checks" and exits 0, or names the first failed check and exits 1.
#include <NvInfer.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gChecks = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        ++gChecks;                                                                                                     \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAILED line %d: %s (last plugin message: '%s')\n", __LINE__, #cond, gLogger.last.c_str());  \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

class CaptureLogger : public ILogger
{
public:
    void log(Severity /*severity*/, AsciiChar const* msg) noexcept override
    {
        last = msg != nullptr ? msg : "";
    }
    bool said(char const* text) const
    {
        return last.find(text) != std::string::npos;
    }
    std::string last;
};

CaptureLogger gLogger;

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &gLogger;
    }
};

Finder gFinder;

struct FfnFields
{
    float epsilon = 1e-5F;
    std::vector<float> gamma, beta, w1, wdw, w2;
    explicit FfnFields(int c)
        : gamma(c, 1.0F)
        , beta(c, 0.0F)
        , w1(4 * c * c, 0.01F)
        , wdw(4 * c * 9, 0.1F)
        , w2(4 * c * c, 0.01F)
    {
    }
    std::vector<PluginField> fields() const
    {
        return {PluginField("epsilon", &epsilon, PluginFieldType::kFLOAT32, 1),
            PluginField("ln_gamma", gamma.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(gamma.size())),
            PluginField("ln_beta", beta.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(beta.size())),
            PluginField("w1", w1.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(w1.size())),
            PluginField("wdw", wdw.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(wdw.size())),
            PluginField("w2", w2.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(w2.size()))};
    }
};

IPluginV3* create(IPluginCreatorV3One* creator, std::vector<PluginField> const& fields,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection fc{};
    fc.nbFields = static_cast<int32_t>(fields.size());
    fc.fields = fields.data();
    gLogger.last.clear();
    return creator->createPlugin("ffn", &fc, phase);
}

DynamicPluginTensorDesc desc(DataType type, Dims dims, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = dims;
    d.min = d.max = d.opt = dims;
    return d;
}

Dims dims4(int64_t b, int64_t c, int64_t h, int64_t w)
{
    Dims d{};
    d.nbDims = 4;
    d.d[0] = b;
    d.d[1] = c;
    d.d[2] = h;
    d.d[3] = w;
    return d;
}

// Field name -> bytes of the serialised fields.
std::vector<std::pair<std::string, std::vector<char>>> snapshot(PluginFieldCollection const* fc)
{
    std::vector<std::pair<std::string, std::vector<char>>> out;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        auto const* bytes = static_cast<char const*>(fc->fields[i].data);
        out.emplace_back(fc->fields[i].name, std::vector<char>(bytes, bytes + 4 * fc->fields[i].length));
    }
    return out;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::printf("usage: %s libmstpp_plugins_dynamic.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::printf("FAILED dlopen: %s\n", dlerror());
        return 1;
    }
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    CHECK(setLoggerFinder != nullptr && getCreators != nullptr);
    setLoggerFinder(&gFinder);

    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    CHECK(nb == 4);
    char const* const names[] = {"MstLayerNorm", "MstL2Norm", "MstGelu", "MstFfn"};
    IPluginCreatorV3One* ffnCreator = nullptr;
    for (int32_t i = 0; i < nb; ++i)
    {
        CHECK(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        CHECK(std::strcmp(creator->getPluginName(), names[i]) == 0);
        CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
        CHECK(std::strcmp(creator->getPluginNamespace(), "") == 0);
        if (i == 3)
        {
            ffnCreator = creator;
        }
    }
    PluginFieldCollection const* names6 = ffnCreator->getFieldNames();
    CHECK(names6 != nullptr && names6->nbFields == 6);

    // --- creation-time validation -------------------------------------------------------------------------
    for (int c : {30, 32, 64, 1})
    {
        FfnFields f(c);
        CHECK(create(ffnCreator, f.fields()) == nullptr);
        CHECK(gLogger.said("C (the length of ln_gamma) must be 31, 62 or 124, got "));
    }
    {
        FfnFields f(31);
        f.w1.push_back(0.0F);
        CHECK(create(ffnCreator, f.fields()) == nullptr);
        CHECK(gLogger.said("field 'w1' must hold 4*C*C = 3844 values for C = 31, got 3845"));
        FfnFields g(62);
        g.wdw.pop_back();
        CHECK(create(ffnCreator, g.fields()) == nullptr);
        CHECK(gLogger.said("field 'wdw' must hold 4*C*9 = 2232 values for C = 62, got 2231"));
        FfnFields h(31);
        h.beta.resize(62);
        CHECK(create(ffnCreator, h.fields()) == nullptr);
        CHECK(gLogger.said("field 'ln_beta' must hold C = 31 values"));
    }
    {
        FfnFields f(31);
        std::vector<PluginField> fields = f.fields();
        fields.erase(fields.begin() + 4); // wdw
        CHECK(create(ffnCreator, fields) == nullptr);
        CHECK(gLogger.said("missing field 'wdw'"));
        fields = f.fields();
        fields.emplace_back("bias", f.beta.data(), PluginFieldType::kFLOAT32, 31);
        CHECK(create(ffnCreator, fields) == nullptr);
        CHECK(gLogger.said("unknown field or wrong type/length: 'bias'"));
        fields = f.fields();
        fields[3].type = PluginFieldType::kINT32;
        CHECK(create(ffnCreator, fields) == nullptr);
        CHECK(gLogger.said("'w1'"));
        FfnFields bad(31);
        bad.epsilon = std::nanf("");
        CHECK(create(ffnCreator, bad.fields()) == nullptr);
        CHECK(gLogger.said("epsilon must be finite"));
    }

    // --- a valid plugin: formats, shapes, serialisation, clone --------------------------------------------
    FfnFields f(31);
    IPluginV3* plugin = create(ffnCreator, f.fields());
    CHECK(plugin != nullptr);
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime
        = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(core != nullptr && build != nullptr && runtime != nullptr);
    CHECK(std::strcmp(core->getPluginName(), "MstFfn") == 0 && std::strcmp(core->getPluginVersion(), "1") == 0);
    CHECK(build->getNbOutputs() == 1);
    DataType out = DataType::kFLOAT;
    DataType const half = DataType::kHALF;
    CHECK(build->getOutputDataTypes(&out, 1, &half, 1) == 0 && out == DataType::kHALF);

    Dims const x = dims4(2, 31, 16, 16);
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        DynamicPluginTensorDesc io[2] = {desc(t, x), desc(t, x)};
        CHECK(build->supportsFormatCombination(0, io, 1, 1) && build->supportsFormatCombination(1, io, 1, 1));
    }
    {
        DynamicPluginTensorDesc io[2] = {desc(DataType::kINT8, x), desc(DataType::kINT8, x)};
        CHECK(!build->supportsFormatCombination(0, io, 1, 1));
        DynamicPluginTensorDesc mixed[2] = {desc(DataType::kHALF, x), desc(DataType::kFLOAT, x)};
        CHECK(!build->supportsFormatCombination(1, mixed, 1, 1));
        DynamicPluginTensorDesc chw[2]
            = {desc(DataType::kHALF, x, TensorFormat::kHWC8), desc(DataType::kHALF, x, TensorFormat::kHWC8)};
        CHECK(!build->supportsFormatCombination(0, chw, 1, 1));
        DynamicPluginTensorDesc two[3] = {desc(DataType::kHALF, x), desc(DataType::kHALF, x), desc(DataType::kHALF, x)};
        CHECK(!build->supportsFormatCombination(0, two, 2, 1));
    }
    {
        DynamicPluginTensorDesc in = desc(DataType::kHALF, dims4(-1, 31, -1, -1));
        DynamicPluginTensorDesc o = in;
        CHECK(build->configurePlugin(&in, 1, &o, 1) == 0);
        in = desc(DataType::kHALF, dims4(1, 62, 8, 8));
        CHECK(build->configurePlugin(&in, 1, &o, 1) != 0);
        CHECK(gLogger.said("4-D NCHW with 31 channels"));
        Dims three{};
        three.nbDims = 3;
        three.d[0] = 31;
        three.d[1] = three.d[2] = 8;
        in = desc(DataType::kHALF, three);
        CHECK(build->configurePlugin(&in, 1, &o, 1) != 0);
        CHECK(build->getWorkspaceSize(&in, 1, &o, 1) == 0);
    }
    {
        // No device copy yet: enqueue must refuse rather than pass null weights to the kernel.
        PluginTensorDesc in{};
        in.dims = x;
        in.type = DataType::kFLOAT;
        in.format = TensorFormat::kLINEAR;
        PluginTensorDesc o = in;
        void const* inputs[1] = {nullptr};
        void* outputs[1] = {nullptr};
        CHECK(runtime->enqueue(&in, &o, inputs, outputs, nullptr, nullptr) != 0);
        CHECK(gLogger.said("enqueue before the weights were copied"));
    }

    auto const fields = snapshot(runtime->getFieldsToSerialize());
    CHECK(fields.size() == 6);
    size_t const lengths[] = {4, 4 * 31, 4 * 31, 4 * 3844, 4 * 1116, 4 * 3844};
    char const* const fieldNames[] = {"epsilon", "ln_gamma", "ln_beta", "w1", "wdw", "w2"};
    for (size_t i = 0; i < 6; ++i)
    {
        CHECK(fields[i].first == fieldNames[i] && fields[i].second.size() == lengths[i]);
    }
    CHECK(std::memcmp(fields[3].second.data(), f.w1.data(), lengths[3]) == 0);

    // clone() deep-copies: the clone's fields survive the original, and deserialising them (RUNTIME) works.
    IPluginV3* copy = plugin->clone();
    CHECK(copy != nullptr);
    delete plugin;
    auto* copyRuntime = static_cast<IPluginV3OneRuntime*>(copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(snapshot(copyRuntime->getFieldsToSerialize()) == fields);
    std::vector<PluginField> serialised;
    PluginFieldCollection const* fc = copyRuntime->getFieldsToSerialize();
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        serialised.push_back(fc->fields[i]);
    }
    IPluginV3* restored = create(ffnCreator, serialised, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    auto* restoredRuntime
        = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(snapshot(restoredRuntime->getFieldsToSerialize()) == fields);

    // attachToContext() returns a clone holding its own device copy; without a GPU the copy fails cleanly.
    IPluginV3* attached = restoredRuntime->attachToContext(nullptr);
    if (attached == nullptr)
    {
        CHECK(gLogger.said("copying the weights to the device failed"));
        std::printf("attachToContext: no usable GPU, refused with: %s\n", gLogger.last.c_str());
    }
    else
    {
        std::printf("attachToContext: weights uploaded to a GPU\n");
        delete attached;
    }
    delete restored;
    delete copy;
    std::printf("OK %d checks\n", gChecks);
    return 0;
}
