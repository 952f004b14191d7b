// deform_cpu_generic.cpp: portable variant of the fused deformation tile (deform_simd.h): plain
// loops, vectorised by the compiler for the baseline target. Always available.
#include "deform_kernels.h"

#define GT_SIMD_GENERIC 1
#include "deform_simd.h"

namespace gt {
namespace deform {
const DeformKernels* deform_kernels_generic()
{
    static const DeformKernels k = {"generic", tile};
    return &k;
}
}  // namespace deform
}  // namespace gt
