// raster_cpu_generic.cpp: portable variant of the tile kernels in raster_cpu_simd.h (float[16]
// loops, vectorised by the compiler for the baseline target). Always available.
#include "raster_cpu_kernels.h"

#define GT_SIMD_GENERIC 1
#include "raster_cpu_simd.h"

namespace gt {
const TileKernels* tile_kernels_generic()
{
    static const TileKernels k = {"generic", project, colour, project_vjp, forward_tile, backward_tile};
    return &k;
}
}  // namespace gt
