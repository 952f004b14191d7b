// raster_cpu_kernels.h: per-Gaussian projection and per-tile blend kernels of the CPU rasterizer, one
// variant per instruction set.
//
// raster_cpu_{avx512,avx2,generic}.cpp each compile raster_cpu_simd.h with their own -m flags
// (setup.py); raster_cpu.cpp picks one at run time (raster_cpu_select_isa). The variants differ only
// by float rounding (the AVX ones fuse multiply-adds in the blend); forward and backward always use
// the same variant, so their alpha decisions agree.
//
// No STL here: the ISA translation units include this header, and any inline or template code they
// share with the rest of the extension could be linked in its AVX-512 copy.
#pragma once

#include <stdint.h>

namespace gt {

constexpr int kTile = 16;                  // == GT_TILE (checked in raster_cpu.cpp)
constexpr int kTilePix = kTile * kTile;    // pixels of a tile; tile arrays have row stride kTile
constexpr int kSplatGrads = 9;             // per-Gaussian 2-D grads: mean2d (2), conic (3), opacity, rgb (3)

// Inputs, all float32 C-contiguous host arrays (shapes in comments). Not owned.
struct RasterInputs {
    int N = 0;
    const float* means = nullptr;      // [N, 3] world
    const float* quats = nullptr;      // [N, 4] wxyz, any norm
    const float* scales = nullptr;     // [N, 3] linear
    const float* opacities = nullptr;  // [N] in [0, 1]
    const float* colors = nullptr;     // [N, 3] RGB (sh_degree < 0) or [N, K, 3] SH coefficients
    int sh_degree = -1;                // -1: colors are RGB; 0..3: SH degree, K = (deg + 1)^2
    const float* viewmat = nullptr;    // [4, 4] world -> camera, row-major
    const float* K = nullptr;          // [3, 3] pinhole intrinsics
    int width = 0, height = 0;
    const float* background = nullptr; // nullptr (black), [3] or [H, W, 3]
    int bg_mode = 0;                   // 0: none, 1: [3], 2: [H, W, 3]
};

// Per-Gaussian data the blending loop reads.
struct Splat {
    float mx, my;        // mean2d (pixels)
    float a, b, c;       // conic
    float opacity;
    float rgb[3];        // colour after SH (+0.5, clamp) or the given RGB
    float smax;          // sigma above which alpha < 1/255 for sure
    float ext_x, ext_y;  // half extents (pixels) of the region where alpha can reach 1/255
};

// Backward inputs of one tile: [kTilePix] arrays, row stride kTile. Pixels outside the image have last = 0.
struct TileBwdIn {
    alignas(64) float T_fin[kTilePix];     // transmittance after the last contributor
    alignas(64) float v_bg_dot[kTilePix];  // sum_k background_k * v_image_k
    alignas(64) float vc[3][kTilePix];     // v_image per channel
    alignas(64) int32_t last[kTilePix];    // 1 + list index of the last contributor, 0 = none
};

struct TileKernels {
    const char* name;  // "avx512", "avx2", "generic"
    // Gaussians [begin, end) of in through gt_project_ewa, in a loop the compiler vectorises: proj [5, N]
    // (rows mean2d x, y and conic a, b, c), radius [N] (0 = culled, also when opacity < 1/255), depth [N].
    void (*project)(const RasterInputs& in, int begin, int end, float* proj, float* radius, float* depth);
    // SH colour (gt_sh_to_color at the direction from campos [3]) of Gaussians [begin, end) into rgb [3, N]
    // planes, in a loop the compiler vectorises. sh_degree >= 0 only.
    void (*colour)(const RasterInputs& in, const float* campos, int begin, int end, float* rgb);
    // Gaussians [begin, end) of in through gt_project_ewa_vjp, in a loop the compiler vectorises. For the
    // visible ones (radius [N] > 0), aux [N, 8] holds the conic (a, b, c) and the 2-D gradients (v_mean2d
    // x, y, v_conic a, b, c); their VJP is added to v_means [N, 3], v_quats [N, 4] and v_scales [N, 3].
    void (*project_vjp)(const RasterInputs& in, int begin, int end, const float* radius, const float* aux,
                        float* v_means, float* v_quats, float* v_scales);
    // Front to back over ids [count] (depth order) for the tile at pixel (tx0, ty0) of size tw x th.
    // Writes T [kTilePix], C [3][kTilePix] (premultiplied colour) and, unless last is nullptr,
    // last [kTilePix] (0 = no contributor).
    void (*forward)(const Splat* splats, const int32_t* ids, int32_t count, int tx0, int ty0, int tw, int th,
                    float* T, float* C, int32_t* last);
    // Back to front over each pixel's contributors; adds the tile's kSplatGrads grads of Gaussian g to
    // grads [g * kSplatGrads ...] (grads: [N, kSplatGrads], one buffer per thread).
    void (*backward)(const Splat* splats, const int32_t* ids, int tx0, int ty0, int tw, int th, const TileBwdIn& in,
                     float* grads);
};

// nullptr when this build has no such variant (non-x86 targets, compilers without the flags).
// Whether the CPU runs it is checked by the caller.
const TileKernels* tile_kernels_avx512();
const TileKernels* tile_kernels_avx2();
const TileKernels* tile_kernels_generic();

}  // namespace gt
