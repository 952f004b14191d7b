// raster_cuda.cu: tile-based 3D Gaussian rasterizer (forward), batched over B frames.
//
// Compiled at run time by gt_runtime/raster/_cuda.py with CuPy RawModule (NVRTC);
// the kernels are extern "C" so that they are looked up by name. All the per-Gaussian
// and per-pixel math comes from gt_raster_math.h, which the C++ CPU rasterizer
// includes too, so the CPU tests check the math that runs here.
//
// Pipeline for one render() of B frames x N Gaussians (gsplat's, antialiased=False):
//   1. gt_raster_project      [B*N threads]  EWA projection, SH colour, tile rectangle,
//                                            number of tiles touched (0 when culled).
//   2. (host) inclusive scan of the counts (cupy.cumsum), n_isects = last element.
//   3. gt_raster_isect_keys   [B*N threads]  one 64-bit key per (Gaussian, tile):
//                                            key = (frame * num_tiles + tile) << 32 | depth bits.
//   4. (host) stable radix sort of the keys (cupy.argsort on uint64: thrust/cub).
//   5. gt_raster_tile_ranges  [B*num_tiles]  [start, end) of every tile in the sorted keys.
//   6. gt_raster_blend        one 16x16 block per tile and frame: front-to-back alpha
//                                            blending with early stop, over the background.
//
// Shapes (letters as everywhere in gt): B frames, N Gaussians, K SH bases, H, W pixels.
// A per-Gaussian input is either per frame ([B, N, ...], frame stride = N * row) or shared
// by all frames ([N, ...], frame stride = 0); the strides are in floats.
// Flat Gaussian index g = b * N + n (int32: the host checks B * N < 2^31).

#include "gt_raster_math.h"

#define GT_BLOCK_SIZE (GT_TILE * GT_TILE)

///////////////////////////////
// 1. Projection
///////////////////////////////

extern "C" __global__ void gt_raster_project(
    const int B,
    const int N,
    const float* __restrict__ means,      // [B, N, 3] or [N, 3]
    const long long means_fs,             // floats per frame: N * 3, or 0 (shared)
    const float* __restrict__ quats,      // [B, N, 4] or [N, 4], wxyz, any norm
    const long long quats_fs,
    const float* __restrict__ scales,     // [B, N, 3] or [N, 3], linear
    const long long scales_fs,
    const float* __restrict__ opacities,  // [B, N] or [N]
    const long long opacities_fs,
    const float* __restrict__ colors,     // RGB [B, N, 3] / [N, 3], or SH [B, N, K, 3] / [N, K, 3]
    const long long colors_fs,
    const int sh_degree,                  // -1: colors are RGB; 0..3: SH, K = (sh_degree + 1)^2
    const float* __restrict__ viewmats,   // [B, 4, 4] world -> camera, row-major
    const float* __restrict__ Ks,         // [B, 3, 3] pinhole intrinsics
    const int width,
    const int height,
    const int tiles_x,
    const int tiles_y,
    float* __restrict__ means2d,          // [B, N, 2] out: pixels
    float* __restrict__ conics,           // [B, N, 3] out: inverse dilated cov2d (a, b, c)
    float* __restrict__ depths,           // [B, N]    out: camera z
    int* __restrict__ radii,              // [B, N]    out: pixels, 0 when culled
    float* __restrict__ rgbs,             // [B, N, 3] out: colour (SH evaluated)
    float* __restrict__ opac,             // [B, N]    out: opacity (per frame, contiguous)
    int* __restrict__ tile_rects,         // [B, N, 4] out: tx0, ty0, tx1, ty1 (max exclusive)
    int* __restrict__ tiles_touched)      // [B, N]    out: (tx1 - tx0) * (ty1 - ty0), 0 when culled
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)B * N) return;
    const int b = (int)(g / N);
    const int n = (int)(g - (long long)b * N);

    const float* mean = means + b * means_fs + (long long)n * 3;
    const float* quat = quats + b * quats_fs + (long long)n * 4;
    const float* scale = scales + b * scales_fs + (long long)n * 3;
    const float opacity = opacities[b * opacities_fs + n];
    const float* viewmat = viewmats + (long long)b * 16;
    const float* Kb = Ks + (long long)b * 9;

    float m2d[2] = {0.f, 0.f}, conic[3] = {0.f, 0.f, 0.f}, depth = 0.f, radius = 0.f;
    const bool visible = gt_project_ewa(mean, quat, scale, viewmat, Kb[0], Kb[4], Kb[2], Kb[5], width, height,
                                        m2d, conic, &depth, &radius);
    int tx0 = 0, ty0 = 0, tx1 = 0, ty1 = 0;
    if (visible) gt_tile_bounds(m2d, radius, tiles_x, tiles_y, &tx0, &ty0, &tx1, &ty1);
    const int count = visible ? (tx1 - tx0) * (ty1 - ty0) : 0;

    float rgb[3] = {0.f, 0.f, 0.f};
    if (count > 0) {
        if (sh_degree < 0) {
            const float* c = colors + b * colors_fs + (long long)n * 3;
            rgb[0] = c[0]; rgb[1] = c[1]; rgb[2] = c[2];
        } else {
            const int K = (sh_degree + 1) * (sh_degree + 1);
            const float* coeffs = colors + b * colors_fs + (long long)n * K * 3;
            float campos[3], dir[3];
            gt_camera_center(viewmat, campos);
            dir[0] = mean[0] - campos[0]; dir[1] = mean[1] - campos[1]; dir[2] = mean[2] - campos[2];
            gt_sh_to_color(sh_degree, dir, coeffs, rgb);
        }
    }

    means2d[g * 2 + 0] = m2d[0];
    means2d[g * 2 + 1] = m2d[1];
    conics[g * 3 + 0] = conic[0];
    conics[g * 3 + 1] = conic[1];
    conics[g * 3 + 2] = conic[2];
    depths[g] = depth;
    radii[g] = count > 0 ? (int)radius : 0;
    rgbs[g * 3 + 0] = rgb[0];
    rgbs[g * 3 + 1] = rgb[1];
    rgbs[g * 3 + 2] = rgb[2];
    opac[g] = opacity;
    tile_rects[g * 4 + 0] = tx0;
    tile_rects[g * 4 + 1] = ty0;
    tile_rects[g * 4 + 2] = tx1;
    tile_rects[g * 4 + 3] = ty1;
    tiles_touched[g] = count;
}

