// deform_simd.h: the fused deformation network for one tile of Gaussians, compiled four times:
//   deform_cpu_amx.cpp     GT_SIMD_AVX512 + GT_DEFORM_AMX: as avx512, the INT8 GEMMs on AMX tiles (tdpbusd)
//   deform_cpu_avx512.cpp  GT_SIMD_AVX512  zmm FP32 FMA, INT8 by AVX-512 VNNI (vpdpbusd)
//   deform_cpu_avx2.cpp    GT_SIMD_AVX2    ymm FP32 FMA, INT8 by maddubs/madd (exact: see gemm_i8)
//   deform_cpu_generic.cpp GT_SIMD_GENERIC plain loops (the compiler vectorises the FP32 ones)
// Everything here has internal linkage (anonymous namespace): the files have different -m flags,
// so no inline code may be shared through the linker.
//
// A tile is kRows Gaussians; for each frame its activations ([rows, 64] / [rows, 128]) live in a
// per-thread scratch of ~50 KB while the packed weights stream from L2. Per layer (post-norm):
//   S = X U + c (scores), A = softmax per head over 4 tokens, O = A Z + bo, H = LN1(X + O),
//   X = LN2(H + ffn2(relu(ffn1(H)))); then per head relu(X fc1_h) fc2_h -> offsets (+ activations);
//   the 1-4-output heads' fc2 are FP32 dot products (small_head), the sh head's a GEMM.
// INT8: every ffn / head Linear quantises its input rows (symmetric, per row: a ReLU's output to
// [0, 127], a signed input to [-63, 63]) against weights in [-63, 63] with per-column scales, and
// accumulates int32 exactly (every variant the same integers); the attention stays FP32.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "deform_kernels.h"

#if (defined(GT_SIMD_AVX512) + defined(GT_SIMD_AVX2) + defined(GT_SIMD_GENERIC)) != 1
#error "define exactly one of GT_SIMD_AVX512, GT_SIMD_AVX2, GT_SIMD_GENERIC before including deform_simd.h"
#endif
#if defined(GT_SIMD_AVX512) || defined(GT_SIMD_AVX2)
#include <immintrin.h>
#endif

namespace gt {
namespace deform {
namespace {

// -- FP32 GEMM: Y[r, c] = act(X[r, :] W[:, p*16 + c] + b) for panels p in [p0, p1), rows [0, kRows) --
template <bool RELU>
void gemm_f32(const float* X, int ldx, const Lin& L, int p0, int p1, float* Y, int ldy)
{
    const int K = L.K;
    for (int p = p0; p < p1; ++p) {
        const float* W = L.wf + (size_t)p * K * kPW;
        const float* bias = L.b + p * kPW;
        float* Yp = Y + (p - p0) * kPW;
#if defined(GT_SIMD_AVX512)
        for (int r = 0; r < kRows; r += 8) {
            __m512 acc[8];
            const __m512 b0 = _mm512_loadu_ps(bias);
            for (int i = 0; i < 8; ++i) acc[i] = b0;
            const float* x = X + (size_t)r * ldx;
            for (int k = 0; k < K; ++k) {
                const __m512 w = _mm512_loadu_ps(W + k * kPW);
                for (int i = 0; i < 8; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(x[i * ldx + k]), w, acc[i]);
            }
            for (int i = 0; i < 8; ++i) {
                if (RELU) acc[i] = _mm512_max_ps(acc[i], _mm512_setzero_ps());
                _mm512_storeu_ps(Yp + (size_t)(r + i) * ldy, acc[i]);
            }
        }
#elif defined(GT_SIMD_AVX2)
        if (L.M <= 8) {  // the attention scores: 8 columns, so one ymm per row (the panel's other half is padding)
            for (int r = 0; r < kRows; r += 8) {
                __m256 acc[8];
                const __m256 b0 = _mm256_loadu_ps(bias);
                for (int i = 0; i < 8; ++i) acc[i] = b0;
                const float* x = X + (size_t)r * ldx;
                for (int k = 0; k < K; ++k) {
                    const __m256 w0 = _mm256_loadu_ps(W + k * kPW);
                    for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i * ldx + k), w0, acc[i]);
                }
                for (int i = 0; i < 8; ++i) {
                    if (RELU) acc[i] = _mm256_max_ps(acc[i], _mm256_setzero_ps());
                    _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy, acc[i]);
                    _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy + 8, _mm256_setzero_ps());
                }
            }
            continue;
        }
        for (int r = 0; r < kRows; r += 4) {
            __m256 a0[4], a1[4];
            const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
            for (int i = 0; i < 4; ++i) { a0[i] = b0; a1[i] = b1; }
            const float* x = X + (size_t)r * ldx;
            for (int k = 0; k < K; ++k) {
                const __m256 w0 = _mm256_loadu_ps(W + k * kPW), w1 = _mm256_loadu_ps(W + k * kPW + 8);
                for (int i = 0; i < 4; ++i) {
                    const __m256 xv = _mm256_broadcast_ss(x + i * ldx + k);
                    a0[i] = _mm256_fmadd_ps(xv, w0, a0[i]);
                    a1[i] = _mm256_fmadd_ps(xv, w1, a1[i]);
                }
            }
            for (int i = 0; i < 4; ++i) {
                if (RELU) { a0[i] = _mm256_max_ps(a0[i], _mm256_setzero_ps()); a1[i] = _mm256_max_ps(a1[i], _mm256_setzero_ps()); }
                _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy, a0[i]);
                _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy + 8, a1[i]);
            }
        }
