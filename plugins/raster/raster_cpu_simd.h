// raster_cpu_simd.h: the per-tile blend kernels, written once against a small vector API (one
// lane per pixel; a 16-pixel tile row is kChunks vectors of kLanes) and compiled three times:
//   raster_cpu_avx512.cpp  GT_SIMD_AVX512   16 lanes (zmm, k-masks), FMA
//   raster_cpu_avx2.cpp    GT_SIMD_AVX2      8 lanes (ymm), FMA
//   raster_cpu_generic.cpp GT_SIMD_GENERIC  16 lanes of plain float loops (the compiler vectorises
//                                            them for the baseline target), no FMA
// Include from exactly those files, after defining one of the macros. Everything here has internal
// linkage: the files are compiled with different -m flags, so no inline code may be shared through
// the linker (check: `nm -C` of raster_cpu_avx512.o defines only gt::tile_kernels_avx512); the gt_*
// math of gt_raster_math.h is compiled here as static functions for the same reason.
//
// Arithmetic: sigma as gt_sigma, exp by a degree-5 polynomial (< 6e-7 relative); the AVX variants fuse
// multiply-adds, so their images differ from the generic variant by float rounding (~1e-7). Within
// a variant forward and backward run the same code, so their alpha decisions are identical.
#pragma once

#include <stdint.h>
#include <string.h>

#ifdef GT_HD
#error "raster_cpu_simd.h must include gt_raster_math.h first, with its own GT_HD"
#endif
// internal linkage for this variant's copies of the gt_* math (see above)
#define GT_HD static inline __attribute__((always_inline))
#include "gt_raster_math.h"
#include "raster_cpu_kernels.h"

#if (defined(GT_SIMD_AVX512) + defined(GT_SIMD_AVX2) + defined(GT_SIMD_GENERIC)) != 1
#error "define exactly one of GT_SIMD_AVX512, GT_SIMD_AVX2, GT_SIMD_GENERIC before including raster_cpu_simd.h"
#endif
#if defined(GT_SIMD_AVX512) || defined(GT_SIMD_AVX2)
#include <immintrin.h>
#endif
#if defined(GT_SIMD_AVX512) && defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags _mm512_undefined_ps() inside its own intrinsics with -Wall (a known false positive)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(__GNUC__)
#define GT_INLINE inline __attribute__((always_inline))
#define GT_PREFETCH(p) __builtin_prefetch(p)
#else
#define GT_INLINE inline
#define GT_PREFETCH(p) ((void)0)
#endif

