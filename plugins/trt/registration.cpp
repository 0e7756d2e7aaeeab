// How TensorRT finds the plugins' creators. The plugin sources are one file per plugin over the shared base
// (pluginBase.cpp, blockPlugin.cpp); see mstppPlugins.h and plugins/README.md.
//
// Built twice by the Makefile. MSTPP_STATIC_REGISTRATION=1 registers the creators when the library is loaded
// (ctypes.CDLL, trtexec --staticPlugins); =0 exports getCreators/setLoggerFinder instead, for
// IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, --setPluginsToSerialize), which refuses creators that
// are already registered.
#include "pluginInternal.h"

#ifndef MSTPP_STATIC_REGISTRATION
#define MSTPP_STATIC_REGISTRATION 1
#endif

namespace mstpp
{
namespace trt
{

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