#else
        for (int r = 0; r < kRows; ++r) {
            float acc[kPW];
            for (int c = 0; c < kPW; ++c) acc[c] = bias[c];
            const float* x = X + (size_t)r * ldx;
            for (int k = 0; k < K; ++k) {
                const float xv = x[k];
                const float* wk = W + (size_t)k * kPW;
#pragma omp simd  // the column loop: left alone, GCC vectorises the k loop with gathers (60x slower)
                for (int c = 0; c < kPW; ++c) acc[c] += xv * wk[c];
            }
            for (int c = 0; c < kPW; ++c) Yp[(size_t)r * ldy + c] = RELU ? (acc[c] > 0.f ? acc[c] : 0.f) : acc[c];
        }
#endif
    }
}

// INT8 activation ranges: a ReLU's output in [0, 127]; a signed input in [-63, 63], stored as
// q + 64 in [1, 127] (so every kernel reads u8 values; gemm_i8 takes 64 * colsum(w) off).
constexpr int kQmaxRelu = 127, kQmaxSigned = 63, kSignedOffset = 64;

#if defined(GT_SIMD_AVX2)
// 32 floats (a, b, c, d) -> q[0..31] = round(x inv) + offset. |round(x inv)| <= qmax <= 127 and
// offset + qmax <= 127, so the saturating packs never clip and the offset is added as int8.
inline void quant32(__m256 a, __m256 b, __m256 c, __m256 d, __m256 inv, int offset, int8_t* q)
{
    const __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(a, inv)), _mm256_cvtps_epi32(_mm256_mul_ps(b, inv)));
    const __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(c, inv)), _mm256_cvtps_epi32(_mm256_mul_ps(d, inv)));
    // packs work per 128-bit lane: the dwords hold a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)q, _mm256_add_epi8(v, _mm256_set1_epi8((char)offset)));
}

// Lane sums of 8 rows' vectors acc[i] (row i in lane i), each in sum64's order:
// ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)).
inline __m256 hsum8x8(const __m256* acc)
{
    __m256 t[4];  // t[i] = [a + a' of row i | of row i + 4], a the low half, a' the high half
    for (int i = 0; i < 4; ++i)
        t[i] = _mm256_add_ps(_mm256_permute2f128_ps(acc[i], acc[i + 4], 0x20), _mm256_permute2f128_ps(acc[i], acc[i + 4], 0x31));
    return _mm256_hadd_ps(_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3]));
}

// Lane maxima of 8 rows' vectors acc[i] (row i in lane i).
inline __m256 hmax8x8(const __m256* acc)
{
    __m256 t[4];
    for (int i = 0; i < 4; ++i)
        t[i] = _mm256_max_ps(_mm256_permute2f128_ps(acc[i], acc[i + 4], 0x20), _mm256_permute2f128_ps(acc[i], acc[i + 4], 0x31));
    const __m256 m01 = _mm256_max_ps(_mm256_unpacklo_ps(t[0], t[1]), _mm256_unpackhi_ps(t[0], t[1]));
    const __m256 m23 = _mm256_max_ps(_mm256_unpacklo_ps(t[2], t[3]), _mm256_unpackhi_ps(t[2], t[3]));
    return _mm256_max_ps(_mm256_shuffle_ps(m01, m23, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(m01, m23, _MM_SHUFFLE(3, 2, 3, 2)));
}

// 8 rows' |x| maxima vectors -> qinv[i] = qmax / amax (0 for an all-zero row), s[i] = amax / qmax.
inline void row_scales8(const __m256* amax_v, int qmax, float* qinv, float* s)
{
    const __m256 amax = hmax8x8(amax_v), q = _mm256_set1_ps((float)qmax);
    _mm256_store_ps(qinv, _mm256_and_ps(_mm256_div_ps(q, amax), _mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_GT_OQ)));
    _mm256_storeu_ps(s, _mm256_div_ps(amax, q));
}
#endif