namespace gt {
namespace {

///////////////////////////////
// Vector API: VF (kLanes floats), VM (lane mask)
///////////////////////////////

#if defined(GT_SIMD_AVX512)

constexpr int kLanes = 16;
struct VF { __m512 v; };
struct VM { __mmask16 m; };
GT_INLINE VF vset(float x) { return {_mm512_set1_ps(x)}; }
GT_INLINE VF vload(const float* p) { return {_mm512_loadu_ps(p)}; }
GT_INLINE void vstore(float* p, VF a) { _mm512_storeu_ps(p, a.v); }
GT_INLINE VF operator+(VF a, VF b) { return {_mm512_add_ps(a.v, b.v)}; }
GT_INLINE VF operator-(VF a, VF b) { return {_mm512_sub_ps(a.v, b.v)}; }
GT_INLINE VF operator*(VF a, VF b) { return {_mm512_mul_ps(a.v, b.v)}; }
GT_INLINE VF operator/(VF a, VF b) { return {_mm512_div_ps(a.v, b.v)}; }
GT_INLINE VF vmadd(VF a, VF b, VF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }    // a b + c
GT_INLINE VF vnmadd(VF a, VF b, VF c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a b
GT_INLINE VF vneg(VF a)
{
    return {_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(INT32_MIN)))};
}
// a < b ? a : b and a > b ? a : b (SSE semantics: the second operand when unordered)
GT_INLINE VF vmin(VF a, VF b) { return {_mm512_min_ps(a.v, b.v)}; }
GT_INLINE VF vmax(VF a, VF b) { return {_mm512_max_ps(a.v, b.v)}; }
GT_INLINE VF vfloor(VF a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
GT_INLINE VM operator<(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
GT_INLINE VM operator<=(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
GT_INLINE VM operator>(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
GT_INLINE VM operator>=(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ)}; }
GT_INLINE VF vselect(VM m, VF a, VF b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }  // m ? a : b
GT_INLINE VF vadd_if(VF acc, VM m, VF x) { return {_mm512_mask_add_ps(acc.v, m.m, acc.v, x.v)}; }
GT_INLINE VM vm_and(VM a, VM b) { return {(__mmask16)(a.m & b.m)}; }
GT_INLINE VM vm_or(VM a, VM b) { return {(__mmask16)(a.m | b.m)}; }
GT_INLINE VM vm_andnot(VM a, VM b) { return {(__mmask16)(a.m & ~b.m)}; }  // a & ~b
GT_INLINE bool vm_any(VM a) { return a.m != 0; }
GT_INLINE bool vm_all(VM a) { return a.m == 0xFFFF; }
GT_INLINE VM vm_from_bits(uint32_t bits) { return {(__mmask16)bits}; }
GT_INLINE VM vm_int_gt(const int32_t* p, int32_t i)  // lanes where p[l] > i
{
    return {_mm512_cmpgt_epi32_mask(_mm512_loadu_si512(p), _mm512_set1_epi32(i))};
}
GT_INLINE void vstore_int_if(int32_t* p, VM m, int32_t v) { _mm512_mask_storeu_epi32(p, m.m, _mm512_set1_epi32(v)); }
GT_INLINE VF vpow2(VF n)  // 2^n for integer-valued n in [-126, 127]
{
    __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(n.v), _mm512_set1_epi32(127));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
GT_INLINE float vsum(VF a) { return _mm512_reduce_add_ps(a.v); }
GT_INLINE VF vsqrt(VF a) { return {_mm512_sqrt_ps(a.v)}; }
GT_INLINE uint32_t vm_bits(VM a) { return a.m; }  // bit l = lane l

#elif defined(GT_SIMD_AVX2)

constexpr int kLanes = 8;
struct VF { __m256 v; };
struct VM { __m256 m; };  // all-ones lanes
GT_INLINE VF vset(float x) { return {_mm256_set1_ps(x)}; }
GT_INLINE VF vload(const float* p) { return {_mm256_loadu_ps(p)}; }
GT_INLINE void vstore(float* p, VF a) { _mm256_storeu_ps(p, a.v); }
GT_INLINE VF operator+(VF a, VF b) { return {_mm256_add_ps(a.v, b.v)}; }
GT_INLINE VF operator-(VF a, VF b) { return {_mm256_sub_ps(a.v, b.v)}; }
GT_INLINE VF operator*(VF a, VF b) { return {_mm256_mul_ps(a.v, b.v)}; }
GT_INLINE VF operator/(VF a, VF b) { return {_mm256_div_ps(a.v, b.v)}; }
GT_INLINE VF vmadd(VF a, VF b, VF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
GT_INLINE VF vnmadd(VF a, VF b, VF c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
GT_INLINE VF vneg(VF a) { return {_mm256_xor_ps(a.v, _mm256_set1_ps(-0.f))}; }
GT_INLINE VF vmin(VF a, VF b) { return {_mm256_min_ps(a.v, b.v)}; }
GT_INLINE VF vmax(VF a, VF b) { return {_mm256_max_ps(a.v, b.v)}; }
GT_INLINE VF vfloor(VF a) { return {_mm256_floor_ps(a.v)}; }
GT_INLINE VM operator<(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
GT_INLINE VM operator<=(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
GT_INLINE VM operator>(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
GT_INLINE VM operator>=(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ)}; }
GT_INLINE VF vselect(VM m, VF a, VF b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
GT_INLINE VF vadd_if(VF acc, VM m, VF x) { return {_mm256_add_ps(acc.v, _mm256_and_ps(x.v, m.m))}; }
GT_INLINE VM vm_and(VM a, VM b) { return {_mm256_and_ps(a.m, b.m)}; }
GT_INLINE VM vm_or(VM a, VM b) { return {_mm256_or_ps(a.m, b.m)}; }
GT_INLINE VM vm_andnot(VM a, VM b) { return {_mm256_andnot_ps(b.m, a.m)}; }
GT_INLINE bool vm_any(VM a) { return _mm256_movemask_ps(a.m) != 0; }
GT_INLINE bool vm_all(VM a) { return _mm256_movemask_ps(a.m) == 0xFF; }
GT_INLINE VM vm_from_bits(uint32_t bits)
{
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i b = _mm256_set1_epi32((int)(bits & 0xFF));
    return {_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, lane), lane))};
}
GT_INLINE VM vm_int_gt(const int32_t* p, int32_t i)
{
    return {_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i*)p), _mm256_set1_epi32(i)))};
}
GT_INLINE void vstore_int_if(int32_t* p, VM m, int32_t v)  // load + blend + store: vpmaskmovd is slow on AMD
{
    float* f = (float*)p;
    _mm256_storeu_ps(f, _mm256_blendv_ps(_mm256_loadu_ps(f), _mm256_castsi256_ps(_mm256_set1_epi32(v)), m.m));
}
GT_INLINE VF vpow2(VF n)
{
    const __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n.v), _mm256_set1_epi32(127));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
GT_INLINE float vsum(VF a)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
GT_INLINE VF vsqrt(VF a) { return {_mm256_sqrt_ps(a.v)}; }
GT_INLINE uint32_t vm_bits(VM a) { return (uint32_t)_mm256_movemask_ps(a.m); }

#else  // GT_SIMD_GENERIC

constexpr int kLanes = 16;  // a whole tile row, as AVX-512: CPUs without AVX2 test that layout here
struct VF { float v[kLanes]; };
struct VM { int32_t v[kLanes]; };  // 0 or -1
#define GT_LANES for (int l = 0; l < kLanes; ++l)
GT_INLINE VF vset(float x) { VF r; GT_LANES r.v[l] = x; return r; }
GT_INLINE VF vload(const float* p) { VF r; memcpy(r.v, p, sizeof(r.v)); return r; }
GT_INLINE void vstore(float* p, VF a) { memcpy(p, a.v, sizeof(a.v)); }
#define GT_GEN_BIN(op, expr) \
    GT_INLINE VF op(VF a, VF b) { VF r; GT_LANES r.v[l] = expr; return r; }
