// gt_cpu_isa.h: the x86 instruction-set level this CPU runs, and the ceiling a setting puts on it.
// Shared by the rasterizer (GT_RASTER_ISA) and the fused deformation kernel (GT_DEFORM_ISA); the
// settings are declared in gt_runtime/contract.py. Each extension keeps a table of its compiled
// variants and takes the best one whose level is <= min(cpu_isa_level(), isa_cap_from_env(...)).
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace gt {

enum IsaLevel { kIsaGeneric = 0, kIsaAvx2 = 1, kIsaAvx512 = 2, kIsaAmx = 3 };

// AMX tiles usable by this process: the CPU has AMX-TILE and AMX-INT8 (CPUID 7.0 EDX bits 24, 25) and
// Linux grants the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, Linux >= 5.16;
// the grant is process-wide and asked once). Elsewhere: false.
inline bool amx_int8_usable()
{
#if defined(__GNUC__) && defined(__linux__) && defined(__x86_64__)
    static const bool usable = [] {
        unsigned a, b, c, d;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return false;
        constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
    }();
    return usable;
#else
    return false;
#endif
}

// Highest level this CPU runs: AVX-512 needs F, BW, DQ and VL (and VNNI when `avx512_needs_vnni`),
// AMX needs that and amx_int8_usable() (asked only when `want_amx`), AVX2 needs AVX2 and FMA.
// Non-x86 or non-GNU builds: generic.
inline int cpu_isa_level(bool avx512_needs_vnni, bool want_amx = false)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma");
#ifdef GT_ISA_EMULATE_AVX512
    // tests/isa_emu's build: its *_avx512.cpp and *_amx.cpp kernels run on SIMDe's AVX-512 over AVX2 and
    // an emulation of the AMX tiles, so any AVX2 CPU runs every level
    if (fma && __builtin_cpu_supports("avx2")) return want_amx ? kIsaAmx : kIsaAvx512;
#endif
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        (!avx512_needs_vnni || __builtin_cpu_supports("avx512vnni")))
        return want_amx && amx_int8_usable() ? kIsaAmx : kIsaAvx512;
    if (fma && __builtin_cpu_supports("avx2")) return kIsaAvx2;
#else
    (void)avx512_needs_vnni;
    (void)want_amx;
#endif
    return kIsaGeneric;
}

// The ceiling set by environment variable `var` ("generic", "avx2" or "avx512"; anything else: no ceiling).
inline int isa_cap_from_env(const char* var)
{
    const char* env = std::getenv(var);
    if (env == nullptr) return kIsaAmx;
    if (std::strcmp(env, "generic") == 0) return kIsaGeneric;
    if (std::strcmp(env, "avx2") == 0) return kIsaAvx2;
    if (std::strcmp(env, "avx512") == 0) return kIsaAvx512;
    return kIsaAmx;
}

}  // namespace gt
