// Host-side checks of build/libmstpp_plugins_dynamic.so that need TensorRT's headers but neither a GPU nor a
// TensorRT builder: the exported creators, and for the fused-block plugins MstFfn and MstMsa their field
// validation, format support, shape checks, workspace size (MstMsa), serialisation round trip and deep-copying
// clone(). Built and run by tests/test_kernels_build.py when TENSORRT_ROOT is set:
//   nvcc -std=c++17 -isystem $TENSORRT_ROOT/include plugin_check.cpp -ldl -o plugin_check
//   ./plugin_check build/libmstpp_plugins_dynamic.so
// Prints "OK <n> checks" and exits 0, or names the first failed check and exits 1.
#include <NvInfer.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
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

// The creator fields of a fused-block plugin: an optional epsilon and named float32 arrays, in creator order.
struct BlockFields
{
    bool hasEpsilon = false;
    float epsilon = 1e-5F;
    std::vector<std::pair<std::string, std::vector<float>>> arrays;

    std::vector<float>& operator[](char const* name)
    {
        for (auto& array : arrays)
        {
            if (array.first == name)
            {
                return array.second;
            }
        }
        std::printf("no array %s\n", name);
        std::abort();
    }
    std::vector<PluginField> fields() const
    {
        std::vector<PluginField> out;
        if (hasEpsilon)
        {
            out.emplace_back("epsilon", &epsilon, PluginFieldType::kFLOAT32, 1);
        }
        for (auto const& array : arrays)
        {
            out.emplace_back(array.first.c_str(), array.second.data(), PluginFieldType::kFLOAT32,
                static_cast<int32_t>(array.second.size()));
        }
        return out;
    }
};

struct FfnFields : BlockFields
{
    explicit FfnFields(int c)
    {
        hasEpsilon = true;
        arrays = {{"ln_gamma", std::vector<float>(c, 1.0F)}, {"ln_beta", std::vector<float>(c, 0.0F)},
            {"w1", std::vector<float>(4 * c * c, 0.01F)}, {"wdw", std::vector<float>(4 * c * 9, 0.1F)},
            {"w2", std::vector<float>(4 * c * c, 0.01F)}};
    }
};

