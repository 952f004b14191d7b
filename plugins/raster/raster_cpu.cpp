// raster_cpu.cpp: CPU tile rasterizer (OpenMP). Same rules as gsplat's
// rasterization() (antialiased=False): see gt_raster_math.h for the math.
//
// Forward:  project [N] (vectorised, parallel) -> stable depth sort (one thread, while the others
//           colour) -> bin into 16x16 tiles (parallel count, prefix sum, fill; lists stay front to
//           back) -> per tile, the SIMD blend kernel (raster_cpu_simd.h) with per-pixel early stop.
//           Tiles run heaviest first, dynamically scheduled (head scenes are very unbalanced).
// Backward: per tile, Gaussians back to front (gsplat's per-pixel order) in the same kernel
//           variant, per-thread gradient buffers reduced once per Gaussian, then the
//           projection / SH VJPs.
#include "raster_cpu.h"
#include "../common/gt_cpu_isa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gt_raster_math.h"

#ifdef GT_RASTER_TIMING  // stage times on stderr: wall, and CPU time of the calling thread (OMP_NUM_THREADS=1)
#include <cstdio>
#include <ctime>
inline double gt_thread_cpu_s()
{
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
#define GT_TIC(name) const double name = omp_get_wtime(), name##_cpu = gt_thread_cpu_s();
#define GT_TOC(label, name)                                                                          \
    fprintf(stderr, "%s: %.2f ms (thread cpu %.2f ms)\n", label, 1e3 * (omp_get_wtime() - name), \
            1e3 * (gt_thread_cpu_s() - name##_cpu));
#else
#define GT_TIC(name)
#define GT_TOC(label, name)
#endif

namespace gt {
namespace {

int max_threads()
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int thread_id()
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int num_threads()
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static_assert(kTile == GT_TILE, "raster_cpu_kernels.h and gt_raster_math.h disagree on the tile size");

// Kernel variants this build has and this CPU runs, best first, with their level (2 avx512, 1 avx2, 0 generic).
struct IsaEntry {
    const TileKernels* kernels;
    int level;
};

const std::vector<IsaEntry>& isa_table()
{
    static const std::vector<IsaEntry> table = [] {
        std::vector<IsaEntry> t;
        const int level = cpu_isa_level(/*avx512_needs_vnni=*/false);
        if (tile_kernels_avx512() != nullptr && level >= kIsaAvx512) t.push_back({tile_kernels_avx512(), kIsaAvx512});
        if (tile_kernels_avx2() != nullptr && level >= kIsaAvx2) t.push_back({tile_kernels_avx2(), kIsaAvx2});
        t.push_back({tile_kernels_generic(), kIsaGeneric});
        return t;
    }();
    return table;
}

// Tiles in decreasing list length (stable): the heaviest start first under dynamic scheduling.
void tiles_by_load(const std::vector<int32_t>& offsets, std::vector<int32_t>& order)
{
    const int n_tiles = (int)offsets.size() - 1;
    order.resize(n_tiles);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return offsets[a + 1] - offsets[a] > offsets[b + 1] - offsets[b];
    });
}

#if defined(__GNUC__)
inline void prefetch_w(const void* p) { __builtin_prefetch(p, 1); }
inline void prefetch_r(const void* p) { __builtin_prefetch(p, 0); }
#else
inline void prefetch_w(const void*) {}
inline void prefetch_r(const void*) {}
#endif

int sh_bases(int degree) { return degree < 0 ? 1 : (degree + 1) * (degree + 1); }

// Background colour of pixel p [3] (black when none).
inline const float* bg_at(const RasterInputs& in, int64_t p)
{
    static const float kBlack[3] = {0.f, 0.f, 0.f};
    if (in.bg_mode == 1) return in.background;
    if (in.bg_mode == 2) return in.background + p * 3;
    return kBlack;
}

// Stable LSD radix sort of ids by (positive float) depth: depth ties keep id order, as gsplat's
// stable radix sort of (tile | depth) keys does. Three 11-bit digits (2048-bucket histograms fit L1),
// all histograms from one read of the keys, and a digit every key shares (the exponent's, when the
// depths span less than an octave) is skipped.
void sort_by_depth(const std::vector<float>& depth, std::vector<int32_t>& ids)
{
    constexpr int kBits = 11, kDigits = 3, kBuckets = 1 << kBits;
    const size_t n = ids.size();
    std::vector<uint32_t> keys(n), keys2(n);
    std::vector<int32_t> ids2(n);
    std::vector<uint32_t> count((size_t)kDigits * kBuckets, 0u);
    for (size_t i = 0; i < n; ++i) {
        uint32_t k;
        std::memcpy(&k, &depth[ids[i]], 4);  // depth >= near > 0: bit order == value order
        keys[i] = k;
        for (int d = 0; d < kDigits; ++d) count[(size_t)d * kBuckets + ((k >> (d * kBits)) & (kBuckets - 1))]++;
    }
    for (int d = 0; d < kDigits; ++d) {
        uint32_t* c = count.data() + (size_t)d * kBuckets;
        const int shift = d * kBits;
        if (n == 0 || c[(keys[0] >> shift) & (kBuckets - 1)] == n) continue;  // one bucket: order unchanged
        uint32_t off = 0;  // bucket counts -> bucket starts
        for (int b = 0; b < kBuckets; ++b) {
            const uint32_t m = c[b];
            c[b] = off;
            off += m;
        }
        for (size_t i = 0; i < n; ++i) {
            const uint32_t dst = c[(keys[i] >> shift) & (kBuckets - 1)]++;
            keys2[dst] = keys[i];
            ids2[dst] = ids[i];
        }
        keys.swap(keys2);
        ids.swap(ids2);
    }
}

// floor(v) and ceil(v) clamped to the integers [lo, hi]; NaN gives lo. Clamping first keeps the int
// cast defined, and equals clamping after rounding because the bounds are integers. Inline compares
// instead of floorf / fmaxf, which are library calls on the baseline x86-64 target.
inline int floor_clamp(float v, int lo, int hi)
{
    v = v > (float)lo ? v : (float)lo;
    v = v < (float)hi ? v : (float)hi;
    int i = (int)v;
    return (float)i > v ? i - 1 : i;
}

inline int ceil_clamp(float v, int lo, int hi)
{
    v = v > (float)lo ? v : (float)lo;
    v = v < (float)hi ? v : (float)hi;
    int i = (int)v;
    return (float)i < v ? i + 1 : i;
}

// Tiles [x0, x1) x [y0, y1) a splat must be listed in: gsplat's radius tiles (gt_tile_bounds), narrowed
// to the tiles its alpha-threshold box touches (tiles outside it cannot receive any contribution).
void splat_tiles(const Splat& s, float radius, int tiles_x, int tiles_y, int& x0, int& y0, int& x1, int& y1)
{
    const float tr = radius / (float)GT_TILE, tx = s.mx / (float)GT_TILE, ty = s.my / (float)GT_TILE;
    x0 = floor_clamp(tx - tr, 0, tiles_x);
    y0 = floor_clamp(ty - tr, 0, tiles_y);
    x1 = ceil_clamp(tx + tr, 0, tiles_x);
    y1 = ceil_clamp(ty + tr, 0, tiles_y);
    // pixels that may pass: [mx - 0.5 - ext, mx - 0.5 + ext] (pixel centre x + 0.5); / GT_TILE is exact
    x0 = std::max(x0, floor_clamp((s.mx - 0.5f - s.ext_x) / (float)GT_TILE, -1, tiles_x + 1));
    y0 = std::max(y0, floor_clamp((s.my - 0.5f - s.ext_y) / (float)GT_TILE, -1, tiles_y + 1));
    x1 = std::min(x1, floor_clamp((s.mx - 0.5f + s.ext_x) / (float)GT_TILE, -2, tiles_x) + 1);
    y1 = std::min(y1, floor_clamp((s.my - 0.5f + s.ext_y) / (float)GT_TILE, -2, tiles_y) + 1);
}

}  // namespace

void raster_forward_cpu(const RasterInputs& in, float* image, RasterState& st, bool for_backward)
{
    const int N = in.N, W = in.width, H = in.height;
    st.N = N;
    st.width = W;
    st.height = H;
    st.tiles_x = (W + GT_TILE - 1) / GT_TILE;
    st.tiles_y = (H + GT_TILE - 1) / GT_TILE;
    const int TX = st.tiles_x, TY = st.tiles_y, n_tiles = TX * TY;
    st.splats.resize(N);
    st.radius.resize(N);
    st.depth.resize(N);
    float campos[3];
    gt_camera_center(in.viewmat, campos);

    st.kernels = raster_cpu_select_isa();
    const TileKernels* kern = st.kernels;

    GT_TIC(t0)
    // 1. project every Gaussian (the ISA variant's vectorised loop, over each thread's range); then,
    //    while one thread sorts the visible ids by depth (stable), the others colour the visible
    //    Gaussians (the variant's vectorised SH loop, per chunk) and bound their alpha-threshold
    //    ellipse (scalar: logf), and the sorting thread joins them when done
    std::vector<float>& proj = st.scratch.proj;
    proj.resize((size_t)5 * N);
    std::vector<float>& rgb = st.scratch.rgb;
    rgb.resize((size_t)3 * N);
    std::vector<int32_t>& order = st.order;
#pragma omp parallel
    {
        const int nt = num_threads(), t = thread_id();
        kern->project(in, (int)((int64_t)N * t / nt), (int)((int64_t)N * (t + 1) / nt), proj.data(),
                      st.radius.data(), st.depth.data());
#pragma omp barrier
#pragma omp single nowait
        {
            order.clear();
            order.reserve(N);
            for (int g = 0; g < N; ++g)
                if (st.radius[g] > 0.f) order.push_back(g);
            sort_by_depth(st.depth, order);
        }
        constexpr int kColourChunk = 1024;
#pragma omp for schedule(dynamic, 1)
        for (int chunk = 0; chunk < (N + kColourChunk - 1) / kColourChunk; ++chunk) {
            const int b = chunk * kColourChunk, e = std::min(N, b + kColourChunk);
            if (in.sh_degree >= 0) kern->colour(in, campos, b, e, rgb.data());
            for (int g = b; g < e; ++g) {
                if (!(st.radius[g] > 0.f)) continue;
                Splat& s = st.splats[g];
                s.mx = proj[g];
                s.my = proj[N + g];
                s.a = proj[2 * N + g];
                s.b = proj[3 * N + g];
                s.c = proj[4 * N + g];
                s.opacity = in.opacities[g];
                for (int k = 0; k < 3; ++k)
                    s.rgb[k] = in.sh_degree < 0 ? in.colors[g * 3 + k] : rgb[(size_t)k * N + g];
                const float conic[3] = {s.a, s.b, s.c};
                s.smax = gt_sigma_max(s.opacity);
                gt_alpha_extent(conic, s.opacity, &s.ext_x, &s.ext_y);
            }
        }
    }

    GT_TOC("project", t0)
    GT_TIC(t1)
    // 2. the splats copied in depth order (one gather, so that binning and blending read memory in
    //    increasing order)
    st.num_visible = (int)order.size();
    const int V = st.num_visible;
    st.sorted.resize(V);
    std::vector<float>& sorted_radius = st.scratch.radius;
    sorted_radius.resize(V);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < V; ++j) {
        if (j + 16 < V) prefetch_r(&st.splats[order[j + 16]]);
        st.sorted[j] = st.splats[order[j]];
        sorted_radius[j] = st.radius[order[j]];
    }

    GT_TOC("gather", t1)
    GT_TIC(t2)
    // 3. bin into tiles: per-thread counts over contiguous chunks of the depth order, one prefix
    //    sum, then each thread fills its chunk at its own cursors, so every tile list stays sorted
    st.tile_offsets.assign(n_tiles + 1, 0);
    std::vector<int32_t>& rect = st.scratch.rect;
    rect.resize((size_t)V * 4);
    std::vector<int32_t>& cursor = st.scratch.cursor;  // counts, then write cursors
    cursor.resize((size_t)max_threads() * n_tiles);
    const int DX = TX + 1;  // corner grid of the tiles
    std::vector<int32_t>& corners = st.scratch.corners;
    corners.resize((size_t)max_threads() * DX * (TY + 1));
#pragma omp parallel
    {
        const int nt = num_threads(), t = thread_id();
        const int b = (int)((int64_t)V * t / nt), e = (int)((int64_t)V * (t + 1) / nt);
        // count: +-1 at the four corners of each splat's tile box, then a 2-D prefix sum (no loop
        // over the box, whose varying size would cost a mispredicted branch per row)
        int32_t* d = corners.data() + (size_t)t * DX * (TY + 1);
        std::fill(d, d + DX * (TY + 1), 0);
        for (int j = b; j < e; ++j) {
            int x0, y0, x1, y1;
            splat_tiles(st.sorted[j], sorted_radius[j], TX, TY, x0, y0, x1, y1);
            int32_t* r = &rect[(size_t)j * 4];
            r[0] = x0; r[1] = y0; r[2] = x1; r[3] = y1;
            if (x0 >= x1 || y0 >= y1) continue;
            d[y0 * DX + x0]++;
            d[y0 * DX + x1]--;
            d[y1 * DX + x0]--;
            d[y1 * DX + x1]++;
        }
        int32_t* cur = cursor.data() + (size_t)t * n_tiles;
        for (int ty = 0; ty < TY; ++ty) {
            int32_t row = 0;
            for (int tx = 0; tx < TX; ++tx) {
                row += d[ty * DX + tx];
                cur[ty * TX + tx] = row + (ty > 0 ? cur[(ty - 1) * TX + tx] : 0);
            }
        }
#pragma omp barrier
#pragma omp single
        {
            int32_t off = 0;
            for (int tile = 0; tile < n_tiles; ++tile) {
                st.tile_offsets[tile] = off;
                for (int k = 0; k < nt; ++k) {
                    int32_t& c = cursor[(size_t)k * n_tiles + tile];
                    const int32_t n = c;
                    c = off;
                    off += n;
                }
            }
            st.tile_offsets[n_tiles] = off;
            st.tile_ids.resize(off);
        }
        int32_t* ids = st.tile_ids.data();
        for (int j = b; j < e; ++j) {
            const int32_t* r = &rect[(size_t)j * 4];
            for (int ty = r[1]; ty < r[3]; ++ty)
                for (int tx = r[0]; tx < r[2]; ++tx) ids[cur[ty * TX + tx]++] = j;
        }
    }

    GT_TOC("bin", t2)
    GT_TIC(t3)
    // 4. blend, one tile per task, heaviest first
    if (for_backward) {
        st.T_final.resize((size_t)W * H);
        st.n_contrib.resize((size_t)W * H);
    }
    const Splat* splats = st.sorted.data();
    tiles_by_load(st.tile_offsets, st.tile_order);
    const int32_t* tile_order = st.tile_order.data();
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < n_tiles; ++k) {
        const int tile = tile_order[k];
        const int tx0 = (tile % TX) * GT_TILE, ty0 = (tile / TX) * GT_TILE;
        const int tw = std::min(GT_TILE, W - tx0), th = std::min(GT_TILE, H - ty0);
        alignas(64) float T[kTilePix], C[3 * kTilePix];
        alignas(64) int32_t last[kTilePix];
        const int32_t start = st.tile_offsets[tile], end = st.tile_offsets[tile + 1];
        // tiles run in load order, so their output rows are cold: fetch them while the tile blends
        for (int r = 0; r < th; ++r) {
            const int64_t pix = (int64_t)(ty0 + r) * W + tx0;
            for (int b = 0; b < tw * 3 * 4; b += 64) prefetch_w((const char*)(image + pix * 3) + b);
            if (for_backward) {
                prefetch_w(&st.T_final[pix]);
                prefetch_w(&st.n_contrib[pix]);
            }
        }
        kern->forward(splats, st.tile_ids.data() + start, end - start, tx0, ty0, tw, th, T, C,
                      for_backward ? last : nullptr);
        for (int r = 0; r < th; ++r)
            for (int l = 0; l < tw; ++l) {
                const int p = r * kTile + l;
                const int64_t pix = (int64_t)(ty0 + r) * W + tx0 + l;
                const float* bg = bg_at(in, pix);
                for (int c = 0; c < 3; ++c) image[pix * 3 + c] = C[c * kTilePix + p] + T[p] * bg[c];
                if (for_backward) {
                    st.T_final[pix] = T[p];
                    st.n_contrib[pix] = last[p];
                }
            }
    }
    GT_TOC("blend", t3)
}

