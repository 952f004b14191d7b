// gt_cpu_isa.h: the x86 instruction-set level this CPU runs, and the ceiling a setting puts on it.
// Shared by the rasterizer (GT_RASTER_ISA) and the fused deformation kernel (GT_DEFORM_ISA); the
// settings are declared in gt_runtime/contract.py. Each extension keeps a table of its compiled
// variants and takes the best one whose level is <= min(cpu_isa_level(), isa_cap_from_env(...)).
#pragma once

#include <cstdlib>
#include <cstring>

namespace gt {

enum IsaLevel { kIsaGeneric = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };

// Highest level this CPU runs: AVX-512 needs F, BW, DQ and VL (and VNNI when `avx512_needs_vnni`),
// AVX2 needs AVX2 and FMA. Non-x86 or non-GNU builds: generic.
inline int cpu_isa_level(bool avx512_needs_vnni)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma");
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        (!avx512_needs_vnni || __builtin_cpu_supports("avx512vnni")))
        return kIsaAvx512;
    if (fma && __builtin_cpu_supports("avx2")) {
#ifdef GT_ISA_EMULATE_AVX512
        // tests/isa_emu's build: the *_avx512.cpp kernels run on SIMDe's AVX-512 over AVX2
        return kIsaAvx512;
#endif
        return kIsaAvx2;
    }
#else
    (void)avx512_needs_vnni;
#endif
    return kIsaGeneric;
}

// The ceiling set by environment variable `var` ("generic" or "avx2"; anything else: no ceiling).
inline int isa_cap_from_env(const char* var)
{
    const char* env = std::getenv(var);
    if (env == nullptr) return kIsaAvx512;
    if (std::strcmp(env, "generic") == 0) return kIsaGeneric;
    if (std::strcmp(env, "avx2") == 0) return kIsaAvx2;
    return kIsaAvx512;
}

}  // namespace gt