// -- INT8: rows of X -> q [rows, K] = round(x / s) + offset and their scales s (x ~ s (q - offset)) ------
// qmax: kQmaxRelu with offset 0 for a ReLU's output, kQmaxSigned with kSignedOffset for a signed input.
void quant_rows(const float* X, int ldx, int K, int8_t* q, float* s, int qmax, int offset)
{
#if defined(GT_SIMD_AVX2)
    // eight rows at a time: their maxima reduced together (hmax8x8), then their quantisation
    const __m256 sign = _mm256_set1_ps(-0.f);
    alignas(32) float qinv[8];
    for (int r0 = 0; r0 < kRows; r0 += 8) {
        __m256 m[8];
        for (int i = 0; i < 8; ++i) {
            const float* x = X + (size_t)(r0 + i) * ldx;
            m[i] = _mm256_setzero_ps();
            for (int k = 0; k < K; k += 8) m[i] = _mm256_max_ps(m[i], _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
        }
        row_scales8(m, qmax, qinv, s + r0);
        for (int i = 0; i < 8; ++i) {
            const float* x = X + (size_t)(r0 + i) * ldx;
            const __m256 inv = _mm256_broadcast_ss(qinv + i);
            for (int k = 0; k < K; k += 32)
                quant32(_mm256_loadu_ps(x + k), _mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(x + k + 16), _mm256_loadu_ps(x + k + 24),
                        inv, offset, q + (size_t)(r0 + i) * K + k);
        }
    }
#else
    for (int r = 0; r < kRows; ++r) {
        const float* x = X + (size_t)r * ldx;
        int8_t* qr = q + (size_t)r * K;
#if defined(GT_SIMD_AVX512)
        __m512 m = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
        const float amax = _mm512_reduce_max_ps(m);
        const __m512 inv = _mm512_set1_ps(amax > 0.f ? (float)qmax / amax : 0.f);
        const __m512i offv = _mm512_set1_epi32(offset);
        for (int k = 0; k < K; k += 16) {  // round to nearest, |x inv| <= qmax
            const __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), inv)), offv);
            _mm_storeu_si128((__m128i*)(qr + k), _mm512_cvtsepi32_epi8(v));
        }
#else
        float amax = 0.f;
        for (int k = 0; k < K; ++k) {
            const float a = fabsf(x[k]);
            amax = a > amax ? a : amax;
        }
        const float inv = amax > 0.f ? (float)qmax / amax : 0.f;
        for (int k = 0; k < K; ++k) qr[k] = (int8_t)(lrintf(x[k] * inv) + offset);  // |x inv| <= qmax
#endif
        s[r] = amax / (float)qmax;
    }
#endif
}

#if defined(GT_DEFORM_AMX)
// AMX tiles, configured by amx_begin() for a whole tile() call, each 16 rows x 64 bytes:
//   tmm0, tmm1  C: int32 [16, 16], rows 0-15 / 16-31 of one 16-column panel
//   tmm2, tmm3  A: u8 [16, 64], the same rows' quantised inputs, one chunk of 64 k
//   tmm4        B: s8 [16, 64], the panel's weights for that chunk. The packed panel [K/4][16][4]
//               (4 consecutive k of one column per 32-bit lane) is the B tile's layout as it is.
static_assert(kRows == 32 && kPW == 16, "the AMX GEMM covers a tile's rows with two 16-row tiles");

struct alignas(64) TileConfig {  // ldtilecfg's 64 bytes, palette 1
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

// A constant in memory: GCC's ldtilecfg asm declares only 8 bytes read, so the stores that would fill a
// local configuration could be dropped as dead.
constexpr TileConfig kTileConfig = {1, 0, {0}, {64, 64, 64, 64, 64}, {16, 16, 16, 16, 16}};

inline void amx_begin() { _tile_loadconfig(&kTileConfig); }

inline void amx_end() { _tile_release(); }
#else
inline void amx_begin() {}
inline void amx_end() {}
#endif

#if defined(GT_SIMD_AVX512)
// One row's 16 int32 sums -> act(s ws (acc - corr) + b) -> y[0, 16).
template <bool RELU>
inline void dequant_row16(__m512i acc, __m512i corr, __m512 ws, float s, __m512 bias, float* y)
{
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr)), _mm512_mul_ps(ws, _mm512_set1_ps(s)), bias);
    if (RELU) v = _mm512_max_ps(v, _mm512_setzero_ps());
    _mm512_storeu_ps(y, v);
}
#endif