GT_GEN_BIN(operator+, a.v[l] + b.v[l])
GT_GEN_BIN(operator-, a.v[l] - b.v[l])
GT_GEN_BIN(operator*, a.v[l] * b.v[l])
GT_GEN_BIN(operator/, a.v[l] / b.v[l])
GT_GEN_BIN(vmin, a.v[l] < b.v[l] ? a.v[l] : b.v[l])
GT_GEN_BIN(vmax, a.v[l] > b.v[l] ? a.v[l] : b.v[l])
#undef GT_GEN_BIN
GT_INLINE VF vmadd(VF a, VF b, VF c) { return a * b + c; }   // two roundings (no FMA here)
GT_INLINE VF vnmadd(VF a, VF b, VF c) { return c - a * b; }
GT_INLINE VF vneg(VF a) { VF r; GT_LANES r.v[l] = -a.v[l]; return r; }
// floor for |x| < 2^31: truncate, then step down where that rounded up
GT_INLINE VF vfloor(VF a)
{
    VF r;
    GT_LANES {
        const float t = (float)(int32_t)a.v[l];
        r.v[l] = t > a.v[l] ? t - 1.f : t;
    }
    return r;
}
#define GT_GEN_CMP(op, cmp) \
    GT_INLINE VM op(VF a, VF b) { VM r; GT_LANES r.v[l] = (a.v[l] cmp b.v[l]) ? -1 : 0; return r; }
GT_GEN_CMP(operator<, <)
GT_GEN_CMP(operator<=, <=)
GT_GEN_CMP(operator>, >)
GT_GEN_CMP(operator>=, >=)
#undef GT_GEN_CMP
GT_INLINE VF vselect(VM m, VF a, VF b) { VF r; GT_LANES r.v[l] = m.v[l] ? a.v[l] : b.v[l]; return r; }
GT_INLINE VF vadd_if(VF acc, VM m, VF x) { VF r; GT_LANES r.v[l] = acc.v[l] + (m.v[l] ? x.v[l] : 0.f); return r; }
GT_INLINE VM vm_and(VM a, VM b) { VM r; GT_LANES r.v[l] = a.v[l] & b.v[l]; return r; }
GT_INLINE VM vm_or(VM a, VM b) { VM r; GT_LANES r.v[l] = a.v[l] | b.v[l]; return r; }
GT_INLINE VM vm_andnot(VM a, VM b) { VM r; GT_LANES r.v[l] = a.v[l] & ~b.v[l]; return r; }
GT_INLINE bool vm_any(VM a) { int32_t o = 0; GT_LANES o |= a.v[l]; return o != 0; }
GT_INLINE bool vm_all(VM a) { int32_t o = -1; GT_LANES o &= a.v[l]; return o != 0; }
GT_INLINE VM vm_from_bits(uint32_t bits) { VM r; GT_LANES r.v[l] = ((bits >> l) & 1u) ? -1 : 0; return r; }
GT_INLINE VM vm_int_gt(const int32_t* p, int32_t i) { VM r; GT_LANES r.v[l] = p[l] > i ? -1 : 0; return r; }
GT_INLINE void vstore_int_if(int32_t* p, VM m, int32_t v) { GT_LANES p[l] = m.v[l] ? v : p[l]; }
GT_INLINE VF vpow2(VF n)
{
    VF r;
    GT_LANES {
        const int32_t bits = ((int32_t)n.v[l] + 127) << 23;
        memcpy(&r.v[l], &bits, 4);
    }
    return r;
}
GT_INLINE float vsum(VF a) { float s = 0.f; GT_LANES s += a.v[l]; return s; }
GT_INLINE VF vsqrt(VF a) { VF r; GT_LANES r.v[l] = sqrtf(a.v[l]); return r; }
GT_INLINE uint32_t vm_bits(VM a) { uint32_t b = 0; GT_LANES b |= (uint32_t)(a.v[l] & 1) << l; return b; }
#undef GT_LANES

#endif

constexpr int kChunks = kTile / kLanes;  // vectors per tile row
static_assert(kTile == GT_TILE && kChunks * kLanes == kTile, "tile rows must split into whole vectors");

///////////////////////////////
// Shared math
///////////////////////////////

// exp(-sigma) for sigma >= 0, as 2^t with t = -sigma log2(e) = n + f (n integer, |f| <= 1/2) and a degree-5
// minimax polynomial for 2^f (relative error 1.9e-7 in float; with t's rounding, < 6e-7 overall).
// t is clamped to [-126, 0] first (NaN -> -126), so every lane, masked off or not, gets a finite
// result (the backward multiplies masked lanes by 0) and the generic variant's int conversions stay defined.
GT_INLINE VF exp_neg_sigma(VF sigma)
{
    VF t = sigma * vset(-1.44269504088896341f);
    t = vmax(t, vset(-126.f));
    t = vmin(t, vset(0.f));
    const VF n = vfloor(t + vset(0.5f));
    const VF f = t - n;
    VF p = vmadd(vset(1.326472731e-3f), f, vset(9.671512991e-3f));
    p = vmadd(p, f, vset(5.550733581e-2f));
    p = vmadd(p, f, vset(2.402224243e-1f));
    p = vmadd(p, f, vset(6.931470037e-1f));
    p = vmadd(p, f, vset(1.f));
    return p * vpow2(n);
}

