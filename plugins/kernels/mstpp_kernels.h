/*
 * C ABI of the MST++ CUDA kernels: LayerNorm over channels, L2 normalisation along the last dim, exact GELU, the
 * fused feed-forward block (LN -> 1x1 -> GELU -> depthwise 3x3 -> GELU -> 1x1 -> + x), the fused spectral-wise
 * self-attention with its residual (x + SpectralMSA(x)), and the "glue" convolutions between the blocks (3x3 and
 * 4x4/s2 convolutions, and the decoder's transposed conv + concat + 1x1 fuse).
 *
 * Every function enqueues work on `stream` (a cudaStream_t passed as void*, NULL = legacy default stream) and
 * returns immediately. Return value: 0 on success, a negative MSTPP_ERR_* code for bad arguments (nothing is
 * launched), or a positive cudaError_t from the launch. mstpp_error_string() turns either into text.
 *
 * Storage dtypes: MSTPP_DTYPE_FLOAT32, _FLOAT16, _BFLOAT16. Statistics and arithmetic are always float32.
 * Tensors are dense and row-major; x and y must not overlap (y == x is not supported).
 */
#ifndef MSTPP_KERNELS_H
#define MSTPP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MSTPP_API __attribute__((visibility("default")))
#else
#define MSTPP_API
#endif

enum mstpp_dtype
{
    MSTPP_DTYPE_FLOAT32 = 0,
    MSTPP_DTYPE_FLOAT16 = 1,
    MSTPP_DTYPE_BFLOAT16 = 2
};

enum mstpp_status
{
    MSTPP_OK = 0,
    MSTPP_ERR_NULL_POINTER = -1,      /* a required pointer is NULL while there is work to do */
    MSTPP_ERR_BAD_SHAPE = -2,         /* a negative size, or a problem too large for the launch grid */
    MSTPP_ERR_BAD_DTYPE = -3,         /* dtype is not one of mstpp_dtype */
    MSTPP_ERR_UNSUPPORTED_WIDTH = -4, /* channel count not supported: LayerNorm [1, MSTPP_LAYERNORM_MAX_C],
                                         FFN and MSA 31, 62 or 124; conv Cin 3, 31, 62 and
                                         Cout 31, 62, 124; upfuse Clow 62 or 124 */
    MSTPP_ERR_BAD_EPS = -5,           /* eps is negative or not finite */
    MSTPP_ERR_OVERLAP = -6,           /* y overlaps x where the kernel cannot work in place (FFN, MSA, conv,
                                         upfuse), or the workspace overlaps x or y (MSA) */
    MSTPP_ERR_UNSUPPORTED_CONV = -7   /* convolution geometry other than (k3, s1, p1) and (k4, s2, p1) */
};

/* Largest channel count the LayerNorm kernels accept (31/62/124 have dedicated kernels, the rest a generic one). */
#define MSTPP_LAYERNORM_MAX_C 1024

/* Text for a return code of any function below; never NULL. */
MSTPP_API const char* mstpp_error_string(int code);

/*
 * LayerNorm over the last dim of a contiguous [rows, C] tensor (channels-last):
 *   y[r, c] = (x[r, c] - mean_r) / sqrt(var_r + eps) * gamma[c] + beta[c]
 * with the biased variance, as torch.nn.functional.layer_norm. gamma and beta are float32 [C] on the device.
 */
MSTPP_API int mstpp_layernorm_rows(const void* x, void* y, const float* gamma, const float* beta, int64_t rows,
    int C, float eps, int dtype, void* stream);

/*
 * LayerNorm over dim 1 of a contiguous [B, C, HW] tensor (NCHW with H*W flattened), for every (b, pixel),
 * without a permute: equal to permute(0,2,1) -> layer_norm over C -> permute back.
 */
MSTPP_API int mstpp_layernorm_nchw(const void* x, void* y, const float* gamma, const float* beta, int64_t B,
    int C, int64_t HW, float eps, int dtype, void* stream);

/* Bytes of device workspace mstpp_l2norm_rows needs for a [rows, L] tensor (0 when empty). */
MSTPP_API size_t mstpp_l2norm_workspace_size(int64_t rows, int64_t L);

/*
 * L2 normalisation along the last dim of a contiguous [rows, L] tensor, as torch.nn.functional.normalize:
 *   y[r, :] = x[r, :] / max(||x[r, :]||_2, eps)
 * The sum of squares is accumulated in float32 and reduced in a fixed order, so results are bitwise
 * reproducible on a given GPU model. `workspace` holds at least mstpp_l2norm_workspace_size(rows, L) bytes of
 * device memory; its contents on entry do not matter.
 */
MSTPP_API int mstpp_l2norm_rows(const void* x, void* y, int64_t rows, int64_t L, float eps, int dtype,
    void* workspace, void* stream);

/* Exact (erf) GELU on n contiguous elements: y = 0.5 * x * (1 + erf(x / sqrt(2))), computed in float32. */
MSTPP_API int mstpp_gelu(const void* x, void* y, int64_t n, int dtype, void* stream);