// Y[r, c] = act(s_r ws_c sum_k q[r, k] wq[k, c] + b_c); NONNEG: every q >= 0 (a ReLU's output).
template <bool RELU, bool NONNEG>
void gemm_i8(const int8_t* Q, const float* sx, const Lin& L, int p0, int p1, float* Y, int ldy)
{
    const int K = L.K, G = L.K / 4;
    for (int p = p0; p < p1; ++p) {
        const int8_t* W = L.wq + (size_t)p * G * 64;
        const float* bias = L.b + p * kPW;
        const float* ws = L.ws + p * kPW;
        float* Yp = Y + (p - p0) * kPW;
#if defined(GT_SIMD_AVX512)
        const __m512 wsv = _mm512_loadu_ps(ws), bv = _mm512_loadu_ps(bias);
        const __m512i corr = NONNEG ? _mm512_setzero_si512() : _mm512_loadu_si512((const void*)(L.wc + p * kPW));
#if defined(GT_DEFORM_AMX)
        if (K % 64 == 0) {  // every INT8 Linear of the network (K = 64 or 128)
            alignas(64) int32_t acc32[kRows * kPW];
            // GCC's tileloadd asm declares no memory input: the quantised rows' stores must land first
            __asm__ __volatile__("" ::: "memory");
            _tile_zero(0);
            _tile_zero(1);
            for (int kc = 0; kc < K; kc += 64) {
                _tile_loadd(2, Q + kc, K);
                _tile_loadd(3, Q + (size_t)16 * K + kc, K);
                _tile_loadd(4, W + (size_t)kc * kPW, 64);  // groups kc/4.. of 64 bytes
                _tile_dpbusd(0, 2, 4);
                _tile_dpbusd(1, 3, 4);
            }
            _tile_stored(0, acc32, 64);
            _tile_stored(1, acc32 + 16 * kPW, 64);
            for (int r = 0; r < kRows; ++r)
                dequant_row16<RELU>(_mm512_load_si512((const void*)(acc32 + r * kPW)), corr, wsv, sx[r], bv, Yp + (size_t)r * ldy);
            continue;
        }
#endif
        for (int r = 0; r < kRows; r += 8) {
            __m512i acc[8];
            for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_si512();
            const int8_t* q = Q + (size_t)r * K;
            for (int g = 0; g < G; ++g) {
                const __m512i w = _mm512_loadu_si512((const void*)(W + g * 64));
                for (int i = 0; i < 8; ++i) {
                    int32_t x4;
                    memcpy(&x4, q + (size_t)i * K + 4 * g, 4);
                    acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(x4), w);
                }
            }
            for (int i = 0; i < 8; ++i) dequant_row16<RELU>(acc[i], corr, wsv, sx[r + i], bv, Yp + (size_t)(r + i) * ldy);
        }
#elif defined(GT_SIMD_AVX2)
        const __m256 ws0 = _mm256_loadu_ps(ws), ws1 = _mm256_loadu_ps(ws + 8);
        const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
        const __m256i ones = _mm256_set1_epi16(1);
        // maddubs: u8 x (ReLU inputs in [0, 127]; signed ones in [-63, 63] as x + 64, with 64 * colsum(w)
        // taken off at the end, L.wc) times s8 w in [-63, 63]. Two k-groups' int16 pair sums add up to
        // at most 4 * 127 * 63 < 2^15, so one madd widens 8 products instead of 4.
        const __m256i c0 = NONNEG ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i*)(L.wc + p * kPW));
        const __m256i c1 = NONNEG ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i*)(L.wc + p * kPW + 8));
        constexpr int kR = 4;  // rows per step (some accumulators spill to L1; 2 rows without spills measured slower)
        for (int r = 0; r < kRows; r += kR) {
            __m256i a0[kR], a1[kR];
            for (int i = 0; i < kR; ++i) { a0[i] = _mm256_setzero_si256(); a1[i] = _mm256_setzero_si256(); }
            const int8_t* q = Q + (size_t)r * K;
            for (int g = 0; g < G; g += 2) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i*)(W + g * 64));
                const __m256i w1 = _mm256_loadu_si256((const __m256i*)(W + g * 64 + 32));
                const __m256i w2 = _mm256_loadu_si256((const __m256i*)(W + g * 64 + 64));
                const __m256i w3 = _mm256_loadu_si256((const __m256i*)(W + g * 64 + 96));
                for (int i = 0; i < kR; ++i) {
                    int32_t xa, xb;
                    memcpy(&xa, q + (size_t)i * K + 4 * g, 4);
                    memcpy(&xb, q + (size_t)i * K + 4 * g + 4, 4);
                    const __m256i va = _mm256_set1_epi32(xa), vb = _mm256_set1_epi32(xb);
                    const __m256i t0 = _mm256_add_epi16(_mm256_maddubs_epi16(va, w0), _mm256_maddubs_epi16(vb, w2));
                    const __m256i t1 = _mm256_add_epi16(_mm256_maddubs_epi16(va, w1), _mm256_maddubs_epi16(vb, w3));
                    a0[i] = _mm256_add_epi32(a0[i], _mm256_madd_epi16(t0, ones));
                    a1[i] = _mm256_add_epi32(a1[i], _mm256_madd_epi16(t1, ones));
                }
            }
            for (int i = 0; i < kR; ++i) {
                const __m256 s = _mm256_set1_ps(sx[r + i]);
                __m256 y0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(a0[i], c0)), _mm256_mul_ps(ws0, s), b0);
                __m256 y1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(a1[i], c1)), _mm256_mul_ps(ws1, s), b1);
                if (RELU) { y0 = _mm256_max_ps(y0, _mm256_setzero_ps()); y1 = _mm256_max_ps(y1, _mm256_setzero_ps()); }
                _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy, y0);
                _mm256_storeu_ps(Yp + (size_t)(r + i) * ldy + 8, y1);
            }
        }