// Pixels [lo, hi] (tile-relative, clamped to [0, n - 1]) of one axis whose centres may lie within
// m +- ext of a splat (its alpha-threshold box), with a 1 px margin; t0 is the tile's first pixel.
GT_INLINE void axis_range(float m, float ext, int t0, int n, int& lo, int& hi)
{
    float a = ceilf(m - 0.5f - ext) - 1.f - (float)t0, b = floorf(m - 0.5f + ext) + 1.f - (float)t0;
    // clamped before the int cast (ext may be huge); NaN -> the whole tile
    a = a > 0.f ? a : 0.f;
    a = a < (float)n ? a : (float)n;
    b = b < (float)(n - 1) ? b : (float)(n - 1);
    b = b > -1.f ? b : -1.f;
    lo = (int)a;
    hi = (int)b;
}

// x + 0.5 of the kLanes pixel centres starting at pixel x0.
GT_INLINE VF pixel_centres(int x0)
{
    float c[kLanes];
    for (int l = 0; l < kLanes; ++l) c[l] = (float)(x0 + l) + 0.5f;
    return vload(c);
}

// Lanes of chunk c that lie right of a tile of width tw (treated as finished from the start).
GT_INLINE uint32_t outside_bits(int c, int tw)
{
    uint32_t bits = 0;
    for (int l = 0; l < kLanes; ++l)
        if (c * kLanes + l >= tw) bits |= 1u << l;
    return bits;
}

GT_INLINE void prefetch_splat(const Splat* s)
{
    GT_PREFETCH((const char*)s);
    GT_PREFETCH((const char*)s + sizeof(Splat) - 1);
}

constexpr int kPrefetch = 8;  // list entries ahead

GT_INLINE int ctz32(uint32_t x)  // index of the lowest set bit, x != 0
{
#if defined(__GNUC__)
    return __builtin_ctz(x);
#else
    int n = 0;
    while (!(x & 1u)) { x >>= 1; ++n; }
    return n;
#endif
}

///////////////////////////////
// Projection: one Gaussian per loop iteration, vectorised by the compiler (gt_project_ewa is branch-free
// and has no fminf / fmaxf; -fno-trapping-math lets both sides of its selects be computed). Outputs are
// planar: the interleaved [N, K, 3] SH reads and Splat writes would keep the loop scalar.
///////////////////////////////

constexpr int kBatch = 64;  // Gaussians per batch of the projection loops

// Gaussians [g0, g0 + n) of in as planes [10][kBatch]: mean 3, quat 4, scale 3 (unit-stride vector loads).
GT_INLINE void load_planes(const RasterInputs& in, int g0, int n, float (*planes)[kBatch])
{
    for (int j = 0; j < n; ++j) {
        const int g = g0 + j;
        for (int k = 0; k < 3; ++k) planes[k][j] = in.means[g * 3 + k];
        for (int k = 0; k < 4; ++k) planes[3 + k][j] = in.quats[g * 4 + k];
        for (int k = 0; k < 3; ++k) planes[7 + k][j] = in.scales[g * 3 + k];
    }
}

void project(const RasterInputs& in, int begin, int end, float* proj, float* radius, float* depth)
{
    float vm[16];  // a local copy: the compiler keeps it out of the loop
    for (int k = 0; k < 16; ++k) vm[k] = in.viewmat[k];
    const float fx = in.K[0], fy = in.K[4], cx = in.K[2], cy = in.K[5];
    const int N = in.N, W = in.width, H = in.height;
    alignas(64) float in_soa[10][kBatch];
    for (int g0 = begin; g0 < end; g0 += kBatch) {
        const int n = end - g0 < kBatch ? end - g0 : kBatch;
        load_planes(in, g0, n, in_soa);
        // one pointer per plane, indexed by j alone: with -fwrapv (Python's default flags) the compiler
        // cannot treat an int index like N + j as affine, and then keeps the loop scalar
        const float* op = in.opacities + g0;
        float* out[5];
        for (int k = 0; k < 5; ++k) out[k] = proj + (int64_t)k * N + g0;
        float *out_mx = out[0], *out_my = out[1], *out_a = out[2], *out_b = out[3], *out_c = out[4];
        float* out_r = radius + g0;
        float* out_z = depth + g0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep  // the outputs alias no input
#endif
        for (int j = 0; j < n; ++j) {
            const float mean[3] = {in_soa[0][j], in_soa[1][j], in_soa[2][j]};
            const float quat[4] = {in_soa[3][j], in_soa[4][j], in_soa[5][j], in_soa[6][j]};
            const float scale[3] = {in_soa[7][j], in_soa[8][j], in_soa[9][j]};
            float m2[2], conic[3], z, r;
            bool ok = gt_project_ewa(mean, quat, scale, vm, fx, fy, cx, cy, W, H, m2, conic, &z, &r);
            ok = ok & (op[j] * 255.f >= 1.f);  // alpha < 1/255 at every pixel: never contributes
            out_mx[j] = m2[0];
            out_my[j] = m2[1];
            out_a[j] = conic[0];
            out_b[j] = conic[1];
            out_c[j] = conic[2];
            out_r[j] = ok ? r : 0.f;
            out_z[j] = z;
        }
    }
}

