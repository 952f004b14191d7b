// raster_cpu.cpp: CPU tile rasterizer (OpenMP). Same rules as gsplat's
// rasterization() (antialiased=False): see gt_raster_math.h for the math.
//
// Forward:  project [N] (parallel) -> stable depth sort -> bin into 16x16 tiles
//           (lists stay front to back) -> per tile, Gaussians front to back over the
//           tile's pixels with per-pixel early stop (parallel over tiles).
// Backward: per tile, Gaussians back to front (gsplat's per-pixel order), per-thread
//           gradient buffers reduced per Gaussian, then the projection / SH VJPs.
#include "raster_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gt_raster_math.h"

#ifdef GT_RASTER_TIMING
#include <cstdio>
#define GT_TIC(name) double name = omp_get_wtime();
#define GT_TOC(label, name) fprintf(stderr, "%s: %.2f ms\n", label, 1e3 * (omp_get_wtime() - name));
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

int sh_bases(int degree) { return degree < 0 ? 1 : (degree + 1) * (degree + 1); }

// Background colour of pixel p [3] (black when none).
inline const float* bg_at(const RasterInputs& in, int64_t p)
{
    static const float kBlack[3] = {0.f, 0.f, 0.f};
    if (in.bg_mode == 1) return in.background;
    if (in.bg_mode == 2) return in.background + p * 3;
    return kBlack;
}

// Stable LSD radix sort of ids by (positive float) depth: depth ties keep id order,
// as gsplat's stable radix sort of (tile | depth) keys does.
void sort_by_depth(const std::vector<float>& depth, std::vector<int32_t>& ids)
{
    const size_t n = ids.size();
    std::vector<uint32_t> keys(n), keys2(n);
    std::vector<int32_t> ids2(n);
    for (size_t i = 0; i < n; ++i) {
        uint32_t k;
        std::memcpy(&k, &depth[ids[i]], 4);  // depth >= near > 0: bit order == value order
        keys[i] = k;
    }
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; ++i) count[((keys[i] >> shift) & 255u) + 1]++;
        for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
        for (size_t i = 0; i < n; ++i) {
            size_t dst = count[(keys[i] >> shift) & 255u]++;
            keys2[dst] = keys[i];
            ids2[dst] = ids[i];
        }
        keys.swap(keys2);
        ids.swap(ids2);
    }
}

// Tiles [x0, x1) x [y0, y1) a splat must be listed in: gsplat's radius tiles, narrowed to the
// tiles its alpha-threshold box touches (tiles outside it cannot receive any contribution).
void splat_tiles(const Splat& s, float radius, int tiles_x, int tiles_y, int& x0, int& y0, int& x1, int& y1)
{
    float m2[2] = {s.mx, s.my};
    gt_tile_bounds(m2, radius, tiles_x, tiles_y, &x0, &y0, &x1, &y1);
    // pixels that may pass: [mx - 0.5 - ext, mx - 0.5 + ext] (pixel centre x + 0.5)
    float px0 = floorf(s.mx - 0.5f - s.ext_x), px1 = floorf(s.mx - 0.5f + s.ext_x);
    float py0 = floorf(s.my - 0.5f - s.ext_y), py1 = floorf(s.my - 0.5f + s.ext_y);
    const float lo = -1.f, hx = (float)tiles_x + 1.f, hy = (float)tiles_y + 1.f;  // keep float -> int in range
    x0 = std::max(x0, (int)fminf(fmaxf(floorf(px0 / GT_TILE), lo), hx));
    y0 = std::max(y0, (int)fminf(fmaxf(floorf(py0 / GT_TILE), lo), hy));
    x1 = std::min(x1, (int)fminf(fmaxf(floorf(px1 / GT_TILE) + 1.f, lo), hx));
    y1 = std::min(y1, (int)fminf(fmaxf(floorf(py1 / GT_TILE) + 1.f, lo), hy));
}

// Pixel range [lo, hi] (inclusive) of one axis within [t0, t1) that may pass the alpha threshold.
inline void pixel_span(float m, float ext, int t0, int t1, int& lo, int& hi)
{
    float a = ceilf(m - 0.5f - ext) - 1.f, b = floorf(m - 0.5f + ext) + 1.f;  // +-1 px margin
    lo = (int)fminf(fmaxf(a, (float)t0), (float)t1);        // clamped before the int cast
    hi = (int)fmaxf(fminf(b, (float)(t1 - 1)), (float)(t0 - 1));
}

