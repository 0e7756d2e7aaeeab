// The MST++ spectral-wise self-attention (SpectralMSA) with the MSAB residual, on NCHW tensors:
//   y = x + Wproj . (blockdiag(A_h) . v) + bproj + dw2(GELU(dw1(v))),   v = Wv . x
//   A_h = softmax_rows(rescale[h] * kn_h . qn_h^T),  kn/qn: rows of Wk . x / Wq . x of head h, L2-normalised
//                                                    over the N = H*W pixels (norm clamped at 1e-12)
// for C = 31, 62, 124 channels (heads = C / 31, 31 channels per head). dw1, dw2: depthwise 3x3, zero padding 1,
// no bias; GELU is the exact erf form for FP32 storage (the tanh form of dwconv.cuh for 16-bit storage). All
// weights are float32; x and y share the storage dtype.
//
// Algebra. With X = x[b] as a [C, N] matrix, q = Wq X, k = Wk X, v = Wv X, and the Gram matrix S = X X^T [C, C]:
//   k_i . q_j       = (Wk S Wq^T)_ij      (the attention numerators, used on the diagonal head blocks only)
//   ||k_i||^2       = (Wk S Wk^T)_ii,     ||q_j||^2 = (Wq S Wq^T)_jj
//   kn_i . qn_j     = (Wk S Wq^T)_ij / (max(||k_i||, 1e-12) max(||q_j||, 1e-12))
// and every linear step after the softmax folds into one matrix per batch item,
//   M = Wproj . blockdiag(A_h) . Wv      so that   Wproj . (blockdiag(A) . v) = M . x.
// Hence y = x + M x + bproj + dw2(GELU(dw1(Wv x))): x is read twice (once for S, once for y) and y written once;
// q, k, v, the attention output and the positional branch never reach global memory. (Checked in float64
// against architecture.mst_plus_plus.SpectralMSA: equal to ~1e-15.)
//
// Kernels, in stream order:
//   1. gram_partial: blocks of P pixels x all channels of one image; each block writes the upper-triangular
//      tiles of its partial X X^T (float32) to the workspace. No atomics.
//   2. gram_reduce: S[b] = sum of the partials, in block order (bitwise deterministic), mirrored to a full [C, C].
//   3. attn_logits: one warp per row of Wk S (and of Wq S): ||k_i||^2, ||q_j||^2 and the d numerators of row i.
//      Images of at most 32 pixels skip 1-3 and run attn_direct instead: the same outputs from k = Wk x and
//      q = Wq x (one lane per pixel), because the Gram form is at its worst there (below).
//   4. attn_fold: per batch item, A_h = softmax(rescale[h] * logits / norms) (FP32, expf), then 8 rows of
//      M = (Wproj . blockdiag(A)) . Wv per block, stored transposed (Mt[c][o], zero-padded to CP x CP).
//   5. msa_fused: halo tiles (below): y = x + M x + bproj + dw2(GELU(dw1(Wv x))).
//
// Pass 2 tiling. A block owns TH x TW output pixels of one image and loads x over the tile plus a 2-pixel halo,
// (TH+4) x (TW+4) pixels, all channels, into shared memory (float, zero outside the image). Channels of v are
// processed in chunks of K (the C + padding channels, padded with zero weights):
//   GEMM1  vs[K][halo2 px]  = Wv[chunk] . xs          (zero outside the image since xs is, and there is no bias:
//                                                     the zero padding dw1 expects)
//   DW1    ts[K][halo1 px]  = GELU(dw1(vs)), set to 0 at pixels outside the image (the zero padding dw2 expects;
//                             GELU(dw1(v)) is not 0 there)
//   DW2    ps[K][out px]    = dw2(ts)                 (in vs's memory: vs is dead after DW1)
//   GEMM2  acc[out px][C]  += Mt[chunk] . xs(out px), and the threads that own the chunk's channels add ps
// acc starts at x + bproj (the residual) and stays in registers across chunks; at the end it goes through shared
// memory to coalesced stores of y. Weights of a chunk are copied with cp.async (Wv transposed, Mt rows, the two
// depthwise kernels), one phase ahead of their use where separate Wv / Mt buffers fit, as in ffn.cu.
//
// Register blocking. GEMM1: 4 consecutive halo pixels x NB1 channels per item (a float4 of xs and NB1/4 float4
// of weights per input channel). GEMM2: 4 output pixels x 8 channels per item, the 4 pixels strided by a quarter
// of the tile so that a warp reads consecutive pixels (conflict-free scalar loads; output pixels are not 16-byte
// aligned inside the halo layout). DW: one thread slides down R rows of one column of one channel.
//
// Precision (FP32 storage). Everything is float32 FMA (no TF32/tensor cores): the Gram matrix (per-thread sequential
// sums over each block's pixels, then a fixed-order tree over thread groups, then a fixed-order sum over blocks),
// the d x d logits and norms, the softmax (expf), the fold of M, and pass 2. No atomics anywhere, so results are
// bitwise reproducible. The Gram form rounds differently from PyTorch's q/k path and squares the conditioning of the
// norms (normal equations vs. the projection itself): a row of k whose values mostly cancel, ||Wk_i x|| << ||Wk_i||
// ||x||, gets a relative error of about eps_fp32 * (||Wk_i|| ||x|| / ||Wk_i x||)^2 in its norm and numerators
// instead of eps_fp32 * ||Wk_i|| ||x|| / ||Wk_i x||. Measured on CPU with this arithmetic, relative to max|y|:
// 2e-7..6e-7 on random O(1) data (PyTorch float32: ~2e-7), 2e-6..4e-6 on strongly channel-correlated data at 64x64,
// and up to 5e-3 for a single pixel (S of rank one), hence the direct path for N <= 32. Near-flat images (all pixels
// almost equal) are rank-one-like too and remain the weak case. Since a cosine is in [-1, 1] exactly, the fold
// kernel clamps it there: a norm that cancelled to ~0 cannot blow a logit up.
//
// Tensor-core path (FP16 / BF16 storage; FP32 storage keeps the path above, no TF32). mstpp_msa_nchw dispatches on
// dtype; the C ABI and the workspace query are unchanged (the workspace holds both paths' regions).
//   1. gram_tc + gram_reduce_tc: S = X X^T with mma.m16n8k16 (16-bit operands, float32 accumulate). The operands
//      are the stored x values themselves, and a product of two 16-bit values is exact in float32, so only the
//      order of the float32 additions changes (inside the tensor core, then per warp over k-steps, then the fixed
//      order over pixel groups and over blocks as before): deterministic. Only the tiles on or above the diagonal
//      are computed and the reduction mirrors them, so S is exactly symmetric.
//   2. attn_logits / attn_direct and the softmax as above; attn_fold<C, T> writes M = Wproj . blockdiag(A) . Wv
//      rounded to T, and Wv rounded to T, as ready-made A fragments (16 bytes per lane per 16 x 16 tile).
//   3. msa_tc: per tile, x over the halo in shared memory as raw 16-bit values, pixel-major (a B fragment
//      register is two consecutive channels of one pixel); GEMM2 (M x over the output pixels) runs first and
//      writes x + bproj + M x (float32) to a tile buffer; then per chunk of 16 v channels GEMM1 (v = Wv x over
//      the halo, out of the float32 accumulators) -> dw1 + GELU -> dw2 through the shared depthwise helper
//      (dwconv.cuh), added to the tile buffer: FP16 storage keeps v and GELU(dw1(v)) in FP16 and runs both
//      depthwise sums in HFMA2 and the GELU in half2 (tanh form); BF16 storage runs them in FP32 with the FP32
//      tanh-form GELU (error bounds: docs/perf_notes_fused.md, step 6). C = 31 / 62 are zero-padded to 32 / 64 (the
//      padding channels of x are zeroed in shared memory, those of M / Wv in the fold). Wv x and M x are not
//      stacked into one [2C x C] GEMM: M x is needed only at the TH x TW output pixels, v on the whole halo
//      (1.8-2.3x as many), so stacking would add M x work on the halo, and keeping GEMM2 separate lets its
//      epilogue (+ x + bproj) stay in registers.
//   mma.sync rather than nvcuda::wmma: the m16n8k16 fragment layouts are specified (PTX ISA), so the operands are
//   read straight from layouts chosen for the rest of the kernel (B fragments from the pixel-major x tile through
//   conflict-free 32-bit loads, including the gathered output pixels of GEMM2; A fragments pre-packed once per
//   image by the fold), and the accumulators are consumed in registers (float2 stores of v, the residual / bias
//   epilogue, the Gram partials stored fragment-wise) instead of going through store_matrix_sync's opaque layout
//   and an extra shared-memory round trip. wmma's fragment layout is unspecified, and its 16x16x16 shape would
//   waste half of the n = 8 tiles that the halo / output pixel counts (multiples of 8, not 16) fill exactly. The
//   fragment indexing was checked on the CPU by an emulation of the PTX fragment tables (mma16.cuh).
// Precision of the tensor-core path: the Gram matrix as for FP32 (exact products, float32 sums). Wv and M enter
// the mma as 16-bit values: each element is rounded by at most u |w| (u = 2^-11 FP16, 2^-8 BF16), so M x moves by
// at most u sum_c |M_oc x_c| and v by u sum_c |Wv_jc x_c| (then through dw1, GELU, dw2). Typical errors are
// ~u sqrt(C) |M||x| (random rounding signs), i.e. of the order of the storage rounding of y itself (u |y|),
// which is why the operands may be rounded to the storage type; tests/test_kernels_msa.py derives and checks both
// bounds. FP16 operands cannot overflow for trained weights (|M|, |Wv| << 65504); elements below 2^-24 flush to 0.
//
// Why FP16 / BF16 storage was slower than FP32 on the FP32-math path (0.286 vs 0.220 ms at C = 31, H100): not the
// conversions and not the shared-memory layout. SASS of this file before the tensor-core path (sm_90,
// cuobjdump): msa_fused<half, C = 31> has 2480 instructions vs 2464 for float (8 HADD2.F32 conversions in the x
// load, 5 F2FP packs in the y store), the same 128 registers and no spills; gram_partial 664 vs 656; both convert
// on load, so shared memory holds the same float layout. What stays the same is the number of global accesses:
// every x / y access is a scalar 2-byte LDG.U16 / STG.U16, i.e. as many load/store instructions, L1 wavefronts
// and 32-byte sectors per request as in FP32 (the Gram staging reads 16-byte half-sector runs per channel, each
// sector fetched twice; pass-2 tile rows are 24..32-byte runs straddling sectors; the y stores are 2-byte
// partial-sector writes), so halving the bytes saves nothing in the LSU / L1 / L2 transaction counts that bound
// these loops, and the partial-sector writes of y (byte-masked in L2, read-modify-write when a sector leaves L2
// partly written) are the likely extra cost. Not measured here (no GPU); ncu would confirm with
// l1tex__t_sectors_pipe_lsu_mem_global_op_{ld,st}.sum, lts__t_sectors_srcunit_tex_op_write.sum and
// dram__bytes_{read,write}.sum of msa_fused_kernel, float vs half. The tensor-core path moves the same scalar
// 2-byte accesses, but no longer spends ~2/3 of its issue slots on FP32 GEMM FMAs and their shared-memory loads.
//
// Cost model of the tensor-core path (C = 31 at 512 x 488, b = 1, N = 249856 pixels; H100: 132 SMs, ~3 TB/s
// achievable DRAM, 4 warp-instructions / clock / SM at ~1.75 GHz = ~0.92e12 warp-instructions / s):
//   bytes: x read twice (2 x 15.5 MB; the pass-2 halo re-reads mostly hit L2), y written (15.5 MB): 46.5 MB,
//          ~0.015 ms (FP32: 93 MB, ~0.03 ms)
//   tensor FLOPs (padded to 32 channels): Gram 6 of 8 tiles = 1.5 kFLOP / px, GEMM1 2 x 32 x 32 x 1.78 halo = 3.6
//          kFLOP / px, GEMM2 2 kFLOP / px: 1.8 GFLOP, a few microseconds of mma.sync
//   CUDA-core instructions per output pixel (thread-level): dw1 392 FMA + 43 GELU (~20 each) = ~1250, dw2 288,
//          shared-memory loads of the depthwise passes ~250, x halo load (55 elements x ~12) ~660, y store ~250,
//          fragment loads / epilogues ~150: ~2900 / px, 22.6 M warp-instructions, 0.025 ms at full issue rate
//   predicted: pass 2 ~0.035-0.045 ms (the FP32 path runs at ~1/2-1/3 of its issue bound; assume 60-70% here), Gram
//          ~0.007 ms (memory), reduce + logits + fold + launch gaps ~0.012 ms: ~0.055-0.065 ms per block at
//          C = 31 level 0 (vs 0.286 FP16 / 0.220 FP32 now), C = 62 256 x 244 ~0.045 ms, C = 124 128 x 122
//          ~0.04 ms (fixed per-launch costs dominate there). Unverified prediction: compile-checked only.
//
// x and y must not overlap (tiles read their halo from pixels other tiles write), nor may the workspace
// overlap either of them (MSTPP_ERR_OVERLAP).
//
// Files: msa_gram.cuh (pass 1, both paths), msa_small.cuh (logits, direct path, softmax and fold), msa_pass2.cuh
// (FP32 pass 2), msa_pass2_tc.cuh (tensor-core pass 2); dwconv.cuh holds the depthwise + GELU helper shared with the
// FFN; this file keeps the host side (workspace layout, launches, the C ABI).
#include <atomic>
#include <climits>
#include <cmath>
#include <type_traits>

