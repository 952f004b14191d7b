// deform_cpu_avx2.cpp: AVX2 + FMA variant of the fused deformation tile (deform_simd.h): ymm FP32
// FMA, INT8 by maddubs/madd. setup.py compiles this file alone with -mavx2 -mfma; without them
// (other compilers, non-x86 targets) it only provides a null getter.
#include "deform_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#define GT_SIMD_AVX2 1
#include "deform_simd.h"

namespace gt {
namespace deform {
const DeformKernels* deform_kernels_avx2()
{
    static const DeformKernels k = {"avx2", tile};
    return &k;
}
}  // namespace deform
}  // namespace gt
#else
namespace gt {
namespace deform {
const DeformKernels* deform_kernels_avx2() { return nullptr; }
}  // namespace deform
}  // namespace gt
#endif