// exp(x) for x <= 0 by Cephes' expf polynomial (~1 ulp); forward and backward both use it,
// so they make bit-identical alpha decisions.

inline float exp_neg(float x)
{
    x = x > -87.f ? x : -87.f;  // also maps NaN to -87
    float t = x * 1.44269504088896341f + 0.5f;
    int32_t n = (int32_t)t;
    float nf = (float)n;
    if (nf > t) { nf = nf - 1.f; n = n - 1; }  // floor
    x = x - nf * 0.693359375f;
    x = x - nf * -2.12194440e-4f;
    float z = x * x;
    float y = 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * z + x;
    y = y + 1.f;
    int32_t bits = (n + 127) << 23;
    float p2;
    std::memcpy(&p2, &bits, 4);
    return y * p2;
}

// Pixel x-range [lo, hi] of row dy where sigma <= smax can hold (ellipse chord, +-1 px margin),
// clamped to [t0, t1 - 1]. Returns false when the row misses the ellipse.
inline bool row_span(const Splat& s, float dy, int t0, int t1, int& lo, int& hi)
{
    // 0.5 (a dx^2 + 2 b dx dy + c dy^2) <= smax  <=>  a dx^2 + 2 b dy dx + (c dy^2 - 2 smax) <= 0
    const float bq = s.b * dy, disc = bq * bq - s.a * (s.c * dy * dy - 2.f * s.smax);
    if (!(disc >= 0.f)) return disc != disc ? (lo = t0, hi = t1 - 1, true) : false;  // NaN: whole row
    const float r = sqrtf(disc) / s.a, dx0 = -bq / s.a;
    // pixel centre x + 0.5 = mx - dx
    const float xa = s.mx - (dx0 + r) - 0.5f, xb = s.mx - (dx0 - r) - 0.5f;
    lo = (int)fminf(fmaxf(ceilf(xa) - 1.f, (float)t0), (float)t1);
    hi = (int)fmaxf(fminf(floorf(xb) + 1.f, (float)(t1 - 1)), (float)(t0 - 1));
    return lo <= hi;
}

// Front-to-back blending of one tile's list (Gaussian-major, per-pixel early stop).
// T, C, last are [th * tw] pixel arrays of the tile.
void blend_tile(const Splat* splats, const int32_t* ids, int32_t count, int tx0, int ty0, int tw, int th,
                float* T, float (*C)[3], int32_t* last)
{
    unsigned char done[GT_TILE * GT_TILE];
    const int npix = tw * th;
    for (int p = 0; p < npix; ++p) {
        T[p] = 1.f; C[p][0] = C[p][1] = C[p][2] = 0.f; last[p] = 0; done[p] = 0;
    }
    int n_done = 0;
    for (int32_t i = 0; i < count && n_done < npix; ++i) {
        const Splat& s = splats[ids[i]];
        int ylo, yhi;
        pixel_span(s.my, s.ext_y, ty0, ty0 + th, ylo, yhi);
        const float conic[3] = {s.a, s.b, s.c};
        for (int y = ylo; y <= yhi; ++y) {
            const float dy = s.my - ((float)y + 0.5f);
            int xlo, xhi;
            if (!row_span(s, dy, tx0, tx0 + tw, xlo, xhi)) continue;
            const int row = (y - ty0) * tw - tx0;
            for (int x = xlo; x <= xhi; ++x) {
                const int p = row + x;
                if (done[p]) continue;
                const float dx = s.mx - ((float)x + 0.5f);
                const float sigma = gt_sigma(conic, dx, dy);
                if (sigma < 0.f || sigma > s.smax) continue;  // smax: alpha surely < 1/255
                float alpha = s.opacity * exp_neg(-sigma);
                alpha = alpha < GT_MAX_ALPHA ? alpha : GT_MAX_ALPHA;
                if (alpha < GT_ALPHA_THRESHOLD) continue;
                const float next_T = T[p] * (1.f - alpha);
                if (next_T <= GT_T_THRESHOLD) {  // saturated: exclusive of this Gaussian
                    done[p] = 1;
                    ++n_done;
                    continue;
                }
                const float vis = alpha * T[p];
                C[p][0] += s.rgb[0] * vis;
                C[p][1] += s.rgb[1] * vis;
                C[p][2] += s.rgb[2] * vis;
                T[p] = next_T;
                last[p] = i + 1;
            }
        }
    }
}

}  // namespace