// SH colour, batched the same way: the [K, 3] coefficient rows are transposed into planes.
template <int kDeg>
void colour_range(const RasterInputs& in, const float* campos, int begin, int end, float* rgb)
{
    constexpr int KB = (kDeg + 1) * (kDeg + 1);
    const int64_t N = in.N;
    alignas(64) float coef[KB * 3][kBatch];
    alignas(64) float dirs[3][kBatch];
    alignas(64) float col[3][kBatch];
    for (int g0 = begin; g0 < end; g0 += kBatch) {
        const int n = end - g0 < kBatch ? end - g0 : kBatch;
        for (int j = 0; j < n; ++j) {
            const int64_t g = g0 + j;
            for (int k = 0; k < 3; ++k) dirs[k][j] = in.means[g * 3 + k] - campos[k];
            for (int k = 0; k < KB * 3; ++k) coef[k][j] = in.colors[g * KB * 3 + k];
        }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
        for (int j = 0; j < n; ++j) {
            const float dir[3] = {dirs[0][j], dirs[1][j], dirs[2][j]};
            float c[KB * 3], out[3];
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 48  // straight-line code: a loop left in the body keeps it scalar
#endif
            for (int k = 0; k < KB * 3; ++k) c[k] = coef[k][j];
            gt_sh_to_color(kDeg, dir, c, out);
            for (int k = 0; k < 3; ++k) col[k][j] = out[k];
        }
        for (int k = 0; k < 3; ++k)
            for (int j = 0; j < n; ++j) rgb[k * N + g0 + j] = col[k][j];
    }
}

void colour(const RasterInputs& in, const float* campos, int begin, int end, float* rgb)
{
    switch (in.sh_degree) {
    case 0: colour_range<0>(in, campos, begin, end, rgb); break;
    case 1: colour_range<1>(in, campos, begin, end, rgb); break;
    case 2: colour_range<2>(in, campos, begin, end, rgb); break;
    default: colour_range<3>(in, campos, begin, end, rgb); break;
    }
}

// The backward of project(), batched the same way.
void project_vjp(const RasterInputs& in, int begin, int end, const float* radius, const float* aux, float* v_means,
                 float* v_quats, float* v_scales)
{
    float vm[16];
    for (int k = 0; k < 16; ++k) vm[k] = in.viewmat[k];
    const float fx = in.K[0], fy = in.K[4], cx = in.K[2], cy = in.K[5];
    const int W = in.width, H = in.height;
    alignas(64) float src[18][kBatch];  // planes: mean 3, quat 4, scale 3, conic 3, v_mean2d 2, v_conic 3
    alignas(64) float dst[10][kBatch];  // planes: v_mean 3, v_quat 4, v_scale 3
    for (int g0 = begin; g0 < end; g0 += kBatch) {
        const int n = end - g0 < kBatch ? end - g0 : kBatch;
        load_planes(in, g0, n, src);
        for (int j = 0; j < n; ++j)
            for (int k = 0; k < 8; ++k) src[10 + k][j] = aux[(int64_t)(g0 + j) * 8 + k];
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
        for (int j = 0; j < n; ++j) {
            const float mean[3] = {src[0][j], src[1][j], src[2][j]};
            const float quat[4] = {src[3][j], src[4][j], src[5][j], src[6][j]};
            const float scale[3] = {src[7][j], src[8][j], src[9][j]};
            const float conic[3] = {src[10][j], src[11][j], src[12][j]};
            const float v_mean2d[2] = {src[13][j], src[14][j]};
            const float v_conic[3] = {src[15][j], src[16][j], src[17][j]};
            float v_mean[3] = {0.f, 0.f, 0.f}, v_quat[4] = {0.f, 0.f, 0.f, 0.f}, v_scale[3] = {0.f, 0.f, 0.f};
            gt_project_ewa_vjp(mean, quat, scale, vm, fx, fy, cx, cy, W, H, conic, v_mean2d, v_conic, v_mean, v_quat,
                               v_scale);
            for (int k = 0; k < 3; ++k) dst[k][j] = v_mean[k];
            for (int k = 0; k < 4; ++k) dst[3 + k][j] = v_quat[k];
            for (int k = 0; k < 3; ++k) dst[7 + k][j] = v_scale[k];
        }
        for (int j = 0; j < n; ++j) {
            const int g = g0 + j;
            if (!(radius[g] > 0.f)) continue;  // culled: its lanes computed garbage
            for (int k = 0; k < 3; ++k) v_means[g * 3 + k] += dst[k][j];
            for (int k = 0; k < 4; ++k) v_quats[g * 4 + k] += dst[3 + k][j];
            for (int k = 0; k < 3; ++k) v_scales[g * 3 + k] += dst[7 + k][j];
        }
    }
}

///////////////////////////////
// Forward: front to back, Gaussian-major over the tile's row chunks, per-lane early stop
///////////////////////////////

constexpr int kRowGroups = kTile / kLanes;  // row vectors per tile column (one lane per row)
constexpr uint32_t kAllRows = (1u << kTile) - 1u;

// Rows of a tile to visit, per chunk column: bit r of rows[c] = chunk c of row r.
struct ChunkRows {
    uint32_t rows[kChunks];
};

GT_INLINE uint32_t row_range(int r0, int r1) { return ((2u << r1) - (1u << r0)) & kAllRows; }  // rows [r0, r1]

