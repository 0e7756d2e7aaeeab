// Warp-level tensor-core MMA with 16-bit operands and float32 accumulation:
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32   D[16x8] = A[16x16] . B[16x8] + C[16x8]
// (sm_80 and newer), and the fragment layouts of its operands (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type"). Lane l of the warp: group g = l / 4, position t = l % 4 in the group.
//   A, 4 x 32-bit registers a[r], each two 16-bit elements, the lower half first:
//     a[r] = (A[g + 8 (r & 1)][2t + 8 (r >> 1)], A[same row][that column + 1])
//   B, 2 registers: b[r] = (B[2t + 8r][g], B[2t + 8r + 1][g])
//   C/D, 4 floats:  d[i] = D[g + 8 (i >> 1)][2t + (i & 1)]
// The index helpers are constexpr and host-callable, so a CPU emulation can check code that uses them. The device
// part is only compiled by nvcc.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MSTPP_MMA16_HD __host__ __device__
#else
#define MSTPP_MMA16_HD
#endif

namespace mstpp
{
namespace mma16
{

// A operand (row-major 16 x 16 tile): the row and (first) column of register r of `lane`.
MSTPP_MMA16_HD constexpr int a_row(int lane, int r)
{
    return lane / 4 + 8 * (r & 1);
}
MSTPP_MMA16_HD constexpr int a_col(int lane, int r)
{
    return 2 * (lane % 4) + 8 * (r >> 1);
}

// B operand (16 x 8, k x n): the (first) k and the n of register r of `lane`.
MSTPP_MMA16_HD constexpr int b_k(int lane, int r)
{
    return 2 * (lane % 4) + 8 * r;
}
MSTPP_MMA16_HD constexpr int b_n(int lane)
{
    return lane / 4;
}

// C/D (16 x 8 float): the row and column of element i of `lane`.
MSTPP_MMA16_HD constexpr int c_row(int lane, int i)
{
    return lane / 4 + 8 * (i >> 1);
}
MSTPP_MMA16_HD constexpr int c_col(int lane, int i)
{
    return 2 * (lane % 4) + (i & 1);
}

// A matrix of (16 mt) x (16 kt) elements stored as ready-made A fragments: [mt][kt][lane][8 halves], so that the
// warp loads the fragment of tile (m, k) as one 16-byte vector per lane (512 contiguous bytes per warp).
// Returns the 16-bit element index of A[row][col]; kt = columns / 16.
MSTPP_MMA16_HD constexpr int packed_a_index(int row, int col, int kt)
{
    int const r = row % 16;
    int const k = col % 16;
    int const lane = (r % 8) * 4 + (k % 8) / 2;
    int const reg = r / 8 + 2 * (k / 8);
    return (((row / 16) * kt + col / 16) * 32 + lane) * 8 + reg * 2 + k % 2;
}

#if defined(__CUDACC__)
// d += A . B. T selects the operand type (__half or __nv_bfloat16); the registers hold the raw 16-bit patterns.
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], uint4 const& a, uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma<__half>(float (&d)[4], uint4 const& a, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float (&d)[4], uint4 const& a, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

// The same with A as four registers in an array (as ldmatrix fills them).
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
    mma<T>(d, make_uint4(a[0], a[1], a[2], a[3]), b0, b1);
}

// Two floats -> one 32-bit register of two 16-bit values (the low half holds `lo`, the lower k or n index).
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<__half>(float lo, float hi)
{
    __half2 const h = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}
template <>
__device__ __forceinline__ uint32_t pack_pair<__nv_bfloat16>(float lo, float hi)
{
    __nv_bfloat162 const h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

// Four 8x8 16-bit matrices from shared memory; lane l supplies the address of row l % 8 of matrix l / 8, and
// register i receives matrix i (lane l: row l / 4, elements 2 (l % 4), 2 (l % 4) + 1; with .trans: column l / 4,
// rows 2 (l % 4), 2 (l % 4) + 1).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], void const* p)
{
    unsigned const a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], void const* p)
{
    unsigned const a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

// float -> the 16-bit pattern of T (round to nearest even), and back.
template <typename T>
__device__ __forceinline__ uint16_t to_bits(float v);
template <>
__device__ __forceinline__ uint16_t to_bits<__half>(float v)
{
    return __half_as_ushort(__float2half_rn(v));
}
template <>
__device__ __forceinline__ uint16_t to_bits<__nv_bfloat16>(float v)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <typename T>
__device__ __forceinline__ float from_bits(uint16_t b);
template <>
__device__ __forceinline__ float from_bits<__half>(uint16_t b)
{
    return __half2float(__ushort_as_half(b));
}
template <>
__device__ __forceinline__ float from_bits<__nv_bfloat16>(uint16_t b)
{
    return __bfloat162float(__ushort_as_bfloat16(b));
}
#endif

} // namespace mma16
} // namespace mstpp