#else
        for (int r = 0; r < kRows; ++r) {
            int32_t acc[kPW] = {0};
            const int8_t* q = Q + (size_t)r * K;
            for (int g = 0; g < G; ++g) {
                const int32_t x0 = q[4 * g], x1 = q[4 * g + 1], x2 = q[4 * g + 2], x3 = q[4 * g + 3];
                const int8_t* w = W + g * 64;
#pragma omp simd
                for (int c = 0; c < kPW; ++c)
                    acc[c] += x0 * w[c * 4] + x1 * w[c * 4 + 1] + x2 * w[c * 4 + 2] + x3 * w[c * 4 + 3];
            }
            for (int c = 0; c < kPW; ++c) {
                if (!NONNEG) acc[c] -= L.wc[p * kPW + c];
                const float y = (float)acc[c] * (ws[c] * sx[r]) + bias[c];
                Yp[(size_t)r * ldy + c] = RELU ? (y > 0.f ? y : 0.f) : y;
            }
        }
#endif
    }
}

// Linear over the tile's rows in the net's precision: panels [p0, p1) of L; q8 / s8 scratch for INT8.
template <bool RELU, bool NONNEG>
void linear(const Net& net, const float* X, int ldx, const Lin& L, int p0, int p1, float* Y, int ldy,
            int8_t* q8, float* s8, bool quantised = false)
{
    if (!net.int8) {
        gemm_f32<RELU>(X, ldx, L, p0, p1, Y, ldy);
        return;
    }
    if (!quantised) quant_rows(X, ldx, L.K, q8, s8, NONNEG ? kQmaxRelu : kQmaxSigned, NONNEG ? 0 : kSignedOffset);
    gemm_i8<RELU, NONNEG>(q8, s8, L, p0, p1, Y, ldy);
}

// exp(x) for x <= 0 (Cephes expf polynomial, ~1 ulp; clamps below -87): vectorisable, no libm call.
inline float exp_neg(float x)
{
    x = x < -87.f ? -87.f : x;
    const float t = x * 1.44269504088896341f;
    const int n = (int)(t - 0.5f);                 // round to nearest for t <= 0
    const float r = (x - (float)n * 0.693359375f) + (float)n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    const int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

// s [rows, 16] scores (columns 0..7: head h, token j at 4h + j) -> attention weights in place.
#if defined(GT_SIMD_AVX512) || defined(GT_SIMD_AVX2)
// 2^n e^r with r = x - n ln2 (ln2 in two parts) on 8 lanes, n given as a whole float: the Cephes
// polynomial shared by exp_neg8 and exp8, the same steps as exp_neg.
inline __m256 exp_reduced8(__m256 x, __m256 nf)
{
    const __m256 r = _mm256_add_ps(_mm256_sub_ps(x, _mm256_mul_ps(nf, _mm256_set1_ps(0.693359375f))),
                                   _mm256_mul_ps(nf, _mm256_set1_ps(2.12194440e-4f)));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// exp_neg on 8 lanes, the same steps.
inline __m256 exp_neg8(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
    const __m256i n = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f)));
    return exp_reduced8(x, _mm256_cvtepi32_ps(n));
}