// Chunks of rows [ylo, yhi] that splat s may reach: where the row crosses its alpha-threshold ellipse
// sigma <= smax, one vector of kLanes rows at a time. On row dy the ellipse spans the pixel centres
// mx + b dy / a +- sqrt(2 a smax - det dy^2) / a (det = a c - b^2), widened by a margin for float
// rounding; a chunk whose centres miss that span cannot pass the alpha test. Ellipses too thin
// for that rounding bound fall back to their alpha-threshold box. The exact per-lane test stays in
// the blend, so this only decides which chunks it visits.
GT_INLINE ChunkRows ellipse_chunks(const Splat& s, int tx0, int tw, int ylo, int yhi, const VF* py)
{
    ChunkRows out;
    const uint32_t rows = row_range(ylo, yhi);
    const double det = (double)s.a * s.c - (double)s.b * s.b;  // exact products, one rounding
    if (!(s.a > 0.f) || !(det > 1e-6 * (double)s.a * s.c)) {
        int xlo, xhi;
        axis_range(s.mx, s.ext_x, tx0, tw, xlo, xhi);
        for (int c = 0; c < kChunks; ++c)
            out.rows[c] = xlo <= xhi && xlo / kLanes <= c && c <= xhi / kLanes ? rows : 0u;
        return out;
    }
    const float inv_a = 1.f / s.a;
    float margin = 0.01f + 2e-3f * s.ext_x;  // rounding of the span: ~4e-4 of the half extent
    margin = margin < 64.f ? margin : 64.f;
    const VF vdet = vset((float)det), two_as = vset(2.f * s.a * s.smax), slope = vset(s.b * inv_a);
    const VF vinv_a = vset(inv_a), mx = vset(s.mx - (float)tx0), vmargin = vset(margin), zero = vset(0.f);
    const VF my = vset(s.my);
    for (int c = 0; c < kChunks; ++c) out.rows[c] = 0u;
    for (int g = 0; g < kRowGroups; ++g) {
        const VF dy = my - py[g];
        const VF q = vnmadd(vdet * dy, dy, two_as);
        const VF h = vsqrt(vmax(q, zero)) * vinv_a + vmargin;
        const VF ctr = vmadd(slope, dy, mx);
        const VF lo = ctr - h, hi = ctr + h;
        const VM row = q >= zero;
        for (int c = 0; c < kChunks; ++c) {  // tile-relative pixel centres of chunk c: c kLanes + 0.5 ...
            const VM hit = vm_and(row, vm_and(hi >= vset((float)(c * kLanes) + 0.5f),
                                              lo <= vset((float)(c * kLanes + kLanes) - 0.5f)));
            out.rows[c] |= vm_bits(hit) << (g * kLanes);
        }
    }
    for (int c = 0; c < kChunks; ++c) out.rows[c] &= rows;
    return out;
}

// The chunks splat s may reach (none if its alpha-threshold box misses the tile's rows).
GT_INLINE ChunkRows splat_chunks(const Splat& s, int tx0, int ty0, int tw, int th, const VF* py_groups)
{
    int ylo, yhi;
    axis_range(s.my, s.ext_y, ty0, th, ylo, yhi);
    if (ylo <= yhi) return ellipse_chunks(s, tx0, tw, ylo, yhi, py_groups);
    ChunkRows none;
    for (int c = 0; c < kChunks; ++c) none.rows[c] = 0u;
    return none;
}

