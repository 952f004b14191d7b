// simde_avx512.h: the AVX-512 intrinsics (F, BW, DQ, VL, VNNI) on any x86-64 CPU with AVX2, by SIMDe
// (Debian's libsimde-dev: portable implementations, here over AVX2). tests/isa_emu force-includes it
// (g++ -include) into the plugins' *_avx512.cpp, so their AVX-512 kernels run on CPUs without AVX-512.
#pragma once

#include <immintrin.h>  // the native header first: the aliases below would rename its types

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

// Intrinsics the kernels use that SIMDe 0.7.4 lacks or gets wrong (its roundscale rounds to multiples of
// 1/2 for imm 0x09, floor; its aligned loads and stores take any address), on the two 256-bit halves
// (the reductions in the order of GCC's avx512fintrin.h, so that they round as the native ones do).
namespace gt_isa_emu {

inline simde__m512 join(simde__m256 lo, simde__m256 hi)
{
    simde__m512_private r;
    r.m256[0] = lo;
    r.m256[1] = hi;
    return simde__m512_from_private(r);
}

inline simde__m512i join(simde__m256i lo, simde__m256i hi)
{
    simde__m512i_private r;
    r.m256i[0] = lo;
    r.m256i[1] = hi;
    return simde__m512i_from_private(r);
}

inline simde__m256 half(simde__m512 a, int i) { return simde__m512_to_private(a).m256[i]; }
inline simde__m256i half(simde__m512i a, int i) { return simde__m512i_to_private(a).m256i[i]; }

inline simde__m512 cvtepi32_ps(simde__m512i a) { return join(_mm256_cvtepi32_ps(half(a, 0)), _mm256_cvtepi32_ps(half(a, 1))); }
inline simde__m512i cvtps_epi32(simde__m512 a) { return join(_mm256_cvtps_epi32(half(a, 0)), _mm256_cvtps_epi32(half(a, 1))); }
inline simde__m512i cvttps_epi32(simde__m512 a) { return join(_mm256_cvttps_epi32(half(a, 0)), _mm256_cvttps_epi32(half(a, 1))); }

template <int IMM>
inline simde__m512 roundscale_ps(simde__m512 a)
{
    static_assert((IMM >> 4) == 0, "roundscale with a scale (imm bits 7:4) is not emulated");
    return join(_mm256_round_ps(half(a, 0), IMM & 0x0F), _mm256_round_ps(half(a, 1), IMM & 0x0F));
}

// The aligned loads and stores fault on hardware when the address is not a multiple of 64; SIMDe's do not.
inline const void* aligned64(const void* p)
{
    if (reinterpret_cast<uintptr_t>(p) % 64 != 0) {
        fprintf(stderr, "AVX-512 emulation: an aligned 64-byte load or store at %p, not 64-byte aligned\n", p);
        abort();
    }
    return p;
}

inline void mask_storeu_epi32(void* p, simde__mmask16 k, simde__m512i a)
{
    const simde__m512i_private v = simde__m512i_to_private(a);
    for (int i = 0; i < 16; ++i)
        if (k & (1u << i)) static_cast<int32_t*>(p)[i] = v.i32[i];
}

template <typename Op>
inline float reduce(simde__m512 a, Op op)
{
    const __m256 t3 = op(half(a, 1), half(a, 0));
    const __m128 t6 = op(_mm256_extractf128_ps(t3, 1), _mm256_extractf128_ps(t3, 0));
    const __m128 t8 = op(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    const float lo = _mm_cvtss_f32(t8), hi = _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
    return op(_mm_set_ss(lo), _mm_set_ss(hi))[0];
}

struct Add {
    __m256 operator()(__m256 a, __m256 b) const { return _mm256_add_ps(a, b); }
    __m128 operator()(__m128 a, __m128 b) const { return _mm_add_ps(a, b); }
};
struct Max {
    __m256 operator()(__m256 a, __m256 b) const { return _mm256_max_ps(a, b); }
    __m128 operator()(__m128 a, __m128 b) const { return _mm_max_ps(a, b); }
};

}  // namespace gt_isa_emu

#define _mm512_cvtepi32_ps gt_isa_emu::cvtepi32_ps
#define _mm512_cvtps_epi32 gt_isa_emu::cvtps_epi32
#define _mm512_cvttps_epi32 gt_isa_emu::cvttps_epi32
#define _mm512_mask_storeu_epi32 gt_isa_emu::mask_storeu_epi32
#define _mm512_reduce_add_ps(a) gt_isa_emu::reduce((a), gt_isa_emu::Add())
#define _mm512_reduce_max_ps(a) gt_isa_emu::reduce((a), gt_isa_emu::Max())
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps(a, imm) gt_isa_emu::roundscale_ps<(imm)>(a)
#define _mm512_undefined_ps _mm512_setzero_ps
#undef _mm512_load_ps
#undef _mm512_load_si512
#undef _mm512_store_ps
#undef _mm512_store_si512
#define _mm512_load_ps(p) simde_mm512_load_ps(gt_isa_emu::aligned64(p))
#define _mm512_load_si512(p) simde_mm512_load_si512(gt_isa_emu::aligned64(p))
#define _mm512_store_ps(p, a) simde_mm512_store_ps(const_cast<void*>(gt_isa_emu::aligned64(p)), (a))
#define _mm512_store_si512(p, a) simde_mm512_store_si512(const_cast<void*>(gt_isa_emu::aligned64(p)), (a))

// The plugins' *_avx512.cpp compile their kernels only under these macros (they are set by -mavx512*,
// which would let the compiler emit AVX-512 instructions itself).
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512DQ__ 1
#define __AVX512VL__ 1
#define __AVX512VNNI__ 1