void softmax_tile(float* s)
{
    // a head's 4 scores are one 128-bit lane: in-lane permutes give each lane its head's max and sum
    for (int r = 0; r < kRows; ++r) {
        float* row = s + r * kPW;
        const __m256 v = _mm256_loadu_ps(row);
        __m256 m = _mm256_max_ps(v, _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
        m = _mm256_max_ps(m, _mm256_permute_ps(m, _MM_SHUFFLE(1, 0, 3, 2)));
        const __m256 e = exp_neg8(_mm256_sub_ps(v, m));
        __m256 sum = _mm256_add_ps(e, _mm256_permute_ps(e, _MM_SHUFFLE(2, 3, 0, 1)));
        sum = _mm256_add_ps(sum, _mm256_permute_ps(sum, _MM_SHUFFLE(1, 0, 3, 2)));
        _mm256_storeu_ps(row, _mm256_div_ps(e, sum));
    }
}
#else
void softmax_tile(float* s)
{
    for (int r = 0; r < kRows; ++r) {
        float* row = s + r * kPW;
        const float a = row[0] > row[1] ? row[0] : row[1], b = row[2] > row[3] ? row[2] : row[3];
        const float c = row[4] > row[5] ? row[4] : row[5], d = row[6] > row[7] ? row[6] : row[7];
        const float m[2] = {a > b ? a : b, c > d ? c : d};
        float e[kAtt];
        for (int j = 0; j < kAtt; ++j) e[j] = exp_neg(row[j] - m[j / 4]);  // one 8-wide vector
        const float inv0 = 1.f / ((e[0] + e[1]) + (e[2] + e[3])), inv1 = 1.f / ((e[4] + e[5]) + (e[6] + e[7]));
        for (int j = 0; j < kAtt; ++j) row[j] = e[j] * (j < 4 ? inv0 : inv1);
    }
}
#endif

// Sum of v[0..63] in 8 interleaved partial sums (lane j adds v[j], v[j + 8], ...): the compiler
// keeps them in one vector register, where a single running float sum would stay scalar.
inline float sum64(const float* v)
{
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < kD; k += 8)
        for (int j = 0; j < 8; ++j) acc[j] += v[k + j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// y = LN(a + b) per row of 64 (biased variance, eps 1e-5, affine), rows [0, kRows).
// q8 non-null (INT8): also quantises y's rows for the next Linear, a signed input (quant_rows with
// kQmaxSigned, kSignedOffset) into q8 [rows, 64] and their scales s8, while each row is in registers.
#if defined(GT_SIMD_AVX2)
// Eight rows at a time, in passes over each row (a + b, - mean, * inv * w + beta, quantise) with the
// per-row sums reduced for all eight rows at once (hsum8x8): a row's reductions form one long
// dependency chain, so rows done one by one waited on it. The same operations in the same order as
// the generic loops below (sum64's lane sums, then (v - mean) * inv * w + beta): the same floats.
void add_norm(const float* a, const float* b, const float* w, const float* beta, float* y,
              int8_t* q8 = nullptr, float* s8 = nullptr)
{
    const __m256 sign = _mm256_set1_ps(-0.f);
    alignas(32) float mean[8], inv[8], qinv[8];
    for (int r0 = 0; r0 < kRows; r0 += 8) {
        __m256 acc[8];
        for (int i = 0; i < 8; ++i) {
            const int o = (r0 + i) * kD;
            acc[i] = _mm256_setzero_ps();
            for (int k = 0; k < kD; k += 8) {
                const __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + o + k), _mm256_loadu_ps(b + o + k));
                _mm256_storeu_ps(y + o + k, v);
                acc[i] = _mm256_add_ps(acc[i], v);
            }
        }
        _mm256_store_ps(mean, _mm256_mul_ps(hsum8x8(acc), _mm256_set1_ps(1.f / kD)));
        for (int i = 0; i < 8; ++i) {
            const int o = (r0 + i) * kD;
            const __m256 m = _mm256_broadcast_ss(mean + i);
            acc[i] = _mm256_setzero_ps();
            for (int k = 0; k < kD; k += 8) {
                const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y + o + k), m);
                _mm256_storeu_ps(y + o + k, d);
                acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(d, d));
            }
        }
        const __m256 var = _mm256_add_ps(_mm256_mul_ps(hsum8x8(acc), _mm256_set1_ps(1.f / kD)), _mm256_set1_ps(1e-5f));
        _mm256_store_ps(inv, _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_sqrt_ps(var)));  // IEEE, as 1.f / sqrtf
        for (int i = 0; i < 8; ++i) {
            const int o = (r0 + i) * kD;
            const __m256 s = _mm256_broadcast_ss(inv + i);
            acc[i] = _mm256_setzero_ps();
            for (int k = 0; k < kD; k += 8) {
                const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(y + o + k), s), _mm256_loadu_ps(w + k)),
                                               _mm256_loadu_ps(beta + k));
                _mm256_storeu_ps(y + o + k, v);
                acc[i] = _mm256_max_ps(acc[i], _mm256_andnot_ps(sign, v));
            }
        }
        if (q8 == nullptr) continue;
        row_scales8(acc, kQmaxSigned, qinv, s8 + r0);
        for (int i = 0; i < 8; ++i) {
            const int o = (r0 + i) * kD;
            const __m256 s = _mm256_broadcast_ss(qinv + i);
            quant32(_mm256_loadu_ps(y + o), _mm256_loadu_ps(y + o + 8), _mm256_loadu_ps(y + o + 16), _mm256_loadu_ps(y + o + 24),
                    s, kSignedOffset, q8 + o);
            quant32(_mm256_loadu_ps(y + o + 32), _mm256_loadu_ps(y + o + 40), _mm256_loadu_ps(y + o + 48), _mm256_loadu_ps(y + o + 56),
                    s, kSignedOffset, q8 + o + 32);
        }
    }
}
#else
void add_norm(const float* a, const float* b, const float* w, const float* beta, float* y,
              int8_t* q8 = nullptr, float* s8 = nullptr)
{
    for (int r = 0; r < kRows; ++r) {
        float v[kD], sq[kD];
        for (int k = 0; k < kD; ++k) v[k] = a[r * kD + k] + b[r * kD + k];
        const float mean = sum64(v) * (1.f / kD);
        for (int k = 0; k < kD; ++k) { v[k] -= mean; sq[k] = v[k] * v[k]; }
        const float inv = 1.f / sqrtf(sum64(sq) * (1.f / kD) + 1e-5f);
        for (int k = 0; k < kD; ++k) y[r * kD + k] = v[k] * inv * w[k] + beta[k];
    }
    if (q8 != nullptr) quant_rows(y, kD, kD, q8, s8, kQmaxSigned, kSignedOffset);
}
#endif

