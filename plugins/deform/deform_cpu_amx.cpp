// deform_cpu_amx.cpp: the AVX-512 variant of the fused deformation tile (deform_simd.h) with its INT8
// GEMMs on AMX tiles (tdpbusd: 16 rows x 16 columns x 64 k per instruction). setup.py compiles this
// file alone with the AVX-512 flags and -mamx-tile -mamx-int8; without them (other compilers, non-x86
// targets) it only provides a null getter. The extension lists it only where Linux grants the
// process the tile state (gt_cpu_isa.h, amx_int8_usable).
#include "deform_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__FMA__) && \
    defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define GT_SIMD_AVX512 1
#define GT_DEFORM_AMX 1
#include "deform_simd.h"

namespace gt {
namespace deform {
const DeformKernels* deform_kernels_amx()
{
    static const DeformKernels k = {"amx", tile};
    return &k;
}
}  // namespace deform
}  // namespace gt
#else
namespace gt {
namespace deform {
const DeformKernels* deform_kernels_amx() { return nullptr; }
}  // namespace deform
}  // namespace gt
#endif
