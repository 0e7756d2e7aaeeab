// The "glue" convolutions of MST++ on NCHW tensors, without the NCHW <-> NHWC transforms cuDNN inserts:
//   mstpp_conv_nchw    Conv2d, no bias, zero padding, (k3, s1, p1) or (k4, s2, p1), optional residual add
//   mstpp_upfuse_nchw  Conv1x1(cat([ConvTranspose2d(k2, s2, bias)(low), skip])) with pre-folded weights
//
// ================================================ conv: two kernels behind one entry point
// A block owns TH x TW output pixels of one image and a group of 32 output channels (Cout = 31 / 62 / 124 ->
// 1 / 2 / 4 groups; channels past Cout get zero weights and are never stored). It walks the input channels in
// chunks: each chunk's input halo tile (zeros outside the image) and weights go to shared memory, then the
// block accumulates. Stride 2: the halo columns are stored even columns first, then odd ones ("slot" below), so
// output pixel ox reads input column 2 ox + kx from consecutive shared addresses (no 2-way bank conflicts).
//
//   conv_fma_kernel  FP32 storage, and Cin = 3 for every dtype (K = 27 is too small for tensor cores to matter).
//     Exact FP32 FMA (no TF32, by policy). Tile 8 x 32, a thread owns 4 vertically adjacent pixels x 8 output
//     channels (32 accumulators); a warp covers 32 adjacent columns (conflict-free input reads) and one channel
//     group of 8 (weights broadcast as float4). Per input channel and kernel column the thread loads the
//     S * 3 + K input values of its column once and reuses them for every kernel row. Chunks of 8 (k3), 4 (k4) or
//     3 (Cin = 3) input channels: 20 / 27 / 8 KB of shared memory, several blocks per SM to hide the load phase.
//   conv_tc_kernel   FP16 / BF16 storage, Cin = 31 / 62: implicit GEMM on tensor cores (mma.sync m16n8k16,
//     operands in the storage type, FP32 accumulation). M = 32 output channels (2 m16 tiles), N = the tile's
//     pixels (n8 tiles = 8 adjacent pixels of one row), K = (ky, kx, ci) with chunks of 32 input channels (31 real
//     + zero for Cin = 31; 32 + 30 for Cin = 62). Input tile as [halo pixel][40 halves] (channel-contiguous, 80-byte
//     pitch so an ldmatrix's 8 rows hit distinct bank quads), weights as [32 co][K^2 * 32 + 8] converted from the
//     FP32 ABI weights by each block. B fragments come straight from the halo tile with ldmatrix: the row address
//     of pixel q for tap (ky, kx) is its (0, 0) address plus a compile-time offset, so implicit GEMM needs no
//     im2col buffer. Accumulators go through shared memory (FP32) to coalesced NCHW stores with the residual.
//     Rounded: the weights (to T); exact: x (stored T), products and FP32 sums; y rounded once.
//
// Byte / FLOP model, H100 SXM (132 SMs, ~3.0 TB/s achievable DRAM, ~1.75 GHz), batch 1:
//   3x3 31->31 at 512 x 488 (embedding, mapping, conv_out), 1024 blocks (16 x 64 tiles of 8 x 32):
//     DRAM: x 15.5 MB + y 15.5 MB (FP16; +15.5 MB residual) -> 10 us (15 us); FP32 twice that -> 21 us (31 us).
//     Halo re-reads (340 / 256 pixels) come from L2. Weights: 36 KB FP32 per block from L2 (37 MB in all, ~4 us).
//     FP16: tensor FLOPs 4.8 G (padded; 4.3 G useful) -> ~10 us at ~500 TFLOP/s mma.sync; shared memory ~470 KB
//     per block (ldmatrix 295 KB, staging with 4-way conflicts ~110 KB, epilogue 64 KB) -> ~28k clk per SM = 16 us;
//     prediction 0.02 - 0.035 ms (load phase only partly overlapped: 4 blocks of 52 KB per SM).
//     FP32: 2.36 G FFMA (Cin padded to 32) = 74k warp-FFMA + ~12k LDS per block -> ~175k clk per SM at full issue
//     = 100 us; prediction 0.11 - 0.14 ms (FMA-issue bound).
//   4x4 s2 31->62 (512 x 488 -> 256 x 244): 1024 blocks of 8 x 16 pixels x 32 channels (TC) / 512 of 8 x 32 (FMA).
//     DRAM FP16 15.5 + 7.8 MB -> 8 us; tensor 4.3 GFLOP -> ~9 us; ldmatrix 393 KB per block -> ~15 us.
//     Prediction FP16 0.025 - 0.04 ms; FP32 2.05 G FFMA -> 70 us at full issue, prediction 0.09 - 0.12 ms.
//   4x4 s2 62->124 (256 x 244 -> 128 x 122): 512 TC blocks of two 32-channel chunks; same FLOPs (4.3 G) and
//     ~half the DRAM of the previous case. Prediction FP16 0.025 - 0.04 ms, FP32 0.09 - 0.12 ms.
//   3x3 3->31 (conv_in, FMA kernel for every dtype): 0.42 GFLOP (0.21 G FFMA) + DRAM 1.5 + 15.5 MB (FP16) ->
//     prediction 0.015 - 0.025 ms.
//
// ================================================ upfuse
// y(p) = A_{p mod 2} low(p / 2) + Bm skip(p) + c (the transposed conv and the 1x1 fuse conv folded into one linear
// map per output parity; the fold is done once by the caller: mstpp.kernels.fold_upfuse). A thread owns one low
// pixel, i.e. its 2 x 2 output pixels, for 16 output channels (64 accumulators); the folded weights of the block's
// channel group sit in shared memory as [ci][parity][16] and [cs][16] (float4 broadcasts). FP32 FMA for every dtype.
//   Clow = 62 (-> 31 channels at 512 x 488): 0.74 G FFMA -> ~25 us at full issue; DRAM FP16 7.8 + 15.5 + 15.5 MB
//     -> 13 us (FP32 26 us). Prediction FP16 0.03 - 0.04 ms, FP32 0.04 - 0.05 ms.
//   Clow = 124 (-> 62 channels at 256 x 244): the same FFMA count and DRAM; only 244 blocks of 256 threads (~2 per
//     SM), so more latency-bound: prediction 0.035 - 0.05 ms.
// Not measured yet (compile-checked only when written).
#include <atomic>
#include <climits>
#include <type_traits>

