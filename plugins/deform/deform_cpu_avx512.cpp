// deform_cpu_avx512.cpp: AVX-512 variant of the fused deformation tile (deform_simd.h): zmm FP32 FMA,
// INT8 by AVX-512 VNNI. setup.py compiles this file alone with -mavx512f/bw/vl -mavx512vnni; without
// them (other compilers, non-x86 targets) it only provides a null getter.
#include "deform_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__FMA__)
#define GT_SIMD_AVX512 1
#include "deform_simd.h"

namespace gt {
namespace deform {
const DeformKernels* deform_kernels_avx512()
{
    static const DeformKernels k = {"avx512", tile};
    return &k;
}
}  // namespace deform
}  // namespace gt
#else
namespace gt {
namespace deform {
const DeformKernels* deform_kernels_avx512() { return nullptr; }
}  // namespace deform
}  // namespace gt
#endif