// A head with k <= kSmallHead outputs (mu, rot, scale, opacity): FP32 dot products of each row of f
// [rows, 128] with each weight row w [k, 128] (+ b) -> y [rows, ldy]. A 16-column panel would spend
// 4-16x the multiplies on zero padding, and INT8 would add a quantisation pass for a few outputs.
#if defined(GT_SIMD_AVX512) || defined(GT_SIMD_AVX2)
// KOUT (<= 4) outputs per row: one FMA accumulator each, then one hadd tree for all of them.
// RR rows at a time share each weight load; their independent FMA chains overlap (one row's chain
// of 16 dependent FMAs alone left the FMA units idle most of the time).
template <int KOUT, int RR>
void small_head_k(const float* f, const float* w, const float* b, float* y, int ldy)
{
    const __m128 bias = _mm_loadu_ps(b);  // b has Mp >= 16 entries (zero padded)
    for (int r = 0; r < kRows; r += RR) {
        __m256 acc[RR][4];
        for (int i = 0; i < RR; ++i)
            for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_setzero_ps();
        for (int k = 0; k < kHid; k += 8) {
            __m256 fv[RR];
            for (int i = 0; i < RR; ++i) fv[i] = _mm256_loadu_ps(f + (size_t)(r + i) * kHid + k);
            for (int c = 0; c < KOUT; ++c) {
                const __m256 wv = _mm256_loadu_ps(w + c * kHid + k);
                for (int i = 0; i < RR; ++i) acc[i][c] = _mm256_fmadd_ps(fv[i], wv, acc[i][c]);
            }
        }
        for (int i = 0; i < RR; ++i) {
            const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[i][0], acc[i][1]), _mm256_hadd_ps(acc[i][2], acc[i][3]));
            _mm_storeu_ps(y + (size_t)(r + i) * ldy,
                          _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)), bias));
        }
    }
}

