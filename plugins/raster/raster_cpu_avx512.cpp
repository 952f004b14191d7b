// raster_cpu_avx512.cpp: AVX-512 (F, BW, DQ, VL) variant of the tile kernels in raster_cpu_simd.h.
// setup.py compiles this file alone with -mfma -mavx512f -mavx512bw -mavx512dq -mavx512vl; without those
// flags (other compilers, non-x86 targets) it only provides a null getter.
#include "raster_cpu_kernels.h"

#if defined(__FMA__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define GT_SIMD_AVX512 1
#include "raster_cpu_simd.h"

namespace gt {
const TileKernels* tile_kernels_avx512()
{
    static const TileKernels k = {"avx512", project, colour, project_vjp, forward_tile, backward_tile};
    return &k;
}
}  // namespace gt
#else
namespace gt {
const TileKernels* tile_kernels_avx512() { return nullptr; }
}  // namespace gt
#endif