#include "block_common.cuh"
#include "mma16.cuh"

namespace mstpp
{
namespace
{

constexpr int kConvThreads = 256;
constexpr int kCoutGroup = 32; // output channels per block

// Geometry of an output tile TH x TW for a (KS, S, pad 1) convolution: the halo tile is IH x IW input pixels
// starting at (S * oy0 - 1, S * ox0 - 1).
template <int kKS, int kS, int kTH, int kTW>
struct ConvGeom
{
    static constexpr int KS = kKS;
    static constexpr int KK = kKS * kKS;
    static constexpr int S = kS;
    static constexpr int TH = kTH;
    static constexpr int TW = kTW;
    static constexpr int IH = S * (TH - 1) + KS;
    static constexpr int IW = S * (TW - 1) + KS;
    static_assert(S == 1 || (S == 2 && IW % 2 == 0), "stride-2 halo rows split evenly into even and odd columns");

    // Shared-memory column of halo column hc: stride 2 stores even columns first, then odd ones.
    __host__ __device__ static constexpr int slot(int hc)
    {
        return S == 1 ? hc : (hc % 2) * (IW / 2) + hc / 2;
    }
    // slot(S * ox + kx) - slot(S * ox): independent of ox.
    __host__ __device__ static constexpr int kx_offset(int kx)
    {
        return S == 1 ? kx : (kx % 2) * (IW / 2) + kx / 2;
    }
};

// Raw 16-bit pattern of a stored value (no conversion: the tensor-core path keeps x exact).
template <typename T>
__device__ __forceinline__ uint32_t raw_bits(T v)
{
    static_assert(sizeof(T) == 2, "16-bit storage");
    uint16_t b;
    memcpy(&b, &v, 2);
    return b;
}

// =================================================================================================================
// FP32 FMA kernel (FP32 storage; Cin = 3 for every dtype)

template <int kKS, int kS, int kCIC>
struct ConvFmaConfig : ConvGeom<kKS, kS, 8, 32>
{
    using G = ConvGeom<kKS, kS, 8, 32>;
    static constexpr int CIC = kCIC;                    // input channels per chunk
    static constexpr int NP = 4;                        // output rows per thread
    static constexpr int NC = 8;                        // output channels per thread
    static constexpr int ROWS_IN = kS * (NP - 1) + kKS; // input rows one thread column reads
    static constexpr int kInFloats = CIC * G::IH * G::IW;
    static constexpr int kWFloats = CIC * G::KK * kCoutGroup;
    static constexpr int kSmemBytes = (kInFloats + kWFloats) * static_cast<int>(sizeof(float));
    static constexpr int kLoadIters = cdiv(kInFloats, kConvThreads);
    static constexpr int kLoadBatch = 8;
    static_assert(G::TW == 32 && G::TH == 2 * NP && kConvThreads == 32 * 2 * (kCoutGroup / NC),
        "warp = 32 columns x one row group x one channel group; 8 warps = 2 row groups x 4 channel groups");
    static_assert(kInFloats % 4 == 0, "the weights start 16-byte aligned");
    static_assert(kSmemBytes <= 48 * 1024, "no shared-memory opt-in needed");
};

using ConvFma3x3 = ConvFmaConfig<3, 1, 8>;
using ConvFma3x3Cin3 = ConvFmaConfig<3, 1, 3>;
using ConvFma4x4 = ConvFmaConfig<4, 2, 4>;

// Launch: grid = B * tiles_per_image * groups blocks of kConvThreads, dynamic shared memory Cfg::kSmemBytes.
template <typename T, typename Cfg>
__global__ void __launch_bounds__(kConvThreads) conv_fma_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ w, T const* residual, int Cin, int Cout, int H, int W, int Ho, int Wo, int tiles_x,
    int tiles_per_image, int groups)
{
    constexpr int KS = Cfg::KS;
    constexpr int KK = Cfg::KK;
    constexpr int S = Cfg::S;
    constexpr int IH = Cfg::IH;
    constexpr int IW = Cfg::IW;
    constexpr int CIC = Cfg::CIC;
    constexpr int NP = Cfg::NP;
    constexpr int NC = Cfg::NC;
    extern __shared__ float4 smem4[];
    float* const xs = reinterpret_cast<float*>(smem4);
    float* const ws = xs + Cfg::kInFloats;

    int const tid = threadIdx.x;
    int const lane = tid % 32;
    int const warp = tid / 32;
    int const rg = warp % 2; // row group: output rows 4 rg .. 4 rg + 3 of the tile
    int const cg = warp / 2; // channel group: output channels 8 cg .. 8 cg + 7 of the block's 32
    int bid = blockIdx.x;
    int const cog = bid % groups;
    bid /= groups;
    int const image = bid / tiles_per_image;
    int const tile = bid - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const oy0 = ty * Cfg::TH;
    int const ox0 = (tile - ty * tiles_x) * Cfg::TW;
    int const iy0 = S * oy0 - 1;
    int const ix0 = S * ox0 - 1;
    int64_t const hw = static_cast<int64_t>(H) * W;
    T const* const xb = x + static_cast<int64_t>(image) * Cin * hw;

    float acc[NP][NC];
#pragma unroll
    for (int p = 0; p < NP; ++p)
    {
#pragma unroll
        for (int c = 0; c < NC; ++c)
        {
            acc[p][c] = 0.0f;
        }
    }

    for (int c0 = 0; c0 < Cin; c0 += CIC)
    {
        __syncthreads(); // the previous chunk's readers are done
        // Input chunk -> xs[ci][hr][slot(hc)] as float, zero outside the image and past Cin. Loads are issued in
        // batches so several are in flight per thread.
        for (int i0 = 0; i0 < Cfg::kLoadIters; i0 += Cfg::kLoadBatch)
        {
            float v[Cfg::kLoadBatch];
            int dst[Cfg::kLoadBatch];
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * kConvThreads;
                v[k] = 0.0f;
                dst[k] = -1;
                if (i0 + k < Cfg::kLoadIters && e < Cfg::kInFloats)
                {
                    int const ci = e / (IH * IW);
                    int const rem = e - ci * (IH * IW);
                    int const hr = rem / IW;
                    int const hc = rem - hr * IW;
                    int const gy = iy0 + hr;
                    int const gx = ix0 + hc;
                    dst[k] = (ci * IH + hr) * IW + Cfg::slot(hc);
                    if (c0 + ci < Cin && gy >= 0 && gy < H && gx >= 0 && gx < W)
                    {
                        v[k] = to_float(xb[(c0 + ci) * hw + static_cast<int64_t>(gy) * W + gx]);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                if (dst[k] >= 0)
                {
                    xs[dst[k]] = v[k];
                }
            }
        }
        // Weights of the chunk -> ws[ci][ky * KS + kx][co] (co fastest: conflict-free stores, float4 reads).
        for (int e = tid; e < Cfg::kWFloats; e += kConvThreads)
        {
            int const co = e % kCoutGroup;
            int const rest = e / kCoutGroup;
            int const kk = rest % KK;
            int const ci = rest / KK;
            int const gco = cog * kCoutGroup + co;
            float v = 0.0f;
            if (gco < Cout && c0 + ci < Cin)
            {
                v = __ldg(w + (static_cast<int64_t>(gco) * Cin + c0 + ci) * KK + kk);
            }
            ws[e] = v;
        }
        __syncthreads();

#pragma unroll 2
        for (int ci = 0; ci < CIC; ++ci)
        {
            float const* const xcol = xs + (ci * IH + S * NP * rg) * IW + Cfg::slot(S * lane);
            float const* const wrow = ws + ci * KK * kCoutGroup + cg * NC;
#pragma unroll
            for (int kx = 0; kx < KS; ++kx)
            {
                float v[Cfg::ROWS_IN];
#pragma unroll
                for (int j = 0; j < Cfg::ROWS_IN; ++j)
                {
                    v[j] = xcol[j * IW + Cfg::kx_offset(kx)];
                }
#pragma unroll
                for (int ky = 0; ky < KS; ++ky)
                {
                    float4 const wa = *reinterpret_cast<float4 const*>(wrow + (ky * KS + kx) * kCoutGroup);
                    float4 const wb = *reinterpret_cast<float4 const*>(wrow + (ky * KS + kx) * kCoutGroup + 4);
                    float const wv[NC] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
#pragma unroll
                    for (int p = 0; p < NP; ++p)
                    {
                        float const xv = v[S * p + ky];
#pragma unroll
                        for (int c = 0; c < NC; ++c)
                        {
                            acc[p][c] = fmaf(wv[c], xv, acc[p][c]);
                        }
                    }
                }
            }
        }
    }

    // Direct stores: a warp writes 32 adjacent columns of one row and channel per instruction.
    int64_t const ohw = static_cast<int64_t>(Ho) * Wo;
    int const ox = ox0 + lane;
#pragma unroll
    for (int p = 0; p < NP; ++p)
    {
        int const oy = oy0 + NP * rg + p;
        if (oy < Ho && ox < Wo)
        {
#pragma unroll
            for (int c = 0; c < NC; ++c)
            {
                int const gco = cog * kCoutGroup + cg * NC + c;
                if (gco < Cout)
                {
                    int64_t const idx = (static_cast<int64_t>(image) * Cout + gco) * ohw
                        + static_cast<int64_t>(oy) * Wo + ox;
                    float v = acc[p][c];
                    if (residual != nullptr)
                    {
                        v += to_float(residual[idx]);
                    }
                    y[idx] = from_float<T>(v);
                }
            }
        }
    }
}

// =================================================================================================================
// Tensor-core kernel (FP16 / BF16 storage, Cin = 31 or 62)

template <int kKS, int kS, int kTH, int kTW>
struct ConvTcConfig : ConvGeom<kKS, kS, kTH, kTW>
{
    using G = ConvGeom<kKS, kS, kTH, kTW>;
    static constexpr int CIC = 32;                  // input channels per chunk (K per tap)
    static constexpr int NO = G::TH * G::TW;
    static constexpr int NPX = G::IH * G::IW;       // halo pixels
    static constexpr int XP = CIC + 8;              // halves per halo pixel (80 bytes: ldmatrix conflict-free)
    static constexpr int WP = G::KK * CIC + 8;      // halves per weight row ([co][tap][ci])
    static constexpr int NT = NO / 8;            // n8 tiles of the output tile
    static constexpr int NW = NT / 8;               // n8 tiles per warp
    static constexpr int OSP = NO + 8;           // epilogue pitch (floats), 8 mod 32: conflict-free float2
    static constexpr int kXsBytes = NPX * XP * 2;
    static constexpr int kOsBytes = kCoutGroup * OSP * 4;
    static constexpr int kUBytes = round_up(cmax(kXsBytes, kOsBytes), 16);
    static constexpr int kWBytes = kCoutGroup * WP * 2;
    static constexpr int kSmemBytes = kUBytes + kWBytes;
    static constexpr int kInWords = (CIC / 2) * NPX;
    static constexpr int kInIters = cdiv(kInWords, kConvThreads);
    static constexpr int kWWords = kCoutGroup * G::KK * (CIC / 2);
    static constexpr int kLoadBatch = 8;
    static_assert(G::TW % 8 == 0, "an n8 tile is 8 adjacent pixels of one row");
    static_assert(NT % 8 == 0 && NW % 2 == 0, "8 warps, each with pairs of n8 tiles (one ldmatrix.x4 per pair)");
    static_assert((XP * 2) % 16 == 0 && (WP * 2) % 16 == 0, "ldmatrix rows are 16-byte aligned");
    static_assert((XP * 2 / 16) % 2 == 1 && (WP * 2 / 16) % 2 == 1, "odd 16-byte pitches: 8 rows, 8 bank quads");
    static_assert(kSmemBytes <= 101376, "stay within the 99 KB a block may opt into on sm_86/sm_89");
};

using ConvTc3x3 = ConvTcConfig<3, 1, 8, 32>;
using ConvTc4x4 = ConvTcConfig<4, 2, 8, 16>;

template <typename T, typename Cfg>
__global__ void __launch_bounds__(kConvThreads, 2) conv_tc_kernel(T const* __restrict__ x, T* __restrict__ y,
    float const* __restrict__ w, T const* residual, int Cin, int Cout, int H, int W, int Ho, int Wo, int tiles_x,
    int tiles_per_image, int groups)
{
    constexpr int KS = Cfg::KS;
    constexpr int KK = Cfg::KK;
    constexpr int S = Cfg::S;
    constexpr int IW = Cfg::IW;
    constexpr int NPX = Cfg::NPX;
    constexpr int XP = Cfg::XP;
    constexpr int WP = Cfg::WP;
    constexpr int NW = Cfg::NW;
    constexpr int NO = Cfg::NO;
    extern __shared__ float4 smem4[];
    unsigned char* const smem = reinterpret_cast<unsigned char*>(smem4);
    T* const xs = reinterpret_cast<T*>(smem);                  // chunk loop
    uint32_t* const xs32 = reinterpret_cast<uint32_t*>(smem);
    float* const os = reinterpret_cast<float*>(smem);          // epilogue (after the last reader of xs)
    T* const wb = reinterpret_cast<T*>(smem + Cfg::kUBytes);
    uint32_t* const wb32 = reinterpret_cast<uint32_t*>(smem + Cfg::kUBytes);

    int const tid = threadIdx.x;
    int const lane = tid % 32;
    int const warp = tid / 32;
    int bid = blockIdx.x;
    int const cog = bid % groups;
    bid /= groups;
    int const image = bid / tiles_per_image;
    int const tile = bid - image * tiles_per_image;
    int const ty = tile / tiles_x;
    int const oy0 = ty * Cfg::TH;
    int const ox0 = (tile - ty * tiles_x) * Cfg::TW;
    int const iy0 = S * oy0 - 1;
    int const ix0 = S * ox0 - 1;
    int64_t const hw = static_cast<int64_t>(H) * W;
    T const* const xb = x + static_cast<int64_t>(image) * Cin * hw;

    // ldmatrix row addresses (halves). A (weights, 16 x 16 per m16 tile and k16 step): lane l -> row
    // l % 8 + 8 ((l / 8) % 2), column 8 (l / 16). B (halo tile): lane l -> matrix m = l / 8 = (n8 tile 2 i2 + m / 2,
    // channels 8 (m % 2) ..), row = pixel l % 8 of that tile; the (ky, kx) tap adds a constant.
    int const a_base = (lane % 8 + (lane / 8) % 2 * 8) * WP + lane / 16 * 8;
    int b_base[NW / 2];
#pragma unroll
    for (int i2 = 0; i2 < NW / 2; ++i2)
    {
        int const m = lane / 8;
        int const q = (warp * NW + 2 * i2 + m / 2) * 8 + lane % 8;
        int const qr = q / Cfg::TW;
        int const qc = q - qr * Cfg::TW;
        b_base[i2] = ((S * qr) * IW + Cfg::slot(S * qc)) * XP + (m % 2) * 8;
    }

    float acc[2][NW][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
    {
#pragma unroll
        for (int i = 0; i < NW; ++i)
        {
#pragma unroll
            for (int e = 0; e < 4; ++e)
            {
                acc[mt][i][e] = 0.0f;
            }
        }
    }

    for (int c0 = 0; c0 < Cin; c0 += Cfg::CIC)
    {
        __syncthreads(); // every warp is done with the previous chunk's xs and wb
        // Input chunk -> xs[slot pixel][ci] as raw T pairs (channel-contiguous), zeros outside the image and past Cin.
        // Threads walk halo pixels fastest, so global reads run along image rows.
        for (int i0 = 0; i0 < Cfg::kInIters; i0 += Cfg::kLoadBatch)
        {
            uint32_t v[Cfg::kLoadBatch];
            int dst[Cfg::kLoadBatch];
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                int const e = tid + (i0 + k) * kConvThreads;
                v[k] = 0u;
                dst[k] = -1;
                if (i0 + k < Cfg::kInIters && e < Cfg::kInWords)
                {
                    int const cp = e / NPX;
                    int const rem = e - cp * NPX;
                    int const hr = rem / IW;
                    int const hc = rem - hr * IW;
                    int const gy = iy0 + hr;
                    int const gx = ix0 + hc;
                    int const c = c0 + 2 * cp;
                    dst[k] = (hr * IW + Cfg::slot(hc)) * (XP / 2) + cp;
                    if (gy >= 0 && gy < H && gx >= 0 && gx < W)
                    {
                        T const* const src = xb + c * hw + static_cast<int64_t>(gy) * W + gx;
                        uint32_t const lo = c < Cin ? raw_bits(src[0]) : 0u;
                        uint32_t const hi = c + 1 < Cin ? raw_bits(src[hw]) : 0u;
                        v[k] = lo | (hi << 16);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < Cfg::kLoadBatch; ++k)
            {
                if (dst[k] >= 0)
                {
                    xs32[dst[k]] = v[k];
                }
            }
        }
        // Weights of the chunk -> wb[co][(ky * KS + kx) * 32 + ci] rounded to T; pairs of ci per 32-bit store,
        // consecutive threads on consecutive words (the FP32 reads are gathers, served by L1 / L2).
        for (int e = tid; e < Cfg::kWWords; e += kConvThreads)
        {
            int const cp = e % (Cfg::CIC / 2);
            int const rest = e / (Cfg::CIC / 2);
            int const kk = rest % KK;
            int const co = rest / KK;
            int const gco = cog * kCoutGroup + co;
            int const c = c0 + 2 * cp;
            float lo = 0.0f;
            float hi = 0.0f;
            if (gco < Cout)
            {
                float const* const src = w + (static_cast<int64_t>(gco) * Cin + c) * KK + kk;
                lo = c < Cin ? __ldg(src) : 0.0f;
                hi = c + 1 < Cin ? __ldg(src + KK) : 0.0f;
            }
            wb32[co * (WP / 2) + kk * (Cfg::CIC / 2) + cp] = mma16::pack_pair<T>(lo, hi);
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < KK; ++kk)
        {
            int const ky = kk / KS;
            int const kx = kk - ky * KS;
            int const tap = (ky * IW + Cfg::kx_offset(kx)) * XP;
#pragma unroll
            for (int h = 0; h < 2; ++h)
            {
                uint32_t a[2][4];
                mma16::ldsm_x4(a[0], wb + a_base + kk * Cfg::CIC + h * 16);
                mma16::ldsm_x4(a[1], wb + a_base + 16 * WP + kk * Cfg::CIC + h * 16);
#pragma unroll
                for (int i2 = 0; i2 < NW / 2; ++i2)
                {
                    uint32_t b[4];
                    mma16::ldsm_x4(b, xs + b_base[i2] + tap + h * 16);
#pragma unroll
                    for (int mt = 0; mt < 2; ++mt)
                    {
                        mma16::mma<T>(acc[mt][2 * i2], a[mt], b[0], b[1]);
                        mma16::mma<T>(acc[mt][2 * i2 + 1], a[mt], b[2], b[3]);
                    }
                }
            }
        }
    }

    __syncthreads(); // os aliases xs
    // D fragments (channel 16 mt + lane / 4 (+8), pixel 8 tile + 2 (lane % 4) (+1)) -> os[co][q] as float.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
    {
#pragma unroll
        for (int i = 0; i < NW; ++i)
        {
            int const co = mt * 16 + lane / 4;
            int const q = (warp * NW + i) * 8 + 2 * (lane % 4);
            *reinterpret_cast<float2*>(os + co * Cfg::OSP + q) = make_float2(acc[mt][i][0], acc[mt][i][1]);
            *reinterpret_cast<float2*>(os + (co + 8) * Cfg::OSP + q) = make_float2(acc[mt][i][2], acc[mt][i][3]);
        }
    }
    __syncthreads();
    int64_t const ohw = static_cast<int64_t>(Ho) * Wo;
    for (int e = tid; e < kCoutGroup * NO; e += kConvThreads)
    {
        int const co = e / NO;
        int const q = e - co * NO;
        int const gco = cog * kCoutGroup + co;
        int const r = q / Cfg::TW;
        int const oy = oy0 + r;
        int const ox = ox0 + (q - r * Cfg::TW);
        if (gco < Cout && oy < Ho && ox < Wo)
        {
            int64_t const idx = (static_cast<int64_t>(image) * Cout + gco) * ohw + static_cast<int64_t>(oy) * Wo + ox;
            float v = os[co * Cfg::OSP + q];
            if (residual != nullptr)
            {
                v += to_float(residual[idx]);
            }
            y[idx] = from_float<T>(v);
        }
    }
}

template <typename T, typename Cfg, auto Kernel>
int launch_conv(T const* x, T* y, float const* w, T const* residual, int64_t B, int Cin, int Cout, int64_t H,
    int64_t W, int64_t Ho, int64_t Wo, cudaStream_t stream)
{
    int64_t const groups = cdiv(Cout, kCoutGroup);
    int64_t const tiles_x = ceil_div(Wo, Cfg::TW);
    int64_t const per_image = ceil_div(Ho, Cfg::TH) * tiles_x;
    if (per_image > kMaxGridX / groups || B > kMaxGridX / (per_image * groups))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if constexpr (Cfg::kSmemBytes > 48 * 1024)
    {
        static std::atomic<uint64_t> smem_done{0};
        int const status = allow_smem(Kernel, Cfg::kSmemBytes, smem_done);
        if (status != MSTPP_OK)
        {
            return status;
        }
    }
    Kernel<<<static_cast<unsigned>(B * per_image * groups), kConvThreads, Cfg::kSmemBytes, stream>>>(x, y, w,
        residual, Cin, Cout, static_cast<int>(H), static_cast<int>(W), static_cast<int>(Ho), static_cast<int>(Wo),
        static_cast<int>(tiles_x), static_cast<int>(per_image), static_cast<int>(groups));
    return launch_status();
}

// =================================================================================================================
// upfuse

constexpr int kUpThreads = 256;
constexpr int kUpGroup = 16; // output channels per block

// Launch: grid = B * blocks_per_image * groups blocks of kUpThreads; static shared memory (35.7 KB at Clow = 124).
template <typename T, int kClow>
__global__ void __launch_bounds__(kUpThreads, 2) upfuse_kernel(T const* __restrict__ low, T const* __restrict__ skip,
    T* __restrict__ y, float const* __restrict__ wa, float const* __restrict__ wb, float const* __restrict__ bias,
    int Hl, int Wl, int blocks_per_image, int groups)
{
    constexpr int Clow = kClow;
    constexpr int Cs = kClow / 2;
    __shared__ float4 sa4[Clow * 4 * kUpGroup / 4]; // [ci][parity][co]
    __shared__ float4 sb4[Cs * kUpGroup / 4];       // [cs][co]
    __shared__ float sbias[kUpGroup];
    float* const sa = reinterpret_cast<float*>(sa4);
    float* const sb = reinterpret_cast<float*>(sb4);

    int const tid = threadIdx.x;
    int bid = blockIdx.x;
    int const cog = bid % groups;
    bid /= groups;
    int const image = bid / blocks_per_image;
    int const blk = bid - image * blocks_per_image;

    for (int e = tid; e < Clow * 4 * kUpGroup; e += kUpThreads)
    {
        int const co = e % kUpGroup;
        int const par = (e / kUpGroup) % 4;
        int const ci = e / (4 * kUpGroup);
        int const gco = cog * kUpGroup + co;
        sa[e] = gco < Cs ? __ldg(wa + (par * Cs + gco) * Clow + ci) : 0.0f;
    }
    for (int e = tid; e < Cs * kUpGroup; e += kUpThreads)
    {
        int const co = e % kUpGroup;
        int const cs = e / kUpGroup;
        int const gco = cog * kUpGroup + co;
        sb[e] = gco < Cs ? __ldg(wb + gco * Cs + cs) : 0.0f;
    }
    if (tid < kUpGroup)
    {
        int const gco = cog * kUpGroup + tid;
        sbias[tid] = gco < Cs ? __ldg(bias + gco) : 0.0f;
    }
    __syncthreads();

    int64_t const hwl = static_cast<int64_t>(Hl) * Wl;
    int64_t const lp = static_cast<int64_t>(blk) * kUpThreads + tid;
    if (lp >= hwl)
    {
        return; // no barrier follows
    }
    int const ly = static_cast<int>(lp / Wl);
    int const lx = static_cast<int>(lp - static_cast<int64_t>(ly) * Wl);
    int const Wo = 2 * Wl;
    int64_t const hw = 4 * hwl;
    // Output pixels of parity 2 ki + kj: (2 ly + ki, 2 lx + kj).
    int64_t const p00 = static_cast<int64_t>(2 * ly) * Wo + 2 * lx;
    int64_t const pix[4] = {p00, p00 + 1, p00 + Wo, p00 + Wo + 1};

    float acc[4][kUpGroup];
#pragma unroll
    for (int par = 0; par < 4; ++par)
    {
#pragma unroll
        for (int c = 0; c < kUpGroup; ++c)
        {
            acc[par][c] = sbias[c];
        }
    }
    T const* const lowp = low + static_cast<int64_t>(image) * Clow * hwl + lp;
#pragma unroll 4
    for (int ci = 0; ci < Clow; ++ci)
    {
        float const v = to_float(lowp[ci * hwl]);
#pragma unroll
        for (int par = 0; par < 4; ++par)
        {
#pragma unroll
            for (int c4 = 0; c4 < kUpGroup / 4; ++c4)
            {
                float4 const wv = sa4[(ci * 4 + par) * (kUpGroup / 4) + c4];
                acc[par][4 * c4 + 0] = fmaf(wv.x, v, acc[par][4 * c4 + 0]);
                acc[par][4 * c4 + 1] = fmaf(wv.y, v, acc[par][4 * c4 + 1]);
                acc[par][4 * c4 + 2] = fmaf(wv.z, v, acc[par][4 * c4 + 2]);
                acc[par][4 * c4 + 3] = fmaf(wv.w, v, acc[par][4 * c4 + 3]);
            }
        }
    }
    T const* const skp = skip + static_cast<int64_t>(image) * Cs * hw;
#pragma unroll 2
    for (int cs = 0; cs < Cs; ++cs)
    {
        float s[4];
#pragma unroll
        for (int par = 0; par < 4; ++par)
        {
            s[par] = to_float(skp[cs * hw + pix[par]]);
        }
#pragma unroll
        for (int c4 = 0; c4 < kUpGroup / 4; ++c4)
        {
            float4 const wv = sb4[cs * (kUpGroup / 4) + c4];
#pragma unroll
            for (int par = 0; par < 4; ++par)
            {
                acc[par][4 * c4 + 0] = fmaf(wv.x, s[par], acc[par][4 * c4 + 0]);
                acc[par][4 * c4 + 1] = fmaf(wv.y, s[par], acc[par][4 * c4 + 1]);
                acc[par][4 * c4 + 2] = fmaf(wv.z, s[par], acc[par][4 * c4 + 2]);
                acc[par][4 * c4 + 3] = fmaf(wv.w, s[par], acc[par][4 * c4 + 3]);
            }
        }
    }
    T* const yb = y + static_cast<int64_t>(image) * Cs * hw;
#pragma unroll
    for (int c = 0; c < kUpGroup; ++c)
    {
        int const gco = cog * kUpGroup + c;
        if (gco < Cs)
        {
#pragma unroll
            for (int par = 0; par < 4; ++par)
            {
                yb[gco * hw + pix[par]] = from_float<T>(acc[par][c]);
            }
        }
    }
}

template <typename T, int kClow>
int launch_upfuse(T const* low, T const* skip, T* y, float const* wa, float const* wb, float const* bias, int64_t B,
    int64_t Hl, int64_t Wl, cudaStream_t stream)
{
    int64_t const groups = cdiv(kClow / 2, kUpGroup);
    int64_t const per_image = ceil_div(Hl * Wl, kUpThreads);
    if (per_image > kMaxGridX / groups || B > kMaxGridX / (per_image * groups))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    upfuse_kernel<T, kClow><<<static_cast<unsigned>(B * per_image * groups), kUpThreads, 0, stream>>>(low, skip, y,
        wa, wb, bias, static_cast<int>(Hl), static_cast<int>(Wl), static_cast<int>(per_image),
        static_cast<int>(groups));
    return launch_status();
}

} // namespace
} // namespace mstpp

extern "C" int mstpp_conv_nchw(void const* x, void* y, float const* w, void const* residual, int64_t B, int Cin,
    int64_t H, int64_t W, int Cout, int ksize, int stride, int pad, int dtype, void* stream)
{
    using namespace mstpp;
    if (B < 0 || H < 0 || W < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    bool const k3 = ksize == 3 && stride == 1 && pad == 1;
    bool const k4 = ksize == 4 && stride == 2 && pad == 1;
    if (!k3 && !k4)
    {
        return MSTPP_ERR_UNSUPPORTED_CONV;
    }
    if ((Cin != 3 && Cin != 31 && Cin != 62) || (Cout != 31 && Cout != 62 && Cout != 124))
    {
        return MSTPP_ERR_UNSUPPORTED_WIDTH;
    }
    // Coordinates are int in the kernels, element offsets int64.
    if (H > INT_MAX / 4 || W > INT_MAX / 4 || H + 2 * pad < ksize || W + 2 * pad < ksize)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    int64_t const Ho = (H + 2 * pad - ksize) / stride + 1;
    int64_t const Wo = (W + 2 * pad - ksize) / stride + 1;
    if (B == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || w == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    int64_t const cmaxio = Cin > Cout ? Cin : Cout;
    if (H * W > (INT64_MAX / 8) / (cmaxio * B))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    size_t const elem = dtype == MSTPP_DTYPE_FLOAT32 ? 4 : 2;
    size_t const x_bytes = static_cast<size_t>(B * Cin * H * W) * elem;
    size_t const y_bytes = static_cast<size_t>(B * Cout * Ho * Wo) * elem;
    size_t const w_bytes = static_cast<size_t>(Cout) * Cin * ksize * ksize * sizeof(float);
    // The residual may be y itself (each element is read by the thread that then writes it), not a shifted view.
    if (overlaps(x, x_bytes, y, y_bytes) || overlaps(w, w_bytes, y, y_bytes)
        || (residual != nullptr && residual != y && overlaps(residual, y_bytes, y, y_bytes)))
    {
        return MSTPP_ERR_OVERLAP;
    }
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        T const* rt = static_cast<T const*>(residual);
        auto const go = [&](auto launch) { return launch(xt, yt, w, rt, B, Cin, Cout, H, W, Ho, Wo, s); };
        if constexpr (!std::is_same_v<T, float>)
        {
            // 16-bit storage with 31 / 62 input channels: tensor cores with operands of the storage type.
            if (Cin != 3)
            {
                return k3 ? go(launch_conv<T, ConvTc3x3, conv_tc_kernel<T, ConvTc3x3>>)
                          : go(launch_conv<T, ConvTc4x4, conv_tc_kernel<T, ConvTc4x4>>);
            }
        }
        // FP32 storage (exact FP32 FMA, no TF32) and the 3-channel input convolution of every dtype.
        if (k4)
        {
            return go(launch_conv<T, ConvFma4x4, conv_fma_kernel<T, ConvFma4x4>>);
        }
        return Cin == 3 ? go(launch_conv<T, ConvFma3x3Cin3, conv_fma_kernel<T, ConvFma3x3Cin3>>)
                        : go(launch_conv<T, ConvFma3x3, conv_fma_kernel<T, ConvFma3x3>>);
    });
}

extern "C" int mstpp_upfuse_nchw(void const* low, void const* skip, void* y, float const* wa, float const* wb,
    float const* bias, int64_t B, int Clow, int64_t Hlow, int64_t Wlow, int dtype, void* stream)
{
    using namespace mstpp;
    if (B < 0 || Hlow < 0 || Wlow < 0)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    if (!valid_dtype(dtype))
    {
        return MSTPP_ERR_BAD_DTYPE;
    }
    if (Clow != 62 && Clow != 124)
    {
        return MSTPP_ERR_UNSUPPORTED_WIDTH;
    }
    if (B == 0 || Hlow == 0 || Wlow == 0)
    {
        return MSTPP_OK;
    }
    if (low == nullptr || skip == nullptr || y == nullptr || wa == nullptr || wb == nullptr || bias == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    if (Hlow > INT_MAX / 4 || Wlow > INT_MAX / 4 || Hlow * Wlow > (INT64_MAX / 16) / (static_cast<int64_t>(Clow) * B))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    int64_t const Cs = Clow / 2;
    size_t const elem = dtype == MSTPP_DTYPE_FLOAT32 ? 4 : 2;
    size_t const low_bytes = static_cast<size_t>(B * Clow * Hlow * Wlow) * elem;
    size_t const out_bytes = static_cast<size_t>(B * Cs * 4 * Hlow * Wlow) * elem;
    if (overlaps(low, low_bytes, y, out_bytes) || overlaps(skip, out_bytes, y, out_bytes))
    {
        return MSTPP_ERR_OVERLAP;
    }
    cudaStream_t const s = as_stream(stream);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* lt = static_cast<T const*>(low);
        T const* st = static_cast<T const*>(skip);
        T* yt = static_cast<T*>(y);
        return Clow == 62 ? launch_upfuse<T, 62>(lt, st, yt, wa, wb, bias, B, Hlow, Wlow, s)
                          : launch_upfuse<T, 124>(lt, st, yt, wa, wb, bias, B, Hlow, Wlow, s);
    });
}