void raster_backward_cpu(const RasterInputs& in, const RasterState& st, const float* v_image, RasterGrads& out)
{
    const int N = in.N, W = in.width, H = in.height;
    const int TX = st.tiles_x, TY = st.tiles_y, n_tiles = TX * TY;
    const int KB = sh_bases(in.sh_degree);
    const int n_threads = max_threads();
    constexpr int G = kSplatGrads;  // per-Gaussian 2-D grads: mean2d (2), conic (3), opacity (1), rgb (3)
    const int V = st.num_visible;
    GT_TIC(t0)
    std::vector<float>& buf = st.scratch.grads;  // [threads, V, G] by depth rank
    buf.assign((size_t)n_threads * V * G, 0.f);
    const Splat* splats = st.sorted.data();

    const TileKernels* kern = st.kernels != nullptr ? st.kernels : raster_cpu_select_isa();
    const int32_t* tile_order = st.tile_order.data();
    GT_TOC("bwd setup", t0)

    GT_TIC(t0b)
    // 1. per tile, back to front over each pixel's contributors
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < n_tiles; ++k) {
        const int tile = tile_order[k];
        const int tx0 = (tile % TX) * GT_TILE, ty0 = (tile / TX) * GT_TILE;
        const int tw = std::min(GT_TILE, W - tx0), th = std::min(GT_TILE, H - ty0);
        TileBwdIn tin;
        int32_t max_last = 0;
        for (int r = 0; r < kTile; ++r)
            for (int l = 0; l < kTile; ++l) {
                const int p = r * kTile + l;
                if (r >= th || l >= tw) {  // outside the image: no contributor
                    tin.T_fin[p] = 1.f; tin.v_bg_dot[p] = 0.f; tin.last[p] = 0;
                    tin.vc[0][p] = tin.vc[1][p] = tin.vc[2][p] = 0.f;
                    continue;
                }
                const int64_t pix = (int64_t)(ty0 + r) * W + tx0 + l;
                tin.T_fin[p] = st.T_final[pix];
                tin.last[p] = st.n_contrib[pix];
                max_last = std::max(max_last, tin.last[p]);
                const float* bg = bg_at(in, pix);
                float d = 0.f;
                for (int c = 0; c < 3; ++c) {
                    tin.vc[c][p] = v_image[pix * 3 + c];
                    d += bg[c] * tin.vc[c][p];
                }
                tin.v_bg_dot[p] = d;
            }
        if (max_last == 0) continue;
        float* tbuf = buf.data() + (size_t)thread_id() * V * G;
        kern->backward(splats, st.tile_ids.data() + st.tile_offsets[tile], tx0, ty0, tw, th, tin, tbuf);
    }
    GT_TOC("bwd blend", t0b)

    GT_TIC(t1)
    // 2. background
    if (out.v_background != nullptr && in.bg_mode == 1) {
        double s[3] = {0.0, 0.0, 0.0};
        for (int64_t pix = 0; pix < (int64_t)W * H; ++pix)
            for (int k = 0; k < 3; ++k) s[k] += (double)st.T_final[pix] * v_image[pix * 3 + k];
        for (int k = 0; k < 3; ++k) out.v_background[k] = (float)s[k];
    } else if (out.v_background != nullptr && in.bg_mode == 2) {
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < (int64_t)W * H; ++pix)
            for (int k = 0; k < 3; ++k) out.v_background[pix * 3 + k] = st.T_final[pix] * v_image[pix * 3 + k];
    }

    // 3. per Gaussian, in id order (the outputs are written sequentially; only the small thread
    //    buffers are read by depth rank): reduce the thread buffers, the colour VJP and the 2-D
    //    inputs of the projection VJP (scalar), then the projection VJP (the ISA variant's
    //    vectorised loop) over the same range
    std::vector<int32_t>& rank = st.scratch.rank;
    rank.assign(N, -1);
    for (int j = 0; j < V; ++j) rank[st.order[j]] = j;
    std::vector<float>& aux = st.scratch.vjp_aux;  // [N, 8]: conic, v_mean2d, v_conic
    aux.resize((size_t)N * 8);
    float campos[3];
    gt_camera_center(in.viewmat, campos);