#include "block_common.cuh"
#include "mma16.cuh"

#include "msa_gram.cuh"
#include "msa_pass2.cuh"
#include "msa_pass2_tc.cuh"
#include "msa_small.cuh"

namespace mstpp
{
namespace
{

// =============================================================================================================
// Host side.

constexpr size_t kWorkspaceAlign = 256;

size_t align_bytes(size_t n)
{
    return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Workspace regions (byte offsets from the 256-byte-aligned base), all float32:
//   partial [B][nblk][kPartialFloats]   per-block Gram tiles (sized for an upper bound of nblk, see below)
//   gram    [B][C][C]                    S
//   raw     [B][C][31]                   logits numerators of every row with its head's columns
//   nk2     [B][C], nq2 [B][C]           squared norms of the rows of k and q
//   mt      [B][CP][CP]                  M transposed, zero-padded (FP32 path)
//   frag    [1 + B][CP * CP] 16-bit      Wv, then M of each image, as packed mma A fragments (tensor-core path)
// The workspace query has no dtype, so the layout holds both paths' regions (partial: the larger of the two
// partial layouts; frag adds (1 + B) * CP^2 * 2 bytes). `bytes` includes kWorkspaceAlign of slack so that any base
// pointer can be aligned up.
struct MsaLayout
{
    GramPlan plan;
    int gram_blocks_per_image;    // gram_reduce blocks per image
    int gram_tc_blocks_per_image; // gram_reduce_tc blocks per image
    size_t partial, gram, raw, nk2, nq2, mt, frag, bytes;
};

template <typename G, typename GT>
MsaLayout msa_layout(int64_t B, int64_t N)
{
    static_assert(G::C == GT::C && G::CP == GT::CP && G::P == GT::P
            && G::kMaxBlocksPerImage == GT::kMaxBlocksPerImage,
        "both Gram passes share one GramPlan");
    constexpr int C = G::C;
    constexpr int kPartialFloats = cmax(G::kPartialFloats, GT::kPartialFloats);
    MsaLayout L{};
    L.plan = gram_plan<G>(N);
    L.gram_blocks_per_image = cdiv(G::kPartialFloats, kSmallThreads);
    L.gram_tc_blocks_per_image = cdiv(GT::kPartialFloats, kSmallThreads);
    size_t off = 0;
    auto region = [&](size_t floats) {
        size_t const at = off;
        off += align_bytes(floats * sizeof(float));
        return at;
    };
    size_t const b = static_cast<size_t>(B);
    // The partials are sized for min(chunks of P pixels, kMaxBlocksPerImage) blocks, an upper bound of plan.nblk
    // that never decreases with N (plan.nblk itself drops, e.g. from 256 to 129 blocks when C = 31 and N passes
    // 65536): the size for the largest shape of a range then covers every smaller shape, which is how TensorRT
    // sizes a plugin's workspace (for the profile's max shape).
    int64_t const chunks = ceil_div(N, static_cast<int64_t>(G::P));
    size_t const nblk_bound = static_cast<size_t>(chunks < G::kMaxBlocksPerImage ? chunks : G::kMaxBlocksPerImage);
    L.partial = region(b * nblk_bound * kPartialFloats);
    L.gram = region(b * C * C);
    L.raw = region(b * C * kHeadDim);
    L.nk2 = region(b * C);
    L.nq2 = region(b * C);
    L.mt = region(b * G::CP * G::CP);
    L.frag = region(((b + 1) * G::CP * G::CP + 1) / 2); // 16-bit elements, counted in floats
    L.bytes = off + kWorkspaceAlign;
    return L;
}

// Shape limits shared by the workspace query and the entry point: false if the problem is too large.
bool msa_shape_ok(int64_t B, int C, int64_t H, int64_t W)
{
    // Pixel coordinates are int in the kernels, element offsets int64; keep well inside int64.
    return H <= INT_MAX && W <= INT_MAX && H * W <= (INT64_MAX / 8) / (static_cast<int64_t>(C) * B);
}

bool msa_layout_for(int C, int64_t B, int64_t N, MsaLayout* out)
{
    switch (C)
    {
    case 31: *out = msa_layout<Gram31, GramTc31>(B, N); break;
    case 62: *out = msa_layout<Gram62, GramTc62>(B, N); break;
    case 124: *out = msa_layout<Gram124, GramTc124>(B, N); break;
    default: return false;
    }
    return out->plan.nblk <= kMaxGridX / B;
}

// Opts the per-image kernels (logits, fold) into their dynamic shared memory, once per device and instantiation
// (S and Wv alone take 61.5 KB at C = 124).
template <int C, typename T>
int allow_per_image_smem()
{
    static std::atomic<uint64_t> logits_done{0};
    static std::atomic<uint64_t> fold_done{0};
    int const status = allow_smem(attn_logits_kernel<C>, LogitsSmem<C>::kBytes, logits_done);
    return status != MSTPP_OK ? status : allow_smem(attn_fold_kernel<C, T>, FoldSmem<C>::kBytes, fold_done);
}

template <typename T, typename G, typename Cfg>
int launch_msa(T const* x, T* y, float const* wq, float const* wk, float const* wv, float const* rescale,
    float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B, int64_t H, int64_t W,
    char* ws, MsaLayout const& L, cudaStream_t stream)
{
    static_assert(G::C == Cfg::C && G::CP == Cfg::CP, "one channel count");
    constexpr int C = Cfg::C;
    int64_t const N = H * W;
    int64_t const tiles_x = ceil_div(W, Cfg::TW);
    int64_t const per_image = ceil_div(H, Cfg::TH) * tiles_x;
    constexpr int kLogitBlocks = cdiv(2 * C, kSmallThreads / 32);
    constexpr int kFoldBlocks = Cfg::CP / (kSmallThreads / 32);
    if (per_image > kMaxGridX || B > kMaxGridX / per_image || B * L.gram_blocks_per_image > kMaxGridX
        || B * kLogitBlocks > kMaxGridX || B * kFoldBlocks > kMaxGridX)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    float* const partial = reinterpret_cast<float*>(ws + L.partial);
    float* const gram = reinterpret_cast<float*>(ws + L.gram);
    float* const raw = reinterpret_cast<float*>(ws + L.raw);
    float* const nk2 = reinterpret_cast<float*>(ws + L.nk2);
    float* const nq2 = reinterpret_cast<float*>(ws + L.nq2);
    float* const mt = reinterpret_cast<float*>(ws + L.mt);

    static std::atomic<uint64_t> smem_done{0};
    auto fused = msa_fused_kernel<T, Cfg>;
    int status = allow_smem(fused, Cfg::kSmemBytes, smem_done);
    if (status == MSTPP_OK)
    {
        status = allow_per_image_smem<C, float>(); // the fold launched below is attn_fold_kernel<C, float>
    }
    if (status != MSTPP_OK)
    {
        return status;
    }

    if (N <= kDirectMaxPixels)
    {
        attn_direct_kernel<T, C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, 0, stream>>>(
            x, wq, wk, raw, nk2, nq2, static_cast<int>(N), kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    else
    {
        int const nblk = static_cast<int>(L.plan.nblk);
        gram_partial_kernel<T, G><<<static_cast<unsigned>(B * nblk), G::kThreads, 0, stream>>>(
            x, partial, N, nblk, L.plan.ppb);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        gram_reduce_kernel<G><<<static_cast<unsigned>(B * L.gram_blocks_per_image), kSmallThreads, 0, stream>>>(
            partial, gram, nblk, L.gram_blocks_per_image);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        attn_logits_kernel<C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, LogitsSmem<C>::kBytes,
            stream>>>(
            gram, wq, wk, raw, nk2, nq2, kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    attn_fold_kernel<C, float><<<static_cast<unsigned>(B * kFoldBlocks), kSmallThreads, FoldSmem<C>::kBytes,
        stream>>>(
        raw, nk2, nq2, rescale, wproj, wv, mt, nullptr);
    if ((status = launch_status()) != MSTPP_OK)
    {
        return status;
    }
    fused<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(x, y, wv, mt, bproj,
        wpos1, wpos2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x),
        static_cast<int>(per_image));
    return launch_status();
}

// The tensor-core path (16-bit T): the same stream order with gram_tc / gram_reduce_tc, the fold packing M and Wv
// as T fragments, and msa_tc_kernel. Images of at most kDirectMaxPixels pixels use attn_direct as above.
template <typename T, typename GT, typename Cfg>
int launch_msa_tc(T const* x, T* y, float const* wq, float const* wk, float const* wv, float const* rescale,
    float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B, int64_t H, int64_t W,
    char* ws, MsaLayout const& L, cudaStream_t stream)
{
    static_assert(GT::C == Cfg::C && GT::CP == Cfg::CP, "one channel count");
    constexpr int C = Cfg::C;
    int64_t const N = H * W;
    int64_t const tiles_x = ceil_div(W, Cfg::TW);
    int64_t const per_image = ceil_div(H, Cfg::TH) * tiles_x;
    constexpr int kLogitBlocks = cdiv(2 * C, kSmallThreads / 32);
    constexpr int kFoldBlocks = Cfg::CP / (kSmallThreads / 32);
    if (per_image > kMaxGridX || B > kMaxGridX / per_image || B * L.gram_tc_blocks_per_image > kMaxGridX
        || B * kLogitBlocks > kMaxGridX || B * kFoldBlocks > kMaxGridX)
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    float* const partial = reinterpret_cast<float*>(ws + L.partial);
    float* const gram = reinterpret_cast<float*>(ws + L.gram);
    float* const raw = reinterpret_cast<float*>(ws + L.raw);
    float* const nk2 = reinterpret_cast<float*>(ws + L.nk2);
    float* const nq2 = reinterpret_cast<float*>(ws + L.nq2);
    uint16_t* const frag = reinterpret_cast<uint16_t*>(ws + L.frag);
    uint16_t const* const xbits = reinterpret_cast<uint16_t const*>(x);

    static std::atomic<uint64_t> smem_done{0};
    auto fused = msa_tc_kernel<T, Cfg>;
    int status = allow_smem(fused, Cfg::kSmemBytes, smem_done);
    if (status == MSTPP_OK)
    {
        status = allow_per_image_smem<C, T>();
    }
    if (status != MSTPP_OK)
    {
        return status;
    }

    if (N <= kDirectMaxPixels)
    {
        attn_direct_kernel<T, C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, 0, stream>>>(
            x, wq, wk, raw, nk2, nq2, static_cast<int>(N), kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    else
    {
        int const nblk = static_cast<int>(L.plan.nblk);
        gram_tc_kernel<T, GT><<<static_cast<unsigned>(B * nblk), GT::kThreads, 0, stream>>>(
            xbits, partial, N, nblk, L.plan.ppb);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        gram_reduce_tc_kernel<GT>
            <<<static_cast<unsigned>(B * L.gram_tc_blocks_per_image), kSmallThreads, 0, stream>>>(
                partial, gram, nblk, L.gram_tc_blocks_per_image);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
        attn_logits_kernel<C><<<static_cast<unsigned>(B * kLogitBlocks), kSmallThreads, LogitsSmem<C>::kBytes,
            stream>>>(
            gram, wq, wk, raw, nk2, nq2, kLogitBlocks);
        if ((status = launch_status()) != MSTPP_OK)
        {
            return status;
        }
    }
    attn_fold_kernel<C, T><<<static_cast<unsigned>(B * kFoldBlocks), kSmallThreads, FoldSmem<C>::kBytes,
        stream>>>(
        raw, nk2, nq2, rescale, wproj, wv, nullptr, frag);
    if ((status = launch_status()) != MSTPP_OK)
    {
        return status;
    }
    fused<<<static_cast<unsigned>(B * per_image), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(xbits, y, frag, bproj,
        wpos1, wpos2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(tiles_x),
        static_cast<int>(per_image));
    return launch_status();
}

} // namespace
} // namespace mstpp

extern "C" size_t mstpp_msa_workspace_size(int64_t B, int C, int64_t H, int64_t W)
{
    using namespace mstpp;
    if ((C != 31 && C != 62 && C != 124) || B <= 0 || H <= 0 || W <= 0 || !msa_shape_ok(B, C, H, W))
    {
        return 0;
    }
    MsaLayout L{};
    if (!msa_layout_for(C, B, H * W, &L))
    {
        return 0;
    }
    return L.bytes;
}

extern "C" int mstpp_msa_nchw(void const* x, void* y, float const* wq, float const* wk, float const* wv,
    float const* rescale, float const* wproj, float const* bproj, float const* wpos1, float const* wpos2, int64_t B,
    int C, int64_t H, int64_t W, int dtype, void* workspace, void* stream)
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
    if (C != 31 && C != 62 && C != 124)
    {
        return MSTPP_ERR_UNSUPPORTED_WIDTH;
    }
    if (B == 0 || H == 0 || W == 0)
    {
        return MSTPP_OK;
    }
    if (x == nullptr || y == nullptr || wq == nullptr || wk == nullptr || wv == nullptr || rescale == nullptr
        || wproj == nullptr || bproj == nullptr || wpos1 == nullptr || wpos2 == nullptr || workspace == nullptr)
    {
        return MSTPP_ERR_NULL_POINTER;
    }
    if (!msa_shape_ok(B, C, H, W))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    MsaLayout L{};
    if (!msa_layout_for(C, B, H * W, &L))
    {
        return MSTPP_ERR_BAD_SHAPE;
    }
    size_t const tensor_bytes = static_cast<size_t>(B * C * H * W) * (dtype == MSTPP_DTYPE_FLOAT32 ? 4 : 2);
    if (overlaps(x, tensor_bytes, y, tensor_bytes) || overlaps(workspace, L.bytes, x, tensor_bytes)
        || overlaps(workspace, L.bytes, y, tensor_bytes))
    {
        return MSTPP_ERR_OVERLAP;
    }
    auto const base = reinterpret_cast<uintptr_t>(workspace);
    char* const ws = reinterpret_cast<char*>((base + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
    cudaStream_t const s = as_stream(stream);
    // FP32 storage: the exact FP32 FMA path. FP16 / BF16 storage: the tensor-core path.
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T const* xt = static_cast<T const*>(x);
        T* yt = static_cast<T*>(y);
        if constexpr (std::is_same_v<T, float>)
        {
            switch (C)
            {
            case 31:
                return launch_msa<T, Gram31, Msa31>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            case 62:
                return launch_msa<T, Gram62, Msa62>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            default:
                return launch_msa<T, Gram124, Msa124>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            }
        }
        else
        {
            switch (C)
            {
            case 31:
                return launch_msa_tc<T, GramTc31, MsaTc31>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            case 62:
                return launch_msa_tc<T, GramTc62, MsaTc62>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            default:
                return launch_msa_tc<T, GramTc124, MsaTc124>(
                    xt, yt, wq, wk, wv, rescale, wproj, bproj, wpos1, wpos2, B, H, W, ws, L, s);
            }
        }
    });
}