// kLast: also record each pixel's last contributor (training's backward needs it; playback does not,
// and the masked store costs ~7 % of the blend).
template <bool kLast>
void forward_tile_impl(const Splat* splats, const int32_t* ids, int32_t count, int tx0, int ty0, int tw, int th,
                       float* T, float* C, int32_t* last)
{
    const VF one = vset(1.f), zero = vset(0.f);
    const uint32_t all = (1u << kLanes) - 1u;
    VM done[kChunks][kTile];
    uint32_t done_rows[kChunks];  // per chunk column: rows whose chunk has every lane done
    for (int c = 0; c < kChunks; ++c) done_rows[c] = 0u;
    for (int r = 0; r < kTile; ++r)
        for (int c = 0; c < kChunks; ++c) {
            const int p = r * kTile + c * kLanes;
            vstore(T + p, one);
            vstore(C + p, zero);
            vstore(C + kTilePix + p, zero);
            vstore(C + 2 * kTilePix + p, zero);
            const uint32_t bits = r < th ? outside_bits(c, tw) : all;
            done[c][r] = vm_from_bits(bits);
            if (bits == all) done_rows[c] |= 1u << r;
        }
    if (kLast) memset(last, 0, sizeof(int32_t) * kTilePix);
    auto all_done = [&] {
        for (int c = 0; c < kChunks; ++c)
            if (done_rows[c] != kAllRows) return false;
        return true;
    };
    VF px[kChunks];
    for (int c = 0; c < kChunks; ++c) px[c] = pixel_centres(tx0 + c * kLanes);
    float py[kTile];  // row centres y + 0.5
    for (int r = 0; r < kTile; ++r) py[r] = (float)(ty0 + r) + 0.5f;
    VF py_groups[kRowGroups];
    for (int g = 0; g < kRowGroups; ++g) py_groups[g] = vload(py + g * kLanes);
    const VF half = vset(0.5f), max_alpha = vset(GT_MAX_ALPHA), thresh = vset(GT_ALPHA_THRESHOLD);
    const VF t_thresh = vset(GT_T_THRESHOLD);
    // the chunks of splat i + 1 are found while splat i blends: the blend loop's trip count is then
    // known early, which hides most of its exit mispredict
    if (count == 0) return;
    ChunkRows next = splat_chunks(splats[ids[0]], tx0, ty0, tw, th, py_groups);
    for (int32_t i = 0; i < count && !all_done(); ++i) {
        if (i + kPrefetch < count) prefetch_splat(splats + ids[i + kPrefetch]);
        const Splat& s = splats[ids[i]];
        const ChunkRows cur = next;
        if (i + 1 < count) next = splat_chunks(splats[ids[i + 1]], tx0, ty0, tw, th, py_groups);
        const VF op = vset(s.opacity);
        const VF rgb0 = vset(s.rgb[0]), rgb1 = vset(s.rgb[1]), rgb2 = vset(s.rgb[2]);
        for (int c = 0; c < kChunks; ++c) {
            uint32_t rows = cur.rows[c] & ~done_rows[c];
            if (rows == 0) continue;
            // sigma = 0.5 (a dx dx + c dy dy) + b dx dy, grouped as gt_sigma (b dx dy fused on FMA targets)
            const VF dx = vset(s.mx) - px[c];
            const VF adx2 = vset(s.a) * dx * dx, bdx = vset(s.b) * dx;
            float* Tc = T + c * kLanes;
            float* Cc = C + c * kLanes;
            while (rows != 0) {
                const int r = ctz32(rows);
                rows &= rows - 1;
                const float dy = s.my - py[r];
                const VF sig = vmadd(bdx, vset(dy), half * (adx2 + vset(s.c * dy * dy)));
                const VF alpha = vmin(op * exp_neg_sigma(sig), max_alpha);
                VM m = vm_andnot(vm_and(sig >= zero, alpha >= thresh), done[c][r]);
                const int p = r * kTile;
                const VF t = vload(Tc + p), next_t = t * (one - alpha);
                const VM sat = vm_and(m, next_t <= t_thresh);  // saturated: exclusive of this Gaussian
                if (vm_any(sat)) {
                    done[c][r] = vm_or(done[c][r], sat);
                    m = vm_andnot(m, sat);
                    if (vm_all(done[c][r])) done_rows[c] |= 1u << r;
                }
                const VF vis = vselect(m, alpha * t, zero);
                vstore(Cc + p, vmadd(rgb0, vis, vload(Cc + p)));
                vstore(Cc + kTilePix + p, vmadd(rgb1, vis, vload(Cc + kTilePix + p)));
                vstore(Cc + 2 * kTilePix + p, vmadd(rgb2, vis, vload(Cc + 2 * kTilePix + p)));
                vstore(Tc + p, vselect(m, next_t, t));
                if (kLast) vstore_int_if(last + c * kLanes + p, m, i + 1);
            }
        }
    }
}

// last == nullptr: image only.
void forward_tile(const Splat* splats, const int32_t* ids, int32_t count, int tx0, int ty0, int tw, int th, float* T,
                  float* C, int32_t* last)
{
    if (last != nullptr)
        forward_tile_impl<true>(splats, ids, count, tx0, ty0, tw, th, T, C, last);
    else
        forward_tile_impl<false>(splats, ids, count, tx0, ty0, tw, th, T, C, last);
}

///////////////////////////////
// Backward: back to front, Gaussian-major over the tile's row chunks, lane sums per Gaussian
///////////////////////////////