void raster_forward_cpu(const RasterInputs& in, float* image, RasterState& st)
{
    const int N = in.N, W = in.width, H = in.height;
    const float fx = in.K[0], fy = in.K[4], cx = in.K[2], cy = in.K[5];
    const int KB = sh_bases(in.sh_degree);
    st.N = N;
    st.width = W;
    st.height = H;
    st.tiles_x = (W + GT_TILE - 1) / GT_TILE;
    st.tiles_y = (H + GT_TILE - 1) / GT_TILE;
    const int TX = st.tiles_x, TY = st.tiles_y, n_tiles = TX * TY;
    st.splats.resize(N);
    st.radius.assign(N, 0.f);
    st.depth.assign(N, 0.f);
    float campos[3];
    gt_camera_center(in.viewmat, campos);

    GT_TIC(t0)
    // 1. project every Gaussian, colour the visible ones
#pragma omp parallel for schedule(static)
    for (int g = 0; g < N; ++g) {
        Splat& s = st.splats[g];
        float m2[2], conic[3], depth, radius;
        if (!gt_project_ewa(in.means + g * 3, in.quats + g * 4, in.scales + g * 3, in.viewmat, fx, fy, cx, cy, W, H,
                            m2, conic, &depth, &radius))
            continue;
        float op = in.opacities[g];
        if (!(op * 255.f >= 1.f)) continue;  // alpha < 1/255 at every pixel: never contributes
        s.mx = m2[0]; s.my = m2[1];
        s.a = conic[0]; s.b = conic[1]; s.c = conic[2];
        s.opacity = op;
        if (in.sh_degree < 0) {
            for (int k = 0; k < 3; ++k) s.rgb[k] = in.colors[g * 3 + k];
        } else {
            const float* m = in.means + g * 3;
            float dir[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
            gt_sh_to_color(in.sh_degree, dir, in.colors + (int64_t)g * KB * 3, s.rgb);
        }
        s.smax = gt_sigma_max(op);
        gt_alpha_extent(conic, op, &s.ext_x, &s.ext_y);
        st.radius[g] = radius;
        st.depth[g] = depth;
    }

    GT_TOC("project", t0)
    GT_TIC(t1)
    // 2. visible ids in stable depth order
    std::vector<int32_t> order;
    order.reserve(N);
    for (int g = 0; g < N; ++g)
        if (st.radius[g] > 0.f) order.push_back(g);
    st.num_visible = (int)order.size();
    sort_by_depth(st.depth, order);

    GT_TOC("sort", t1)
    GT_TIC(t2)
    // 3. bin into tiles; filling in depth order keeps every tile list sorted
    st.tile_offsets.assign(n_tiles + 1, 0);
    std::vector<int32_t> rect(order.size() * 4);
    for (size_t i = 0; i < order.size(); ++i) {
        int g = order[i], x0, y0, x1, y1;
        splat_tiles(st.splats[g], st.radius[g], TX, TY, x0, y0, x1, y1);
        rect[i * 4 + 0] = x0; rect[i * 4 + 1] = y0; rect[i * 4 + 2] = x1; rect[i * 4 + 3] = y1;
        for (int ty = y0; ty < y1; ++ty)
            for (int tx = x0; tx < x1; ++tx) st.tile_offsets[ty * TX + tx + 1]++;
    }
    for (int t = 0; t < n_tiles; ++t) st.tile_offsets[t + 1] += st.tile_offsets[t];
    st.tile_ids.resize(st.tile_offsets[n_tiles]);
    {
        std::vector<int32_t> cursor(st.tile_offsets.begin(), st.tile_offsets.end() - 1);
        for (size_t i = 0; i < order.size(); ++i) {
            const int32_t* r = &rect[i * 4];
            for (int ty = r[1]; ty < r[3]; ++ty)
                for (int tx = r[0]; tx < r[2]; ++tx) st.tile_ids[cursor[ty * TX + tx]++] = order[i];
        }
    }

    GT_TOC("bin", t2)
    GT_TIC(t3)
    // 4. blend, one tile per task
    st.T_final.resize((size_t)W * H);
    st.n_contrib.resize((size_t)W * H);
    const Splat* splats = st.splats.data();
#pragma omp parallel for schedule(dynamic, 1)
    for (int tile = 0; tile < n_tiles; ++tile) {
        const int tx0 = (tile % TX) * GT_TILE, ty0 = (tile / TX) * GT_TILE;
        const int tw = std::min(GT_TILE, W - tx0), th = std::min(GT_TILE, H - ty0);
        float T[GT_TILE * GT_TILE], C[GT_TILE * GT_TILE][3];
        int32_t last[GT_TILE * GT_TILE];
        const int32_t start = st.tile_offsets[tile], end = st.tile_offsets[tile + 1];
        blend_tile(splats, st.tile_ids.data() + start, end - start, tx0, ty0, tw, th, T, C, last);
        for (int r = 0; r < th; ++r)
            for (int l = 0; l < tw; ++l) {
                const int p = r * tw + l;
                const int64_t pix = (int64_t)(ty0 + r) * W + tx0 + l;
                const float* bg = bg_at(in, pix);
                for (int k = 0; k < 3; ++k) image[pix * 3 + k] = C[p][k] + T[p] * bg[k];
                st.T_final[pix] = T[p];
                st.n_contrib[pix] = last[p];
            }
    }
    GT_TOC("blend", t3)
}

void raster_backward_cpu(const RasterInputs& in, const RasterState& st, const float* v_image, RasterGrads& out)
{
    const int N = in.N, W = in.width, H = in.height;
    const int TX = st.tiles_x, TY = st.tiles_y, n_tiles = TX * TY;
    const float fx = in.K[0], fy = in.K[4], cx = in.K[2], cy = in.K[5];
    const int KB = sh_bases(in.sh_degree);
    const int n_threads = max_threads();
    constexpr int G = 9;  // per-Gaussian 2-D grads: mean2d (2), conic (3), opacity (1), rgb (3)
    std::vector<float> buf((size_t)n_threads * N * G, 0.f);
    const Splat* splats = st.splats.data();

    // 1. per tile, back to front over each pixel's contributors
#pragma omp parallel for schedule(dynamic, 1)
    for (int tile = 0; tile < n_tiles; ++tile) {
        float* tbuf = buf.data() + (size_t)thread_id() * N * G;
        const int tx0 = (tile % TX) * GT_TILE, ty0 = (tile / TX) * GT_TILE;
        const int tx1 = std::min(tx0 + GT_TILE, W), ty1 = std::min(ty0 + GT_TILE, H);
        const int tw = tx1 - tx0, th = ty1 - ty0, npix = tw * th;
        float T[GT_TILE * GT_TILE], acc[GT_TILE * GT_TILE][3], vc[GT_TILE * GT_TILE][3];
        float T_fin[GT_TILE * GT_TILE], v_bg_dot[GT_TILE * GT_TILE];
        int32_t last[GT_TILE * GT_TILE];
        int32_t max_last = 0;
        for (int p = 0; p < npix; ++p) {
            const int64_t pix = (int64_t)(ty0 + p / tw) * W + tx0 + p % tw;
            T[p] = T_fin[p] = st.T_final[pix];
            last[p] = st.n_contrib[pix];
            max_last = std::max(max_last, last[p]);
            const float* bg = bg_at(in, pix);
            float d = 0.f;
            for (int k = 0; k < 3; ++k) {
                vc[p][k] = v_image[pix * 3 + k];
                acc[p][k] = 0.f;
                d += bg[k] * vc[p][k];
            }
            v_bg_dot[p] = d;
        }
        const int32_t start = st.tile_offsets[tile];
        for (int32_t i = max_last - 1; i >= 0; --i) {
            const int32_t g = st.tile_ids[start + i];
            const Splat& s = splats[g];
            int ylo, yhi;
            pixel_span(s.my, s.ext_y, ty0, ty1, ylo, yhi);
            const float conic[3] = {s.a, s.b, s.c};
            float v_m2[2] = {0.f, 0.f}, v_con[3] = {0.f, 0.f, 0.f}, v_op = 0.f, v_rgb[3] = {0.f, 0.f, 0.f};
            bool touched = false;
            for (int y = ylo; y <= yhi; ++y) {
                const float dy = s.my - ((float)y + 0.5f);
                int xlo, xhi;
                if (!row_span(s, dy, tx0, tx1, xlo, xhi)) continue;
                const int row = (y - ty0) * tw - tx0;
                for (int x = xlo; x <= xhi; ++x) {
                    const int p = row + x;
                    if (i >= last[p]) continue;  // behind this pixel's last contributor
                    const float dx = s.mx - ((float)x + 0.5f);
                    const float sigma = gt_sigma(conic, dx, dy);
                    if (sigma < 0.f || sigma > s.smax) continue;
                    const float vis = exp_neg(-sigma);  // same exp as the forward
                    float alpha = s.opacity * vis;
                    alpha = alpha < GT_MAX_ALPHA ? alpha : GT_MAX_ALPHA;
                    if (alpha < GT_ALPHA_THRESHOLD) continue;
                    touched = true;
                    // T before this Gaussian, from T after it
                    const float ra = 1.f / fmaxf(GT_MIN_ONE_MINUS_ALPHA, 1.f - alpha);
                    T[p] *= ra;
                    const float fac = alpha * T[p];
                    float v_alpha = 0.f;
                    for (int k = 0; k < 3; ++k) {
                        v_rgb[k] += fac * vc[p][k];
                        v_alpha += (s.rgb[k] * T[p] - acc[p][k] * ra) * vc[p][k];
                    }
                    v_alpha += -T_fin[p] * ra * v_bg_dot[p];  // through the background's weight T_final
                    gt_alpha_vjp(conic, dx, dy, s.opacity, vis, v_alpha, v_con, v_m2, &v_op);
                    for (int k = 0; k < 3; ++k) acc[p][k] += s.rgb[k] * fac;
                }
            }
            if (touched) {
                float* o = tbuf + (size_t)g * G;
                o[0] += v_m2[0]; o[1] += v_m2[1];
                o[2] += v_con[0]; o[3] += v_con[1]; o[4] += v_con[2];
                o[5] += v_op;
                o[6] += v_rgb[0]; o[7] += v_rgb[1]; o[8] += v_rgb[2];
            }
        }
    }

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

    // 3. per Gaussian: reduce thread buffers, then projection and colour VJPs
    float campos[3];
    gt_camera_center(in.viewmat, campos);
#pragma omp parallel for schedule(static)
    for (int g = 0; g < N; ++g) {
        float* vm = out.v_means + g * 3;
        float* vq = out.v_quats + g * 4;
        float* vs = out.v_scales + g * 3;
        float* vcol = out.v_colors + (int64_t)g * KB * 3;
        for (int k = 0; k < 3; ++k) vm[k] = vs[k] = 0.f;
        for (int k = 0; k < 4; ++k) vq[k] = 0.f;
        for (int k = 0; k < KB * 3; ++k) vcol[k] = 0.f;
        out.v_opacities[g] = 0.f;
        if (!(st.radius[g] > 0.f)) continue;
        float v[G] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int t = 0; t < n_threads; ++t) {
            const float* b = buf.data() + ((size_t)t * N + g) * G;
            for (int k = 0; k < G; ++k) v[k] += b[k];
        }
        const Splat& s = splats[g];
        const float conic[3] = {s.a, s.b, s.c};
        gt_project_ewa_vjp(in.means + g * 3, in.quats + g * 4, in.scales + g * 3, in.viewmat, fx, fy, cx, cy, W, H,
                           conic, v, v + 2, vm, vq, vs);
        out.v_opacities[g] = v[5];
        if (in.sh_degree < 0) {
            for (int k = 0; k < 3; ++k) vcol[k] = v[6 + k];
        } else {
            const float* m = in.means + g * 3;
            float dir[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
            gt_sh_to_color_vjp(in.sh_degree, dir, in.colors + (int64_t)g * KB * 3, v + 6, vcol, vm);
        }
    }
}

}  // namespace gt