#pragma omp parallel
    {
        const int nt = num_threads(), t = thread_id();
        const int b = (int)((int64_t)N * t / nt), e = (int)((int64_t)N * (t + 1) / nt);
        for (int g = b; g < e; ++g) {
            float* vm = out.v_means + g * 3;
            float* vcol = out.v_colors + (int64_t)g * KB * 3;
            for (int k = 0; k < 3; ++k) vm[k] = out.v_scales[g * 3 + k] = 0.f;
            for (int k = 0; k < 4; ++k) out.v_quats[g * 4 + k] = 0.f;
            for (int k = 0; k < KB * 3; ++k) vcol[k] = 0.f;
            out.v_opacities[g] = 0.f;
            const int j = rank[g];
            if (j < 0) continue;  // culled: zero gradients
            float v[G] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            for (int k = 0; k < n_threads; ++k) {
                const float* src = buf.data() + ((size_t)k * V + j) * G;
                for (int q = 0; q < G; ++q) v[q] += src[q];
            }
            const Splat& s = st.sorted[j];
            float* x = &aux[(size_t)g * 8];
            x[0] = s.a; x[1] = s.b; x[2] = s.c;
            for (int q = 0; q < 5; ++q) x[3 + q] = v[q];
            out.v_opacities[g] = v[5];
            if (in.sh_degree < 0) {
                for (int k = 0; k < 3; ++k) vcol[k] = v[6 + k];
            } else {
                const float* m = in.means + g * 3;
                float dir[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
                gt_sh_to_color_vjp(in.sh_degree, dir, in.colors + (int64_t)g * KB * 3, v + 6, vcol, vm);
            }
        }
        // v_means: + the projection's part (float addition commutes: the same sum as before)
        kern->project_vjp(in, b, e, st.radius.data(), aux.data(), out.v_means, out.v_quats, out.v_scales);
    }
    GT_TOC("bwd vjp", t1)
}

std::vector<std::string> raster_cpu_isas()
{
    std::vector<std::string> names;
    for (const IsaEntry& e : isa_table()) names.push_back(e.kernels->name);
    return names;
}

const TileKernels* raster_cpu_select_isa()
{
    const int cap = isa_cap_from_env("GT_RASTER_ISA");
    for (const IsaEntry& e : isa_table())
        if (e.level <= cap) return e.kernels;
    return tile_kernels_generic();
}

}  // namespace gt