// Field order of MstMsa: the argument order of mstpp_msa_nchw. rescale holds C/31 values (at least one, so that a
// wrong C is reported as such).
struct MsaFields : BlockFields
{
    explicit MsaFields(int c)
    {
        int const heads = c / 31 > 0 ? c / 31 : 1;
        arrays = {{"wq", std::vector<float>(c * c, 0.01F)}, {"wk", std::vector<float>(c * c, 0.02F)},
            {"wv", std::vector<float>(c * c, 0.03F)}, {"rescale", std::vector<float>(heads, 1.0F)},
            {"wproj", std::vector<float>(c * c, 0.04F)}, {"bproj", std::vector<float>(c, 0.5F)},
            {"wpos1", std::vector<float>(c * 9, 0.1F)}, {"wpos2", std::vector<float>(c * 9, 0.2F)}};
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

PluginTensorDesc runDesc(DataType type, Dims dims)
{
    PluginTensorDesc d{};
    d.dims = dims;
    d.type = type;
    d.format = TensorFormat::kLINEAR;
    return d;
}

template <typename T>
T* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return static_cast<T*>(plugin->getCapabilityInterface(type));
}

// What MstFfn and MstMsa share, on a valid plugin with C channels made from `f`: formats, the NCHW/C shape check,
// refusal to enqueue before the device copy, the serialised fields, clone(), re-creation from the serialised
// fields (RUNTIME) and attachToContext() without a GPU.
int checkBlockPlugin(IPluginCreatorV3One* creator, BlockFields const& f, char const* name, int c)
{
    IPluginV3* plugin = create(creator, f.fields());
    CHECK(plugin != nullptr);
    auto* core = capability<IPluginV3OneCore>(plugin, PluginCapabilityType::kCORE);
    auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    CHECK(core != nullptr && build != nullptr && runtime != nullptr);
    CHECK(std::strcmp(core->getPluginName(), name) == 0 && std::strcmp(core->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(core->getPluginNamespace(), "") == 0);
    CHECK(build->getNbOutputs() == 1);
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        DataType out = DataType::kINT32;
        CHECK(build->getOutputDataTypes(&out, 1, &t, 1) == 0 && out == t);
    }

    Dims const x = dims4(2, c, 16, 16);
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        DynamicPluginTensorDesc io[2] = {desc(t, x), desc(t, x)};
        CHECK(build->supportsFormatCombination(0, io, 1, 1) && build->supportsFormatCombination(1, io, 1, 1));
    }
    {
        DynamicPluginTensorDesc io[2] = {desc(DataType::kINT8, x), desc(DataType::kINT8, x)};
        CHECK(!build->supportsFormatCombination(0, io, 1, 1));
        DynamicPluginTensorDesc i32[2] = {desc(DataType::kINT32, x), desc(DataType::kINT32, x)};
        CHECK(!build->supportsFormatCombination(0, i32, 1, 1));
        DynamicPluginTensorDesc mixed[2] = {desc(DataType::kHALF, x), desc(DataType::kFLOAT, x)};
        CHECK(!build->supportsFormatCombination(1, mixed, 1, 1));
        DynamicPluginTensorDesc hwc[2]
            = {desc(DataType::kHALF, x, TensorFormat::kHWC8), desc(DataType::kHALF, x, TensorFormat::kHWC8)};
        CHECK(!build->supportsFormatCombination(0, hwc, 1, 1));
        DynamicPluginTensorDesc linearThenHwc[2]
            = {desc(DataType::kHALF, x), desc(DataType::kHALF, x, TensorFormat::kHWC8)};
        CHECK(!build->supportsFormatCombination(1, linearThenHwc, 1, 1));
        DynamicPluginTensorDesc two[3] = {desc(DataType::kHALF, x), desc(DataType::kHALF, x), desc(DataType::kHALF, x)};
        CHECK(!build->supportsFormatCombination(0, two, 2, 1));
    }
    {
        DynamicPluginTensorDesc in = desc(DataType::kHALF, dims4(-1, c, -1, -1));
        in.min = dims4(1, c, 1, 1);
        in.opt = in.max = dims4(2, c, 64, 64);
        DynamicPluginTensorDesc o = in;
        CHECK(build->configurePlugin(&in, 1, &o, 1) == 0);
        in = desc(DataType::kHALF, dims4(1, c == 62 ? 31 : 62, 8, 8));
        CHECK(build->configurePlugin(&in, 1, &o, 1) != 0);
        char expected[64];
        std::snprintf(expected, sizeof(expected), "4-D NCHW with %d channels", c);
        CHECK(gLogger.said(expected));
        Dims three{};
        three.nbDims = 3;
        three.d[0] = c;
        three.d[1] = three.d[2] = 8;
        in = desc(DataType::kHALF, three);
        CHECK(build->configurePlugin(&in, 1, &o, 1) != 0);
        CHECK(build->getWorkspaceSize(&in, 1, &o, 1) == 0);
        CHECK(build->configurePlugin(&in, 2, &o, 1) != 0);
    }
    {
        // No device copy yet: enqueue must refuse rather than pass null weights to the kernel.
        PluginTensorDesc in = runDesc(DataType::kFLOAT, x);
        PluginTensorDesc o = in;
        void const* inputs[1] = {nullptr};
        void* outputs[1] = {nullptr};
        CHECK(runtime->enqueue(&in, &o, inputs, outputs, nullptr, nullptr) != 0);
        CHECK(gLogger.said("enqueue before the weights were copied"));
        CHECK(gLogger.said(name));
        // The shape check at run time refuses another C before any CUDA call.
        PluginTensorDesc wrong = runDesc(DataType::kFLOAT, dims4(1, c + 1, 4, 4));
        CHECK(runtime->onShapeChange(&wrong, 1, &wrong, 1) != 0);
        CHECK(gLogger.said("4-D NCHW with"));
    }