/*
 * MST++ feed-forward block with its pre-norm and residual, on contiguous NCHW tensors [B, C, H, W]:
 *   y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x))))
 * LN: LayerNorm over the C channels of each pixel (biased variance, eps, affine ln_gamma/ln_beta [C]).
 * w1: [4C, C] (1x1 conv, no bias). wdw: [4C, 3, 3] depthwise 3x3 conv, stride 1, zero padding 1 applied to its
 * input (hidden values outside the image are 0), no bias. w2: [C, 4C] (1x1 conv, no bias). GELU is exact (erf).
 * All weights are float32 device arrays; x and y share `dtype`. FP32 storage: every operation runs in float32 (FMA,
 * no TF32). FP16/BF16 storage: the two 1x1 convolutions run on tensor cores with operands of the storage type (LN(x),
 * W1, GELU(DW(.)) and W2 rounded to it) and float32 accumulation; LN statistics, the depthwise conv and both GELUs
 * (GELU within 1e-6 of erf form) stay float32. The 4C hidden state never goes to global memory (spatial tiles with
 * a 1-pixel halo in shared memory). Deterministic (no atomics, fixed summation order).
 * C must be 31, 62 or 124 (MSTPP_ERR_UNSUPPORTED_WIDTH otherwise); any B, H, W >= 0.
 * x and y must not overlap, y == x included: tiles read their halo from pixels that other tiles write, so the
 * kernel cannot run in place (MSTPP_ERR_OVERLAP). Uses up to 98 KB of shared memory per block (sm_80+).
 */
MSTPP_API int mstpp_ffn_nchw(const void* x, void* y, const float* ln_gamma, const float* ln_beta, const float* w1,
    const float* wdw, const float* w2, int64_t B, int C, int64_t H, int64_t W, float eps, int dtype, void* stream);

/* Bytes of device workspace mstpp_msa_nchw needs for x of shape [B, C, H, W], whatever the dtype (0 when the
 * tensor is empty, C is not 31, 62 or 124, or the problem is too large). Non-decreasing in B, H and W wherever it is
 * nonzero: the size for the largest shape of a range covers every shape in it, as TensorRT plugins need (they size
 * their workspace for the profile's max shape). */
MSTPP_API size_t mstpp_msa_workspace_size(int64_t B, int C, int64_t H, int64_t W);

/*
 * MST++ spectral-wise multi-head self-attention (SpectralMSA, official name MS_MSA) with the residual of its MSAB
 * block, on contiguous NCHW tensors [B, C, H, W]:
 *   y = x + Wproj . (blockdiag_h(A_h) . v) + bproj + dw2(GELU(dw1(v))),   v = Wv . x, q = Wq . x, k = Wk . x,
 *   A_h = softmax_rows(rescale[h] * kn_h . qn_h^T)
 * with heads = C / 31 heads of 31 channels; kn_h / qn_h are the 31 rows of k / q of head h, each L2-normalised
 * over the H*W pixels as F.normalize (norm clamped at 1e-12). wq, wk, wv, wproj: [C, C] (Linear weights, out x in;
 * to_q/to_k/to_v/proj.weight), rescale: [heads], bproj: [C], wpos1 / wpos2: [C, 3, 3] depthwise 3x3 kernels
 * (pos_emb.0/.2.weight), stride 1, zero padding 1 applied to their inputs, no bias. GELU is exact (erf).
 * All weights are float32 device arrays; x and y share `dtype`.
 *
 * Computed through the Gram matrix S = X X^T of each image (X = x[b] as [C, H*W]): the attention numerators and
 * norms are (Wk S Wq^T)_ij, (Wk S Wk^T)_ii, (Wq S Wq^T)_jj, and Wproj . blockdiag(A) . Wv folds into one [C, C]
 * matrix per image, so x is read twice and y written once; q, k, v never reach global memory. Images of at most
 * 32 pixels take the numerators and norms from q and k directly. Everything runs in float32 (FMA, no TF32), with
 * no atomics: repeated calls give identical bits on a given GPU. Through S, a row of q or k whose values mostly
 * cancel (||Wk_i x|| << ||Wk_i|| ||x||) loses about twice as many digits as in the direct computation.
 *
 * workspace: device memory of at least mstpp_msa_workspace_size(B, C, H, W) bytes, any alignment, contents on
 * entry irrelevant, not overlapping x or y. C must be 31, 62 or 124 (MSTPP_ERR_UNSUPPORTED_WIDTH); any B, H, W >= 0.
 * x and y must not overlap, y == x included (MSTPP_ERR_OVERLAP). Uses up to 98 KB of shared memory per block
 * (sm_80+).
 */
MSTPP_API int mstpp_msa_nchw(const void* x, void* y, const float* wq, const float* wk, const float* wv,
    const float* rescale, const float* wproj, const float* bproj, const float* wpos1, const float* wpos2, int64_t B,
    int C, int64_t H, int64_t W, int dtype, void* workspace, void* stream);

