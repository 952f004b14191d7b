// raster_cpu_avx2.cpp: AVX2 + FMA variant of the tile kernels in raster_cpu_simd.h.
// setup.py compiles this file alone with -mavx2 -mfma; without them (other compilers, non-x86 targets)
// it only provides a null getter.
#include "raster_cpu_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#define GT_SIMD_AVX2 1
#include "raster_cpu_simd.h"

namespace gt {
const TileKernels* tile_kernels_avx2()
{
    static const TileKernels k = {"avx2", project, colour, project_vjp, forward_tile, backward_tile};
    return &k;
}
}  // namespace gt
#else
namespace gt {
const TileKernels* tile_kernels_avx2() { return nullptr; }
}  // namespace gt
#endif