    auto const fields = snapshot(runtime->getFieldsToSerialize());
    std::vector<PluginField> const given = f.fields();
    CHECK(fields.size() == given.size());
    for (size_t i = 0; i < given.size(); ++i)
    {
        CHECK(fields[i].first == given[i].name);
        CHECK(fields[i].second.size() == 4 * static_cast<size_t>(given[i].length));
        CHECK(std::memcmp(fields[i].second.data(), given[i].data, fields[i].second.size()) == 0);
    }

    // clone() deep-copies: the clone's fields survive the original, and deserialising them (RUNTIME) works.
    IPluginV3* copy = plugin->clone();
    CHECK(copy != nullptr);
    delete plugin;
    auto* copyRuntime = capability<IPluginV3OneRuntime>(copy, PluginCapabilityType::kRUNTIME);
    CHECK(snapshot(copyRuntime->getFieldsToSerialize()) == fields);
    std::vector<PluginField> serialised;
    PluginFieldCollection const* fc = copyRuntime->getFieldsToSerialize();
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        serialised.push_back(fc->fields[i]);
    }
    IPluginV3* restored = create(creator, serialised, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    auto* restoredRuntime = capability<IPluginV3OneRuntime>(restored, PluginCapabilityType::kRUNTIME);
    CHECK(snapshot(restoredRuntime->getFieldsToSerialize()) == fields);

    // attachToContext() returns a clone holding its own device copy; without a GPU the copy fails cleanly.
    IPluginV3* attached = restoredRuntime->attachToContext(nullptr);
    if (attached == nullptr)
    {
        CHECK(gLogger.said("copying the weights to the device failed"));
        std::printf("%s attachToContext: no usable GPU, refused with: %s\n", name, gLogger.last.c_str());
    }
    else
    {
        std::printf("%s attachToContext: weights uploaded to a GPU\n", name);
        delete attached;
    }
    delete restored;
    delete copy;
    return 0;
}

int checkFfn(IPluginCreatorV3One* creator)
{
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 6);
    char const* const fieldNames[] = {"epsilon", "ln_gamma", "ln_beta", "w1", "wdw", "w2"};
    for (int32_t i = 0; i < 6; ++i)
    {
        CHECK(std::strcmp(names->fields[i].name, fieldNames[i]) == 0);
    }

    // --- creation-time validation -------------------------------------------------------------------------
    for (int c : {30, 32, 64, 1})
    {
        FfnFields f(c);
        CHECK(create(creator, f.fields()) == nullptr);
        CHECK(gLogger.said("MstFfn: C (the length of ln_gamma) must be 31, 62 or 124, got "));
    }
    {
        FfnFields f(31);
        f["w1"].push_back(0.0F);
        CHECK(create(creator, f.fields()) == nullptr);
        CHECK(gLogger.said("field 'w1' must hold 4*C*C = 3844 values for C = 31, got 3845"));
        FfnFields g(62);
        g["wdw"].pop_back();
        CHECK(create(creator, g.fields()) == nullptr);
        CHECK(gLogger.said("field 'wdw' must hold 4*C*9 = 2232 values for C = 62, got 2231"));
        FfnFields h(31);
        h["ln_beta"].resize(62);
        CHECK(create(creator, h.fields()) == nullptr);
        CHECK(gLogger.said("field 'ln_beta' must hold C = 31 values"));
    }
    {
        FfnFields f(31);
        std::vector<PluginField> fields = f.fields();
        fields.erase(fields.begin() + 4); // wdw
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("missing field 'wdw' (ln_gamma, ln_beta, w1, wdw and w2 are required)"));
        fields = f.fields();
        fields.emplace_back("bias", f["ln_beta"].data(), PluginFieldType::kFLOAT32, 31);
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("MstFfn: unknown field or wrong type/length: 'bias' (fields: epsilon, ln_gamma"));
        fields = f.fields();
        fields[3].type = PluginFieldType::kINT32;
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("'w1'"));
        FfnFields bad(31);
        bad.epsilon = std::nanf("");
        CHECK(create(creator, bad.fields()) == nullptr);
        CHECK(gLogger.said("epsilon must be finite"));
    }
    {
        // MstFfn needs no workspace.
        IPluginV3* plugin = create(creator, FfnFields(31).fields());
        CHECK(plugin != nullptr);
        auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
        DynamicPluginTensorDesc io[2] = {desc(DataType::kHALF, dims4(2, 31, 64, 64)), desc(DataType::kHALF, dims4(2, 31, 64, 64))};
        CHECK(build->getWorkspaceSize(io, 1, io + 1, 1) == 0);
        delete plugin;
    }
    return checkBlockPlugin(creator, FfnFields(31), "MstFfn", 31);
}