/*
 * 2-D convolution without bias, zero padding, on contiguous NCHW tensors, with an optional residual:
 *   y[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] x[b, ci, S oy - P + ky, S ox - P + kx] (+ residual[b, co, oy, ox])
 * x: [B, Cin, H, W]; w: [Cout, Cin, k, k] float32 (PyTorch Conv2d layout); y and residual: [B, Cout, Ho, Wo] with
 * Ho = (H + 2 pad - k) / stride + 1 (same for Wo). (ksize, stride, pad) must be (3, 1, 1) or (4, 2, 1)
 * (MSTPP_ERR_UNSUPPORTED_CONV); Cin in {3, 31, 62}, Cout in {31, 62, 124} (MSTPP_ERR_UNSUPPORTED_WIDTH); H and W at
 * least k - 2 pad (MSTPP_ERR_BAD_SHAPE otherwise, as PyTorch refuses an empty output); B = 0 does nothing.
 * x, y and residual share `dtype`; residual may be NULL, or y itself (in-place accumulation), but may not partly
 * overlap y. y must not overlap x or w (MSTPP_ERR_OVERLAP).
 * Arithmetic: FP32 storage, and Cin = 3 for every dtype: float32 FMA (no TF32). FP16/BF16 storage with Cin = 31 or
 * 62: tensor cores (mma.sync m16n8k16) with x as stored, w rounded to the storage type, float32 accumulation; y is
 * rounded once, after the residual add. Deterministic. Uses up to 83 KB of shared memory per block (sm_80+).
 */
MSTPP_API int mstpp_conv_nchw(const void* x, void* y, const float* w, const void* residual, int64_t B, int Cin,
    int64_t H, int64_t W, int Cout, int ksize, int stride, int pad, int dtype, void* stream);

/*
 * MST++ decoder step with folded weights, on contiguous NCHW tensors:
 *   y = Conv1x1(cat([ConvTranspose2d(low; w_up [Clow, Cs, 2, 2], b_up [Cs], stride 2), skip], dim 1); w_fuse [Cs, Clow])
 * with Cs = Clow / 2, computed as the equal linear map
 *   y[b, :, p] = wa[2 (py % 2) + (px % 2)] . low[b, :, py / 2, px / 2] + wb . skip[b, :, p] + bias
 * where (the fold, done by the caller, e.g. mstpp.kernels.fold_upfuse, once per set of weights):
 *   wa[2 ki + kj] = w_fuse[:, :Cs] . w_up[:, :, ki, kj]^T   [4][Cs][Clow] float32
 *   wb           = w_fuse[:, Cs:]                          [Cs][Cs] float32
 *   bias         = w_fuse[:, :Cs] . b_up                   [Cs] float32
 * low: [B, Clow, Hlow, Wlow]; skip and y: [B, Cs, 2 Hlow, 2 Wlow]; all three share `dtype`. Clow must be 62 or 124
 * (MSTPP_ERR_UNSUPPORTED_WIDTH). Float32 FMA for every dtype (y rounded once). y must not overlap low or skip
 * (MSTPP_ERR_OVERLAP). Deterministic.
 */
MSTPP_API int mstpp_upfuse_nchw(const void* low, const void* skip, void* y, const float* wa, const float* wb,
    const float* bias, int64_t B, int Clow, int64_t Hlow, int64_t Wlow, int dtype, void* stream);

/*
 * What this build of the library supports, so callers (mstpp/kernels.py) read it here instead of copying it. Each
 * capability is a list of int64 values; mstpp_capability() writes the first min(count, capacity) of them to `out`
 * (out may be NULL when capacity is 0) and returns the count, or MSTPP_ERR_BAD_SHAPE for an unknown `what`.
 * Host-only: no CUDA call is made, so it answers on a machine without a GPU.
 */
enum mstpp_capability_id
{
    MSTPP_CAP_ABI_VERSION = 0,       /* one value; bumped whenever a declaration is appended to this header */
    MSTPP_CAP_LAYERNORM_MAX_C = 1,   /* one value: MSTPP_LAYERNORM_MAX_C */
    MSTPP_CAP_FFN_CHANNELS = 2,      /* channel counts mstpp_ffn_nchw accepts */
    MSTPP_CAP_MSA_CHANNELS = 3,      /* channel counts mstpp_msa_nchw accepts */
    MSTPP_CAP_MSA_HEAD_DIM = 4,      /* one value: channels per attention head */
    MSTPP_CAP_CONV_IN_CHANNELS = 5,  /* Cin values mstpp_conv_nchw accepts */
    MSTPP_CAP_CONV_OUT_CHANNELS = 6, /* Cout values mstpp_conv_nchw accepts */
    MSTPP_CAP_CONV_GEOMETRIES = 7,   /* (ksize, stride, pad) triples mstpp_conv_nchw accepts, flattened */
    MSTPP_CAP_UPFUSE_CHANNELS = 8    /* Clow values mstpp_upfuse_nchw accepts */
};

MSTPP_API int mstpp_capability(int what, int64_t* out, int capacity);

#ifdef __cplusplus
}
#endif

#endif /* MSTPP_KERNELS_H */