void backward_tile(const Splat* splats, const int32_t* ids, int tx0, int ty0, int tw, int th, const TileBwdIn& in,
                   float* grads)
{
    alignas(64) float T[kTilePix], acc[3][kTilePix];
    alignas(64) int32_t chunk_last[kChunks][kTile];  // max of last over each chunk (0 outside the image)
    int32_t max_last = 0;
    for (int c = 0; c < kChunks; ++c)
        for (int r = 0; r < kTile; ++r) {
            int32_t m = 0;
            for (int l = 0; l < kLanes; ++l) {
                const int32_t v = in.last[r * kTile + c * kLanes + l];
                m = v > m ? v : m;
            }
            chunk_last[c][r] = r < th ? m : 0;
            max_last = chunk_last[c][r] > max_last ? chunk_last[c][r] : max_last;
        }
    memcpy(T, in.T_fin, sizeof(T));
    memset(acc, 0, sizeof(acc));
    VF px[kChunks];
    for (int c = 0; c < kChunks; ++c) px[c] = pixel_centres(tx0 + c * kLanes);
    float py[kTile];  // row centres y + 0.5
    for (int r = 0; r < kTile; ++r) py[r] = (float)(ty0 + r) + 0.5f;
    VF py_groups[kRowGroups];
    for (int g = 0; g < kRowGroups; ++g) py_groups[g] = vload(py + g * kLanes);
    const VF one = vset(1.f), zero = vset(0.f), half = vset(0.5f);
    const VF max_alpha = vset(GT_MAX_ALPHA), thresh = vset(GT_ALPHA_THRESHOLD), min_oma = vset(GT_MIN_ONE_MINUS_ALPHA);
    if (max_last == 0) return;
    // as the forward: the chunks of the next splat (i - 1) are found while splat i runs
    ChunkRows next = splat_chunks(splats[ids[max_last - 1]], tx0, ty0, tw, th, py_groups);
    for (int32_t i = max_last - 1; i >= 0; --i) {
        if (i >= kPrefetch) prefetch_splat(splats + ids[i - kPrefetch]);
        const int32_t g = ids[i];
        const Splat& s = splats[g];
        const ChunkRows cur = next;
        if (i > 0) next = splat_chunks(splats[ids[i - 1]], tx0, ty0, tw, th, py_groups);
        const VF op = vset(s.opacity), nop = vset(-s.opacity);
        const VF rgb0 = vset(s.rgb[0]), rgb1 = vset(s.rgb[1]), rgb2 = vset(s.rgb[2]);
        VF v_m0 = zero, v_m1 = zero, v_c0 = zero, v_c1 = zero, v_c2 = zero, v_op = zero;
        VF v_r0 = zero, v_r1 = zero, v_r2 = zero;
        bool touched = false;
        for (int c = 0; c < kChunks; ++c) {
            uint32_t rows = cur.rows[c];
            if (rows == 0) continue;
            uint32_t live = 0;  // rows of this column with a lane in front of its pixel's last contributor
            for (int q = 0; q < kRowGroups; ++q) live |= vm_bits(vm_int_gt(chunk_last[c] + q * kLanes, i)) << (q * kLanes);
            rows &= live;
            if (rows == 0) continue;
            const VF dx = vset(s.mx) - px[c];
            const VF adx = vset(s.a) * dx, adx2 = adx * dx, bdx = vset(s.b) * dx;
            while (rows != 0) {
                const int r = ctz32(rows);
                rows &= rows - 1;
                const float dy = s.my - py[r];
                const VF vdy = vset(dy), bdy = vset(s.b * dy), cdy = vset(s.c * dy);
                const int p = r * kTile + c * kLanes;
                const VF sig = vmadd(bdx, vdy, half * (adx2 + vset(s.c * dy * dy)));  // as the forward
                const VF vis = exp_neg_sigma(sig);  // same exp and alpha as the forward
                const VF raw_alpha = op * vis;
                const VF alpha = vmin(raw_alpha, max_alpha);
                const VM m = vm_and(vm_and(sig >= zero, alpha >= thresh), vm_int_gt(in.last + p, i));
                touched = touched || vm_any(m);
                // T before this Gaussian, from T after it
                const VF ra = one / vmax(min_oma, one - alpha);
                const VF t0 = vload(T + p);
                const VF t = vselect(m, t0 * ra, t0);
                vstore(T + p, t);
                const VF fac = alpha * t;
                const VF fac_m = vselect(m, fac, zero);
                const VF vc0 = vload(in.vc[0] + p), vc1 = vload(in.vc[1] + p), vc2 = vload(in.vc[2] + p);
                const VF a0 = vload(acc[0] + p), a1 = vload(acc[1] + p), a2 = vload(acc[2] + p);
                v_r0 = vmadd(fac_m, vc0, v_r0);
                v_r1 = vmadd(fac_m, vc1, v_r1);
                v_r2 = vmadd(fac_m, vc2, v_r2);
                VF v_alpha = vnmadd(a0, ra, rgb0 * t) * vc0;
                v_alpha = vmadd(vnmadd(a1, ra, rgb1 * t), vc1, v_alpha);
                v_alpha = vmadd(vnmadd(a2, ra, rgb2 * t), vc2, v_alpha);
                // through the background's weight T_final
                v_alpha = vmadd(vneg(vload(in.T_fin + p)) * ra, vload(in.v_bg_dot + p), v_alpha);
                // gt_alpha_vjp: no gradient where alpha was clamped at 0.99
                const VM mg = vm_and(m, raw_alpha <= max_alpha);
                const VF v_alpha_m = vselect(mg, v_alpha, zero);
                const VF v_sigma = nop * vis * v_alpha_m;
                const VF hvs = half * v_sigma;
                v_c0 = vmadd(hvs * dx, dx, v_c0);
                v_c1 = vmadd(v_sigma * dx, vdy, v_c1);
                v_c2 = vmadd(hvs * vdy, vdy, v_c2);
                v_m0 = vmadd(v_sigma, adx + bdy, v_m0);
                v_m1 = vmadd(v_sigma, bdx + cdy, v_m1);
                v_op = vmadd(vis, v_alpha_m, v_op);
                vstore(acc[0] + p, vmadd(rgb0, fac_m, a0));
                vstore(acc[1] + p, vmadd(rgb1, fac_m, a1));
                vstore(acc[2] + p, vmadd(rgb2, fac_m, a2));
            }
        }
        if (touched) {
            float* o = grads + (int64_t)g * kSplatGrads;
            o[0] += vsum(v_m0); o[1] += vsum(v_m1);
            o[2] += vsum(v_c0); o[3] += vsum(v_c1); o[4] += vsum(v_c2);
            o[5] += vsum(v_op);
            o[6] += vsum(v_r0); o[7] += vsum(v_r1); o[8] += vsum(v_r2);
        }
    }
}

}  // namespace
}  // namespace gt