using WorkspaceSize = size_t (*)(int64_t, int, int64_t, int64_t);

int checkMsa(IPluginCreatorV3One* creator, WorkspaceSize workspaceSize)
{
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 8);
    char const* const fieldNames[] = {"wq", "wk", "wv", "rescale", "wproj", "bproj", "wpos1", "wpos2"};
    for (int32_t i = 0; i < 8; ++i)
    {
        CHECK(std::strcmp(names->fields[i].name, fieldNames[i]) == 0);
        CHECK(names->fields[i].type == PluginFieldType::kFLOAT32);
    }

    // --- creation-time validation -------------------------------------------------------------------------
    for (int c : {30, 32, 64, 93, 1})
    {
        MsaFields f(c);
        CHECK(create(creator, f.fields()) == nullptr);
        char expected[96];
        std::snprintf(expected, sizeof(expected), "MstMsa: C (the length of bproj) must be 31, 62 or 124, got %d", c);
        CHECK(gLogger.said(expected));
    }
    for (int c : {31, 62, 124})
    {
        IPluginV3* plugin = create(creator, MsaFields(c).fields());
        CHECK(plugin != nullptr);
        delete plugin;
    }
    {
        MsaFields f(31);
        f["wq"].push_back(0.0F);
        CHECK(create(creator, f.fields()) == nullptr);
        CHECK(gLogger.said("MstMsa: field 'wq' must hold C*C = 961 values for C = 31, got 962"));
        MsaFields g(62);
        g["wpos2"].pop_back();
        CHECK(create(creator, g.fields()) == nullptr);
        CHECK(gLogger.said("field 'wpos2' must hold C*9 = 558 values for C = 62, got 557"));
        MsaFields h(124);
        h["rescale"].resize(3);
        CHECK(create(creator, h.fields()) == nullptr);
        CHECK(gLogger.said("field 'rescale' must hold C/31 = 4 values for C = 124, got 3"));
        MsaFields k(31);
        k["wproj"].resize(62 * 62);
        CHECK(create(creator, k.fields()) == nullptr);
        CHECK(gLogger.said("field 'wproj' must hold C*C = 961 values for C = 31, got 3844"));
    }
    {
        MsaFields f(31);
        std::vector<PluginField> fields = f.fields();
        fields.erase(fields.begin() + 2); // wv
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("MstMsa: missing field 'wv' (wq, wk, wv, rescale, wproj, bproj, wpos1 and wpos2 are "
                           "required)"));
        fields = f.fields();
        float const epsilon = 1e-5F;
        fields.emplace_back("epsilon", &epsilon, PluginFieldType::kFLOAT32, 1); // MstMsa has no epsilon
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("MstMsa: unknown field or wrong type/length: 'epsilon' (fields: wq, wk, wv, rescale"));
        fields = f.fields();
        fields[4].type = PluginFieldType::kINT32; // wproj
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("'wproj'"));
        fields = f.fields();
        fields[5].length = 0; // bproj, empty
        CHECK(create(creator, fields) == nullptr);
        CHECK(gLogger.said("'bproj'"));
        CHECK(create(creator, {}) == nullptr);
        CHECK(gLogger.said("missing field 'wq'"));
    }

    // --- workspace: mstpp_msa_workspace_size for the profile's largest shape ----------------------------------
    for (int c : {31, 62, 124})
    {
        IPluginV3* plugin = create(creator, MsaFields(c).fields());
        CHECK(plugin != nullptr);
        auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
        DynamicPluginTensorDesc in = desc(DataType::kHALF, dims4(-1, c, -1, -1));
        in.min = dims4(1, c, 8, 8);
        in.opt = dims4(1, c, 64, 64);
        in.max = dims4(2, c, 512 >> (c / 62), 488 >> (c / 62));
        DynamicPluginTensorDesc o = in;
        CHECK(build->configurePlugin(&in, 1, &o, 1) == 0);
        size_t const ws = build->getWorkspaceSize(&in, 1, &o, 1);
        CHECK(ws > 0 && ws == workspaceSize(2, c, in.max.d[2], in.max.d[3]));
        CHECK(ws >= workspaceSize(1, c, 64, 64) && ws >= workspaceSize(2, c, 8, 8));
        // Every shape of a profile fits the max shape's workspace, also across the point where the kernel's Gram
        // pass switches to fewer, longer pixel ranges (N = 65536 / 32768 / 8192 for C = 31 / 62 / 124).
        int64_t const knee = c == 31 ? 65536 : c == 62 ? 32768 : 8192;
        bool nonDecreasing = true;
        for (int64_t n = knee - 300; n <= knee + 600; ++n)
        {
            nonDecreasing = nonDecreasing && workspaceSize(1, c, 1, n + 1) >= workspaceSize(1, c, 1, n);
        }
        CHECK(nonDecreasing);
        in.min = dims4(1, c, 1, knee);
        in.max = dims4(1, c, 1, knee + 1);
        CHECK(build->getWorkspaceSize(&in, 1, &o, 1) >= workspaceSize(1, c, 1, knee));
        // A profile whose largest shape the kernel cannot take is refused when the plugin is configured.
        in.max = dims4(1, c, int64_t{1} << 32, 8);
        CHECK(build->configurePlugin(&in, 1, &o, 1) != 0);
        CHECK(gLogger.said("MstMsa: the largest x shape [1, "));
        delete plugin;
    }
    return checkBlockPlugin(creator, MsaFields(62), "MstMsa", 62);
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
    auto workspaceSize = reinterpret_cast<WorkspaceSize>(dlsym(lib, "mstpp_msa_workspace_size"));
    CHECK(setLoggerFinder != nullptr && getCreators != nullptr && workspaceSize != nullptr);
    setLoggerFinder(&gFinder);

    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    CHECK(nb == 5);
    char const* const names[] = {"MstLayerNorm", "MstL2Norm", "MstGelu", "MstFfn", "MstMsa"};
    IPluginCreatorV3One* v3[5] = {};
    for (int32_t i = 0; i < nb; ++i)
    {
        CHECK(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
        v3[i] = static_cast<IPluginCreatorV3One*>(creators[i]);
        CHECK(std::strcmp(v3[i]->getPluginName(), names[i]) == 0);
        CHECK(std::strcmp(v3[i]->getPluginVersion(), "1") == 0);
        CHECK(std::strcmp(v3[i]->getPluginNamespace(), "") == 0);
    }
    if (checkFfn(v3[3]) != 0 || checkMsa(v3[4], workspaceSize) != 0)
    {
        return 1;
    }
    std::printf("OK %d checks\n", gChecks);
    return 0;
}