void small_head(const float* f, const float* w, const float* b, int k, float* y, int ldy)
{
    switch (k) {  // y gets 4 columns; those past k are never read
    case 1: small_head_k<1, 8>(f, w, b, y, ldy); break;
    case 2: small_head_k<2, 4>(f, w, b, y, ldy); break;
    case 3: small_head_k<3, 2>(f, w, b, y, ldy); break;
    default: small_head_k<4, 2>(f, w, b, y, ldy); break;
    }
}
#else
void small_head(const float* f, const float* w, const float* b, int k, float* y, int ldy)
{
    for (int r = 0; r < kRows; ++r) {
        const float* fr = f + (size_t)r * kHid;
        for (int c = 0; c < k; ++c) {
            const float* wc = w + (size_t)c * kHid;
            float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  // 8 lanes: one vector register
            for (int i = 0; i < kHid; i += 8)
                for (int j = 0; j < 8; ++j) acc[j] += fr[i + j] * wc[i + j];
            y[(size_t)r * ldy + c] = (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + b[c];
        }
    }
}
#endif

// Output activations: none (offsets, or a head without one), exp (scale), sigmoid (opacity).
enum Act { kActNone = 0, kActExp = 1, kActSigmoid = 2 };

inline float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

#if defined(GT_SIMD_AVX512) || defined(GT_SIMD_AVX2)
// exp(x) on 8 lanes for any x (clamped to [-87, 88]: no overflow to inf), the Cephes steps of
// exp_neg8 with a round-to-nearest n; ~1 ulp against expf.
inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
    return exp_reduced8(x, _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <int ACT>
inline __m256 act8(__m256 v)
{
    if (ACT == kActExp) return exp8(v);
    if (ACT == kActSigmoid) return _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_add_ps(_mm256_set1_ps(1.f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    return v;
}

// out[i] = act(can[i] + v[i]) (can null: v[i]) for i < n, 8 at a time, the tail masked.
template <int ACT>
void emit_flat(const float* v, const float* can, int n, float* out)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(v + i);
        if (can != nullptr) a = _mm256_add_ps(a, _mm256_loadu_ps(can + i));
        _mm256_storeu_ps(out + i, act8<ACT>(a));
    }
    if (i == n) return;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 a = _mm256_maskload_ps(v + i, mask);
    if (can != nullptr) a = _mm256_add_ps(a, _mm256_maskload_ps(can + i, mask));
    _mm256_maskstore_ps(out + i, mask, act8<ACT>(a));
}

// Head outputs y [rows, ldy] (first k columns) -> out [valid, k] = act(can + y) (can null: the offsets).
// y is compacted in place to [valid, k] first (rows ascending: a row never lands on a later one's
// source), so the activation runs over one flat array, 8 lanes at a time, whatever k is.
void emit(float* y, int ldy, int k, const float* can, int act, int valid, float* out)
{
    if (k != ldy) {
        if (k <= 4) {  // 4-wide stores, each overwritten past k by the next row's
            for (int r = 0; r < valid - 1; ++r) _mm_storeu_ps(y + r * k, _mm_loadu_ps(y + r * ldy));
            memmove(y + (valid - 1) * k, y + (valid - 1) * ldy, sizeof(float) * k);
        } else {
            for (int r = 1; r < valid; ++r) memmove(y + r * k, y + r * ldy, sizeof(float) * k);
        }
    }
    const int n = valid * k;
    if (act == kActExp) emit_flat<kActExp>(y, can, n, out);
    else if (act == kActSigmoid) emit_flat<kActSigmoid>(y, can, n, out);
    else emit_flat<kActNone>(y, can, n, out);
}
#else
void emit(float* y, int ldy, int k, const float* can, int act, int valid, float* out)
{
    for (int r = 0; r < valid; ++r)
        for (int c = 0; c < k; ++c) {
            const float v = can != nullptr ? can[r * k + c] + y[r * ldy + c] : y[r * ldy + c];
            out[r * k + c] = act == kActExp ? expf(v) : act == kActSigmoid ? sigmoid(v) : v;
        }
}
#endif

void tile(const Job& job, int row0, float* scratch)
{
    const Net& net = *job.net;
    float* x = scratch;                   // [rows, 64] layer input / output
    float* h = x + kRows * kD;            // [rows, 64] after norm1
    float* o = h + kRows * kD;            // [rows, 64] attention / ffn output
    float* f = o + kRows * kD;            // [rows, 128] ffn / head hidden
    float* s = f + kRows * kHid;          // [rows, 16] scores
    float* y = s + kRows * kPW;           // [rows, max_mp] head outputs
    float* s8 = y + kRows * net.max_mp;   // [rows] INT8 row scales
    int8_t* q8 = (int8_t*)(s8 + kRows);   // [rows, 128 + 64] INT8 rows
    const int valid = job.N - row0 < kRows ? job.N - row0 : kRows;
    const float* queries = job.queries + (size_t)row0 * kD;

    float x_s8[kRows];
    int8_t* xq = q8 + kRows * kHid;  // [rows, 64]: the heads' INT8 input
    if (net.int8) amx_begin();
    for (int b = 0; b < job.B; ++b) {
        const float* in = queries;        // layer 0 reads the tile's queries (loaded once for all B frames)
        for (int l = 0; l < net.layers; ++l) {
            const AttMats& am = job.att[b * net.layers + l];
            const Layer& lay = net.layer[l];
            gemm_f32<false>(in, kD, am.score, 0, 1, s, kPW);   // S = X U + c
            softmax_tile(s);
            gemm_f32<false>(s, kPW, am.out, 0, kD / kPW, o, kD);  // O = A Z + bo (K = 8 columns of s)
            add_norm(in, o, lay.n1w, lay.n1b, h, net.int8 ? q8 : nullptr, s8);  // INT8: quantised for ffn1 too
            linear<true, false>(net, h, kD, lay.ffn1, 0, kHid / kPW, f, kHid, q8, s8, true);
            linear<false, true>(net, f, kHid, lay.ffn2, 0, kD / kPW, o, kD, q8, s8);
            const bool last = l == net.layers - 1;  // INT8: the heads' shared input, quantised once
            add_norm(h, o, lay.n2w, lay.n2b, x, net.int8 && last ? xq : nullptr, x_s8);
            in = x;
        }
        for (int hd = 0; hd < kHeads; ++hd) {
            const Lin& fc2 = net.fc2[hd];
            const int pp = kHid / kPW;  // panels of one head's 128 fc1 columns
            if (net.int8) gemm_i8<true, false>(xq, x_s8, net.fc1, hd * pp, (hd + 1) * pp, f, kHid);
            else gemm_f32<true>(x, kD, net.fc1, hd * pp, (hd + 1) * pp, f, kHid);
            const int k = net.out_dim[hd];
            if (net.fc2_rows[hd] != nullptr) small_head(f, net.fc2_rows[hd], fc2.b, k, y, fc2.Mp);
            else linear<false, true>(net, f, kHid, fc2, 0, fc2.Mp / kPW, y, fc2.Mp, q8, s8);
            float* out = job.out[hd] + ((size_t)b * job.N + row0) * k;
            if (!job.activate) emit(y, fc2.Mp, k, nullptr, kActNone, valid, out);
            else emit(y, fc2.Mp, k, job.canon[hd] + (size_t)row0 * k, hd == 2 ? kActExp : hd == 4 ? kActSigmoid : kActNone, valid, out);
        }
    }
    if (net.int8) amx_end();
}

}  // namespace
}  // namespace deform
}  // namespace gt
