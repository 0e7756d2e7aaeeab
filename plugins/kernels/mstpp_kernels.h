/*
 * C ABI of the MST++ CUDA kernels: LayerNorm over channels, L2 normalisation along the last dim, exact GELU.
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
    MSTPP_ERR_UNSUPPORTED_WIDTH = -4, /* LayerNorm channel count outside [1, MSTPP_LAYERNORM_MAX_C] */
    MSTPP_ERR_BAD_EPS = -5            /* eps is negative or not finite */
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

#ifdef __cplusplus
}
#endif

#endif /* MSTPP_KERNELS_H */
