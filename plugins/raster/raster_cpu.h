// raster_cpu.h: CPU (OpenMP) tile rasterizer for 3D Gaussians, forward and backward.
// Math lives in gt_raster_math.h (shared with the CUDA rasterizer); this file is the
// launcher layer: projection over N, depth sort, 16x16 tile binning, per-tile blending.
// The per-tile blend kernels (SIMD, one variant per instruction set) are in raster_cpu_kernels.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "raster_cpu_kernels.h"

namespace gt {

// What backward needs from forward.
struct RasterState {
    int N = 0, width = 0, height = 0, tiles_x = 0, tiles_y = 0;
    std::vector<Splat> splats;          // [N] (valid where radius > 0)
    std::vector<float> radius;          // [N] 0 = culled
    std::vector<float> depth;           // [N]
    std::vector<int32_t> order;         // [V] Gaussian id of each visible splat, front to back (V = num_visible)
    std::vector<Splat> sorted;          // [V] splats[order[j]]: tile lists read these in increasing j
    std::vector<int32_t> tile_offsets;  // [tiles + 1] into tile_ids
    std::vector<int32_t> tile_ids;      // [n_isects] depth ranks j (index into order / sorted), front to back per tile
    std::vector<float> T_final;         // [H, W] transmittance after the last contributor
    std::vector<int32_t> n_contrib;     // [H, W] 1 + index (in the tile list) of the last contributor; 0 = none
    std::vector<int32_t> tile_order;    // [tiles] tiles by decreasing list length (scheduling order)
    int num_visible = 0;
    const TileKernels* kernels = nullptr;  // the variant forward used; backward uses the same
    // Work buffers. Calls on a reused state keep their capacity, so big frames do not page-fault
    // fresh memory on every call (bind_cpu.cpp reuses states).
    struct Scratch {
        std::vector<float> proj;         // [5, N] projection: mean2d x, y, conic a, b, c
        std::vector<float> rgb;          // [3, N] SH colour
        std::vector<float> radius;       // [V] sorted radii
        std::vector<int32_t> rect;       // [V, 4] tile rectangles
        std::vector<int32_t> cursor;     // [threads, tiles] counts, then write cursors
        std::vector<int32_t> corners;    // [threads, tiles_y + 1, tiles_x + 1] box corner marks
        std::vector<float> grads;        // [threads, V, kSplatGrads] backward accumulators
        std::vector<int32_t> rank;       // [N] depth rank j of Gaussian g, -1 = culled
        std::vector<float> vjp_aux;      // [N, 8] conic and 2-D gradients, input of the projection VJP
    };
    mutable Scratch scratch;
};

// Gradient outputs (zeroed and written by backward). v_background may be nullptr.
struct RasterGrads {
    float* v_means = nullptr;       // [N, 3]
    float* v_quats = nullptr;       // [N, 4]
    float* v_scales = nullptr;      // [N, 3]
    float* v_opacities = nullptr;   // [N]
    float* v_colors = nullptr;      // [N, 3] or [N, K, 3]
    float* v_background = nullptr;  // [3] or [H, W, 3] (per bg_mode)
};

// Instruction sets of the blend kernels that this build has and this CPU runs, best first
// (a subset of "avx512", "avx2", "generic"; "generic" is always there).
std::vector<std::string> raster_cpu_isas();

// The variant forward uses now: the best of raster_cpu_isas(), capped by the environment variable
// GT_RASTER_ISA=generic|avx2|avx512 (read on every call; other values are ignored).
const TileKernels* raster_cpu_select_isa();

// Renders image [H, W, 3] and fills state. for_backward = false (playback) skips what only backward
// reads (T_final, n_contrib); such a state must not be passed to backward.
void raster_forward_cpu(const RasterInputs& in, float* image, RasterState& state, bool for_backward = true);

// Gradients of sum(v_image * image) w.r.t. every input (same inputs as forward).
void raster_backward_cpu(const RasterInputs& in, const RasterState& state, const float* v_image, RasterGrads& grads);

}  // namespace gt
