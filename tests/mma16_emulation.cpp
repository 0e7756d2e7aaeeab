// CPU emulation of the fragment index math of the tensor-core MSA kernels (plugins/kernels/msa.cu: gram_tc_kernel,
// gram_reduce_tc_kernel, the fragment packing of attn_fold_kernel, GEMM1 / GEMM2 of msa_tc_kernel) against the PTX
// ISA's element-wise m16n8k16 fragment tables, written out here independently of mma16.cuh. The kernels' loops are
// mirrored line by line (keep them in sync); the helpers of mma16.cuh are the ones the kernels use. 16-bit
// "values" are small integers stored in uint16 (decode = identity), so every sum is exact and compared exactly.
// Built and run by tests/test_kernels_msa.py::test_msa_mma_fragment_emulation (host compiler only, no GPU).
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <cstring>
#include "mma16.cuh"
using namespace mstpp::mma16;

// PTX ISA tables, element-wise (independent of mma16.cuh's register formulation).
static int ptxA_row(int lane, int i) { int g = lane >> 2; return (i < 2 || (i >= 4 && i < 6)) ? g : g + 8; }
static int ptxA_col(int lane, int i) { int t = lane % 4; return t * 2 + (i & 1) + (i >= 4 ? 8 : 0); }
static int ptxB_row(int lane, int i) { int t = lane % 4; return t * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
static int ptxB_col(int lane) { return lane >> 2; }
static int ptxC_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
static int ptxC_col(int lane, int i) { return (lane % 4) * 2 + (i & 1); }

struct U4 { uint32_t x, y, z, w; };
// Warp-wide mma: a[lane], b0/b1[lane], d[lane][4].
static void mma_warp(double d[32][4], const U4 a[32], const uint32_t b0[32], const uint32_t b1[32]) {
    double A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        uint32_t r[4] = {a[l].x, a[l].y, a[l].z, a[l].w};
        for (int i = 0; i < 8; ++i) A[ptxA_row(l, i)][ptxA_col(l, i)] = (r[i / 2] >> (16 * (i & 1))) & 0xffff;
        uint32_t rb[2] = {b0[l], b1[l]};
        for (int i = 0; i < 4; ++i) B[ptxB_row(l, i)][ptxB_col(l)] = (rb[i / 2] >> (16 * (i & 1))) & 0xffff;
    }
    double D[16][8] = {};
    for (int m = 0; m < 16; ++m) for (int n = 0; n < 8; ++n) for (int k = 0; k < 16; ++k) D[m][n] += A[m][k] * B[k][n];
    for (int l = 0; l < 32; ++l) for (int i = 0; i < 4; ++i) d[l][i] += D[ptxC_row(l, i)][ptxC_col(l, i)];
}
static uint32_t ld32(const uint16_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int fails = 0;
#define CHECK(cond, ...) \
    do { if (!(cond) && fails++ < 10) { printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

// ------------------------------------------------------------------ helpers consistency
static void check_helpers() {
    for (int l = 0; l < 32; ++l) {
        for (int r = 0; r < 4; ++r) for (int h = 0; h < 2; ++h) {
            CHECK(a_row(l, r) == ptxA_row(l, 2 * r + h) && a_col(l, r) + h == ptxA_col(l, 2 * r + h),
                  "A helper l%d r%d", l, r);
        }
        for (int r = 0; r < 2; ++r) for (int h = 0; h < 2; ++h)
            CHECK(b_k(l, r) + h == ptxB_row(l, 2 * r + h) && b_n(l) == ptxB_col(l), "B helper");
        for (int i = 0; i < 4; ++i) CHECK(c_row(l, i) == ptxC_row(l, i) && c_col(l, i) == ptxC_col(l, i), "C helper");
    }
    // packed_a_index: a bijection onto [0, rows*cols), and lane l's uint4 of tile (m,k) holds A[a_row][a_col..]
    int R = 64, Cc = 48, kt = Cc / 16;
    std::vector<int> seen(R * Cc, 0);
    for (int r = 0; r < R; ++r) for (int c = 0; c < Cc; ++c) {
        int at = packed_a_index(r, c, kt);
        CHECK(at >= 0 && at < R * Cc, "range"); seen[at]++;
        int tile = at / 256, lane = (at / 8) % 32, reg = (at % 8) / 2, half = at % 2;
        CHECK(tile == (r / 16) * kt + c / 16, "tile");
        CHECK(r % 16 == a_row(lane, reg) && c % 16 == a_col(lane, reg) + half, "packed pos r%d c%d", r, c);
    }
    for (int v : seen) CHECK(v == 1, "bijection");
}

// ------------------------------------------------------------------ Gram (gram_tc_kernel + gram_reduce_tc_kernel)
static void tc_tile(int t, int n8_count, int& mt, int& n8) {
    int row = 0; while (t >= n8_count - 2 * row) { t -= n8_count - 2 * row; ++row; } mt = row; n8 = 2 * row + t;
}
static int round_up(int a, int b) { return (a + b - 1) / b * b; }

static void check_gram(int C, int P, int WT, long N, long begin, long ppb) {
    const int CP = round_up(C, 32), MT = CP / 16, N8 = CP / 8, kTiles = MT * N8 - MT * (MT - 1);
    const int kWarps = 8, WK = kWarps / WT, TPG = kTiles / WT, PX = P + 8, KSTEPS = P / 16, kThreads = 256;
    long end = begin + ppb < N ? begin + ppb : N;
    std::vector<uint16_t> x((size_t)C * N);
    for (auto& v : x) v = rand() % 7;
    std::vector<double> acc((size_t)kWarps * TPG * 32 * 4, 0.0);
    std::vector<uint16_t> xs((size_t)CP * PX, 0xdead);
    for (long n0 = begin; n0 < end; n0 += P) {
        for (int e = 0; e < CP * P; ++e) {  // every (tid, iteration) pair covers e once
            int c = e / P, p = e % P;
            xs[(e / P) * PX + e % P] = (c < C && n0 + p < end) ? x[(size_t)c * N + n0 + p] : 0;
        }
        for (int warp = 0; warp < kWarps; ++warp) {
            int wt = warp % WT, wk = warp / WT;
            for (int ks = wk; ks < KSTEPS; ks += WK) {
                int k0 = ks * 16;
                for (int i = 0; i < TPG; ++i) {
                    U4 a[32]; uint32_t b0[32], b1[32]; double d[32][4];
                    for (int lane = 0; lane < 32; ++lane) {
                        int mt, n8; tc_tile(wt + WT * i, N8, mt, n8);
                        int aoff = (mt * 16 + a_row(lane, 0)) * PX + a_col(lane, 0);
                        int boff = (n8 * 8 + b_n(lane)) * PX + b_k(lane, 0);
                        const uint16_t* pa = xs.data() + aoff + k0; const uint16_t* pb = xs.data() + boff + k0;
                        a[lane] = {ld32(pa), ld32(pa + 8 * PX), ld32(pa + 8), ld32(pa + 8 * PX + 8)};
                        b0[lane] = ld32(pb); b1[lane] = ld32(pb + 8);
                        for (int q = 0; q < 4; ++q) d[lane][q] = acc[(((size_t)warp * TPG + i) * 32 + lane) * 4 + q];
                    }
                    mma_warp(d, a, b0, b1);
                    for (int lane = 0; lane < 32; ++lane) for (int q = 0; q < 4; ++q)
                        acc[(((size_t)warp * TPG + i) * 32 + lane) * 4 + q] = d[lane][q];
                }
            }
        }
    }
    // block reduction + partial layout
    std::vector<double> partial((size_t)kTiles * 128, -1e300);
    for (int warp = 0; warp < kWarps; ++warp) {
        int wt = warp % WT, wk = warp / WT; if (wk != 0) continue;
        for (int i = 0; i < TPG; ++i) { int t = wt + WT * i;
            for (int lane = 0; lane < 32; ++lane) for (int q = 0; q < 4; ++q) {
                double s = acc[(((size_t)warp * TPG + i) * 32 + lane) * 4 + q];
                for (int k = 1; k < WK; ++k) s += acc[((((size_t)(wt + k * WT)) * TPG + i) * 32 + lane) * 4 + q];
                partial[(size_t)t * 128 + lane * 4 + q] = s;
            } }
    }
    (void)kThreads;
    std::vector<double> S((size_t)C * C, -1e300);
    for (int e = 0; e < kTiles * 128; ++e) {
        int tile = e / 128, lane = (e / 4) % 32, k = e % 4, mt, n8; tc_tile(tile, N8, mt, n8);
        int i = mt * 16 + c_row(lane, k), j = n8 * 8 + c_col(lane, k);
        CHECK(partial[e] > -1e299, "partial element %d unwritten", e);
        if (i <= j && j < C) { S[i * C + j] = partial[e]; S[j * C + i] = partial[e]; }
    }
    for (int i = 0; i < C; ++i) for (int j = 0; j < C; ++j) {
        double ref = 0; for (long n = begin; n < end; ++n) ref += (double)x[(size_t)i * N + n] * x[(size_t)j * N + n];
        CHECK(S[i * C + j] == ref, "gram C=%d S[%d][%d] %g vs %g", C, i, j, S[i * C + j], ref);
    }
}

// ------------------------------------------------------------------ pass 2 GEMMs (msa_tc_kernel)
static void check_pass2(int C, int TH, int TW, int H, int W, int y0, int x0) {
    const int CP = round_up(C, 32), KT = CP / 16, K = 16, kWarps = 8;
    const int HTW2 = TW + 4, HTH2 = TH + 4, NH2 = HTH2 * HTW2, NO = TH * TW;
    const int NT1 = (NH2 + 7) / 8, NT2 = (NO + 7) / 8, NH2R = NT1 * 8, CPX = CP + 8;
    const int NH2P = round_up(NH2R - 8, 32) + 8, NOP = round_up(NT2 * 8 - 8, 32) + 8;
    std::vector<uint16_t> x((size_t)C * H * W); for (auto& v : x) v = rand() % 5;
    std::vector<int> Wv(C * C), M(C * C), b(C);
    for (auto& v : Wv) v = rand() % 4;
    for (auto& v : M) v = rand() % 4;
    for (auto& v : b) v = rand() % 9;
    // fold: packed fragments (zero padding)
    std::vector<uint16_t> fragWv(CP * CP), fragM(CP * CP);
    for (int o = 0; o < CP; ++o) for (int c = 0; c < CP; ++c) {
        fragWv[packed_a_index(o, c, KT)] = (o < C && c < C) ? Wv[o * C + c] : 0;
        fragM[packed_a_index(o, c, KT)] = (o < C && c < C) ? M[o * C + c] : 0;
    }
    auto frag4 = [&](const std::vector<uint16_t>& f, int idx, int lane) {
        const uint16_t* p = f.data() + ((size_t)idx * 32 + lane) * 8;
        return U4{ld32(p), ld32(p + 2), ld32(p + 4), ld32(p + 6)};
    };
    // x halo -> xs[p][c]
    std::vector<uint16_t> xs((size_t)NH2R * CPX, 0xbeef);
    for (int e = 0; e < C * NH2; ++e) {
        int c = e / NH2, p = e - c * NH2, hr = p / HTW2, gy = y0 - 2 + hr, gx = x0 - 2 + (p - hr * HTW2);
        xs[p * CPX + c] = (gy >= 0 && gy < H && gx >= 0 && gx < W) ? x[(size_t)c * H * W + gy * W + gx] : 0;
    }
    for (int e = 0; e < NH2R * (CP - C); ++e) { int p = e / (CP - C); xs[p * CPX + C + (e - p * (CP - C))] = 0; }
    for (int e = 0; e < (NH2R - NH2) * C; ++e) { int p = e / C; xs[(NH2 + p) * CPX + (e - p * C)] = 0; }
    auto xval = [&](int c, int gy, int gx) -> double {
        return (gy >= 0 && gy < H && gx >= 0 && gx < W) ? x[(size_t)c * H * W + gy * W + gx] : 0.0; };
    auto halo_pixel = [&](int q) { return (q / TW + 2) * HTW2 + q % TW + 2; };
    // GEMM2
    std::vector<double> outs((size_t)CP * NOP, -1e300);
    for (int warp = 0; warp < kWarps; ++warp)
    for (int mt = 0; mt < KT; ++mt)
    for (int nt = warp; nt < NT2; nt += kWarps) {
        double d[32][4] = {};
        for (int ks = 0; ks < KT; ++ks) {
            U4 a[32]; uint32_t b0[32], b1[32];
            for (int lane = 0; lane < 32; ++lane) {
                a[lane] = frag4(fragM, mt * KT + ks, lane);
                int qb = nt * 8 + b_n(lane);
                const uint16_t* xp = xs.data() + (qb < NO ? halo_pixel(qb) : 0) * CPX;
                b0[lane] = ld32(xp + ks * 16 + b_k(lane, 0)); b1[lane] = ld32(xp + ks * 16 + b_k(lane, 1));
            }
            mma_warp(d, a, b0, b1);
        }
        for (int lane = 0; lane < 32; ++lane) {
            for (int i = 0; i < 4; ++i) {
                int q = nt * 8 + c_col(lane, i); int o = mt * 16 + c_row(lane, i);
                double bo = o < C ? b[o] : 0.0;
                if (q < NO) d[lane][i] += xs[halo_pixel(q) * CPX + o] + bo;
            }
            int col = nt * 8 + c_col(lane, 0);
            CHECK(col % 2 == 0 && col + 1 < NOP, "float2 store alignment");
            for (int i = 0; i < 4; ++i) outs[(mt * 16 + c_row(lane, i)) * NOP + nt * 8 + c_col(lane, i)] = d[lane][i];
        }
    }
    for (int o = 0; o < C; ++o) for (int q = 0; q < NO; ++q) {
        int gy = y0 + q / TW, gx = x0 + q % TW;
        double ref = xval(o, gy, gx) + b[o];
        for (int c = 0; c < C; ++c) ref += (double)M[o * C + c] * xval(c, gy, gx);
        CHECK(outs[o * NOP + q] == ref, "GEMM2 C=%d o=%d q=%d: %g vs %g", C, o, q, outs[o * NOP + q], ref);
    }
    // GEMM1, every chunk
    for (int chunk = 0; chunk < CP / K; ++chunk) {
        std::vector<double> vs((size_t)K * NH2P, -1e300);
        for (int warp = 0; warp < kWarps; ++warp) for (int nt = warp; nt < NT1; nt += kWarps) {
            double d[32][4] = {};
            for (int ks = 0; ks < KT; ++ks) {
                U4 a[32]; uint32_t b0[32], b1[32];
                for (int lane = 0; lane < 32; ++lane) {
                    a[lane] = frag4(fragWv, chunk * KT + ks, lane);
                    const uint16_t* xp = xs.data() + (nt * 8 + b_n(lane)) * CPX;
                    b0[lane] = ld32(xp + ks * 16 + b_k(lane, 0)); b1[lane] = ld32(xp + ks * 16 + b_k(lane, 1));
                }
                mma_warp(d, a, b0, b1);
            }
            for (int lane = 0; lane < 32; ++lane) {
                int col = nt * 8 + c_col(lane, 0);
                vs[c_row(lane, 0) * NH2P + col] = d[lane][0]; vs[c_row(lane, 0) * NH2P + col + 1] = d[lane][1];
                vs[c_row(lane, 2) * NH2P + col] = d[lane][2]; vs[c_row(lane, 2) * NH2P + col + 1] = d[lane][3];
            }
        }
        for (int j = 0; j < K; ++j) for (int p = 0; p < NH2; ++p) {
            int jj = chunk * K + j, gy = y0 - 2 + p / HTW2, gx = x0 - 2 + p % HTW2;
            double ref = 0; if (jj < C) for (int c = 0; c < C; ++c) ref += (double)Wv[jj * C + c] * xval(c, gy, gx);
            CHECK(vs[j * NH2P + p] == ref, "GEMM1 C=%d j=%d p=%d: %g vs %g", C, jj, p, vs[j * NH2P + p], ref);
        }
    }
    // bank conflicts: B fragment loads (8 groups x 4 lanes) of a GEMM1 n-tile, 32-bit words
    for (int ks = 0; ks < KT; ++ks) for (int r = 0; r < 2; ++r) {
        int banks[32] = {};
        for (int lane = 0; lane < 32; ++lane) banks[(((0 * 8 + b_n(lane)) * CPX + ks * 16 + b_k(lane, r)) / 2) % 32]++;
        for (int k = 0; k < 32; ++k) CHECK(banks[k] <= 1, "GEMM1 B load bank conflict C=%d", C);
    }
}

int main() {
    srand(1);
    check_helpers();
    check_gram(31, 256, 1, 1000, 256, 512);   // partial last chunk? begin+ppb=768 < N: two full chunks
    check_gram(31, 256, 1, 1000, 768, 512);   // tail block: 232 pixels, one partial chunk
    check_gram(62, 128, 2, 300, 0, 384);      // 300 pixels: chunks of 128, last partial
    check_gram(124, 64, 8, 100, 0, 128);      // 100 pixels
    check_pass2(31, 12, 12, 17, 23, 0, 0);
    check_pass2(31, 12, 12, 17, 23, 12, 12);  // partial tile at the bottom-right corner
    check_pass2(62, 8, 16, 9, 17, 8, 16);
    check_pass2(62, 8, 16, 20, 40, 8, 16);
    check_pass2(124, 8, 8, 5, 7, 0, 0);
    check_pass2(124, 8, 8, 20, 20, 8, 8);
    printf(fails ? "%d FAILURES\n" : "all checks passed\n", fails);
    return fails != 0;
}