///////////////////////////////
// 3. Intersection keys
///////////////////////////////

// One thread per Gaussian writes its tiles_touched[g] keys from offset cum_tiles[g] - tiles_touched[g].
// Depths are >= GT_NEAR > 0 here, so their float bits sort like the floats.
extern "C" __global__ void gt_raster_isect_keys(
    const int B,
    const int N,
    const int tiles_x,
    const int num_tiles,                          // tiles_x * tiles_y
    const float* __restrict__ depths,             // [B, N]
    const int* __restrict__ tile_rects,           // [B, N, 4]
    const int* __restrict__ tiles_touched,        // [B, N]
    const long long* __restrict__ cum_tiles,      // [B, N] inclusive scan of tiles_touched
    unsigned long long* __restrict__ isect_keys,  // [n_isects] out
    int* __restrict__ isect_ids)                  // [n_isects] out: flat Gaussian index g
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)B * N) return;
    const int count = tiles_touched[g];
    if (count <= 0) return;
    const int b = (int)(g / N);
    long long cur = cum_tiles[g] - count;
    const unsigned long long depth_bits = (unsigned long long)__float_as_uint(depths[g]);
    const unsigned long long frame_base = (unsigned long long)b * (unsigned long long)num_tiles;
    const int tx0 = tile_rects[g * 4 + 0], ty0 = tile_rects[g * 4 + 1];
    const int tx1 = tile_rects[g * 4 + 2], ty1 = tile_rects[g * 4 + 3];
    for (int ty = ty0; ty < ty1; ++ty) {
        for (int tx = tx0; tx < tx1; ++tx) {
            const unsigned long long tile = frame_base + (unsigned long long)(ty * tiles_x + tx);
            isect_keys[cur] = (tile << 32) | depth_bits;
            isect_ids[cur] = (int)g;
            ++cur;
        }
    }
}

///////////////////////////////
// 5. Tile ranges
///////////////////////////////

// First index in sorted keys[0, n) whose key is >= value.
__device__ __forceinline__ long long gt_lower_bound(const unsigned long long* __restrict__ keys, long long n,
                                                    unsigned long long value)
{
    long long lo = 0, hi = n;
    while (lo < hi) {
        const long long mid = lo + ((hi - lo) >> 1);
        if (keys[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// One thread per (frame, tile): binary search of its [start, end) in the sorted keys.
// Tiles with no Gaussian get start == end; n_isects == 0 gives all-empty ranges.
extern "C" __global__ void gt_raster_tile_ranges(
    const long long n_isects,
    const int num_frame_tiles,                          // B * num_tiles
    const unsigned long long* __restrict__ sorted_keys, // [n_isects]
    int* __restrict__ tile_ranges)                      // [B, num_tiles, 2] out
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= num_frame_tiles) return;
    const unsigned long long tile = (unsigned long long)t;
    const long long start = gt_lower_bound(sorted_keys, n_isects, tile << 32);
    const long long end = gt_lower_bound(sorted_keys, n_isects, (tile + 1ull) << 32);
    tile_ranges[(long long)t * 2 + 0] = (int)start;
    tile_ranges[(long long)t * 2 + 1] = (int)end;
}

///////////////////////////////
// 6. Blend
///////////////////////////////

// grid (tiles_x, tiles_y, B), block (GT_TILE, GT_TILE): one thread per pixel. The block walks its
// tile's Gaussians front to back in batches of GT_BLOCK_SIZE staged in shared memory, and stops
// once every pixel is saturated. Pixel colour = sum_i c_i alpha_i T_i + T_final * background.
// background[b * bg_fs + (y * W + x) * bg_ps + c]: colour per frame (bg_ps = 0), image (bg_ps = 3),
// shared by all frames (bg_fs = 0); ignored (black) when has_bg == 0.
extern "C" __global__ void __launch_bounds__(GT_BLOCK_SIZE) gt_raster_blend(
    const int width,
    const int height,
    const int tiles_x,
    const int num_tiles,                       // tiles_x * tiles_y
    const int* __restrict__ tile_ranges,       // [B, num_tiles, 2]
    const int* __restrict__ isect_ids,         // [n_isects] sorted, flat Gaussian index g
    const float* __restrict__ means2d,         // [B, N, 2]
    const float* __restrict__ conics,          // [B, N, 3]
    const float* __restrict__ opac,            // [B, N]
    const float* __restrict__ rgbs,            // [B, N, 3]
    const float* __restrict__ background,      // see above
    const int has_bg,
    const long long bg_fs,
    const long long bg_ps,
    float* __restrict__ out)                   // [B, H, W, 3]
{
    __shared__ float2 s_xy[GT_BLOCK_SIZE];
    __shared__ float s_opac[GT_BLOCK_SIZE];
    __shared__ float3 s_conic[GT_BLOCK_SIZE];
    __shared__ float3 s_rgb[GT_BLOCK_SIZE];

    const int b = blockIdx.z;
    const int tile = blockIdx.y * tiles_x + blockIdx.x;
    const int tr = threadIdx.y * GT_TILE + threadIdx.x;  // thread rank in the block
    const int x = blockIdx.x * GT_TILE + threadIdx.x;
    const int y = blockIdx.y * GT_TILE + threadIdx.y;
    const bool inside = x < width && y < height;
    const float px = (float)x + 0.5f;
    const float py = (float)y + 0.5f;

    const long long range_at = ((long long)b * num_tiles + tile) * 2;
    const int range_start = tile_ranges[range_at + 0];
    const int range_end = tile_ranges[range_at + 1];
    const int num_batches = (range_end - range_start + GT_BLOCK_SIZE - 1) / GT_BLOCK_SIZE;

    // Pixels outside the image take part in loading and in the barriers, but blend nothing.
    bool done = !inside;
    float T = 1.f;
    float acc[3] = {0.f, 0.f, 0.f};

    for (int batch = 0; batch < num_batches; ++batch) {
        // Barrier: every thread has finished reading the previous batch, and all may be done.
        if (__syncthreads_count(done) == GT_BLOCK_SIZE) break;
        const int start = range_start + batch * GT_BLOCK_SIZE;
        const int idx = start + tr;
        if (idx < range_end) {
            const long long g = isect_ids[idx];
            s_xy[tr] = make_float2(means2d[g * 2 + 0], means2d[g * 2 + 1]);
            s_opac[tr] = opac[g];
            s_conic[tr] = make_float3(conics[g * 3 + 0], conics[g * 3 + 1], conics[g * 3 + 2]);
            s_rgb[tr] = make_float3(rgbs[g * 3 + 0], rgbs[g * 3 + 1], rgbs[g * 3 + 2]);
        }
        __syncthreads();
        const int batch_n = min(GT_BLOCK_SIZE, range_end - start);
        for (int j = 0; !done && j < batch_n; ++j) {
            const float3 cj = s_conic[j];
            const float conic[3] = {cj.x, cj.y, cj.z};
            const float2 xy = s_xy[j];
            float alpha, vis;
            if (!gt_eval_alpha(conic, xy.x - px, xy.y - py, s_opac[j], &alpha, &vis)) continue;
            const float next_T = T * (1.f - alpha);
            if (next_T <= GT_T_THRESHOLD) {  // saturated: this Gaussian is not added
                done = true;
                break;
            }
            const float w = alpha * T;
            const float3 c = s_rgb[j];
            acc[0] += c.x * w;
            acc[1] += c.y * w;
            acc[2] += c.z * w;
            T = next_T;
        }
    }

    if (!inside) return;
    const long long pix = (long long)y * width + x;
    float bg[3] = {0.f, 0.f, 0.f};
    if (has_bg) {
        const float* bgp = background + (long long)b * bg_fs + pix * bg_ps;
        bg[0] = bgp[0]; bg[1] = bgp[1]; bg[2] = bgp[2];
    }
    float* o = out + ((long long)b * height * width + pix) * 3;
    o[0] = acc[0] + T * bg[0];
    o[1] = acc[1] + T * bg[1];
    o[2] = acc[2] + T * bg[2];
}
