// gt_raster_math.h: 3D Gaussian splatting math shared by the C++ (CPU, OpenMP)
// and the CUDA rasterizer. Plain C++ with float math only (no STL), so that the
// same text compiles with g++ and nvcc (every function is GT_HD).
//
// Conventions follow gsplat's rasterization() (antialiased=False, packed=False):
//   means  [N, 3] world, quats [N, 4] wxyz (normalised here), scales [N, 3] linear,
//   opacities [N] in [0, 1], colors [N, 3] or SH [N, K, 3], K = (deg + 1)^2.
//   viewmat [4, 4] row-major world -> camera (OpenCV: x right, y down, z forward).
//   K [3, 3] pinhole: fx = K[0], fy = K[4], cx = K[2], cy = K[5].
// Matrices are row-major float arrays: mat3 = float[9], 2x2 symmetric = float[3]
// stored as (xx, xy, yy). Pixel (x, y) has its centre at (x + 0.5, y + 0.5).
// Every *_vjp function ACCUMULATES (+=) into its v_* outputs; callers zero them.
//
// Functions (all GT_HD):
//   float gt_minf(float a, float b), gt_maxf(float a, float b)   (a when b is NaN)
//   void  gt_quat_to_rotmat(const float* quat /*[4]*/, float* R /*[9]*/)
//   void  gt_quat_to_rotmat_vjp(const float* quat, const float* v_R /*[9]*/, float* v_quat /*[4]*/)
//   void  gt_quat_scale_to_covar(const float* quat, const float* scale /*[3]*/, float* covar /*[9]*/)
//   void  gt_quat_scale_to_covar_vjp(const float* quat, const float* scale, const float* v_covar /*[9]*/,
//                                    float* v_quat /*[4]*/, float* v_scale /*[3]*/)
//   void  gt_pos_world_to_cam(const float* viewmat /*[16]*/, const float* p /*[3]*/, float* p_c /*[3]*/)
//   void  gt_pos_world_to_cam_vjp(const float* viewmat, const float* v_p_c /*[3]*/, float* v_p /*[3]*/)
//   void  gt_covar_world_to_cam(const float* viewmat, const float* covar /*[9]*/, float* covar_c /*[9]*/)
//   void  gt_covar_world_to_cam_vjp(const float* viewmat, const float* v_covar_c /*[9]*/, float* v_covar /*[9]*/)
//   void  gt_camera_center(const float* viewmat, float* campos /*[3]*/)
//   void  gt_persp_proj(const float* mean_c /*[3]*/, const float* covar_c /*[9]*/, float fx, float fy,
//                       float cx, float cy, int width, int height, float* cov2d /*[3]*/, float* mean2d /*[2]*/)
//   void  gt_persp_proj_vjp(const float* mean_c, const float* covar_c, float fx, float fy, float cx, float cy,
//                           int width, int height, const float* v_cov2d /*[3]*/, const float* v_mean2d /*[2]*/,
//                           float* v_mean_c /*[3]*/, float* v_covar_c /*[9]*/)
//   float gt_add_blur(float* cov2d /*[3]*/)                      -> det after the 0.3 px dilation
//   void  gt_conic(const float* cov2d /*[3]*/, float det, float* conic /*[3]*/)
//   void  gt_conic_vjp(const float* conic /*[3]*/, const float* v_conic /*[3]*/, float* v_cov2d /*[3]*/)
//   float gt_radius(const float* cov2d /*[3]*/, float det)       -> ceil(3 sqrt(max eigenvalue))
//   bool  gt_offscreen(const float* mean2d, float radius, int width, int height)
//   void  gt_tile_bounds(const float* mean2d, float radius, int tiles_x, int tiles_y,
//                        int* tx0, int* ty0, int* tx1, int* ty1)  (min inclusive, max exclusive)
//   bool  gt_project_ewa(const float* mean, const float* quat, const float* scale, const float* viewmat,
//                        float fx, float fy, float cx, float cy, int width, int height,
//                        float* mean2d /*[2]*/, float* conic /*[3]*/, float* depth, float* radius)
//   void  gt_project_ewa_vjp(const float* mean, const float* quat, const float* scale, const float* viewmat,
//                            float fx, float fy, float cx, float cy, int width, int height,
//                            const float* conic, const float* v_mean2d /*[2]*/, const float* v_conic /*[3]*/,
//                            float* v_mean /*[3]*/, float* v_quat /*[4]*/, float* v_scale /*[3]*/)
//   void  gt_sh_basis(int degree, const float* dir_n /*[3] unit*/, float* basis /*[K]*/)
//   void  gt_sh_to_color(int degree, const float* dir /*[3]*/, const float* coeffs /*[K, 3]*/, float* rgb /*[3]*/)
//   void  gt_sh_to_color_vjp(int degree, const float* dir, const float* coeffs, const float* v_rgb /*[3]*/,
//                            float* v_coeffs /*[K, 3]*/, float* v_dir /*[3]*/)   (v_dir may be nullptr)
//   float gt_sigma(const float* conic /*[3]*/, float dx, float dy)   (dx, dy = mean2d - pixel centre)
//   bool  gt_eval_alpha(const float* conic, float dx, float dy, float opacity, float* alpha, float* vis)
//   float gt_sigma_max(float opacity)          -> sigma above which alpha < 1/255 for sure
//   void  gt_alpha_extent(const float* conic, float opacity, float* ext_x, float* ext_y)
//   void  gt_alpha_vjp(const float* conic, float dx, float dy, float opacity, float vis, float v_alpha,
//                      float* v_conic /*[3]*/, float* v_mean2d /*[2]*/, float* v_opacity)
#pragma once

#ifdef __CUDACC__
#define GT_HD __host__ __device__ __forceinline__
#else
#include <math.h>
// A translation unit compiled with other -m flags defines GT_HD as `static inline` first, so that
// its copies of these functions never stand in for the baseline ones at link time.
#ifndef GT_HD
#define GT_HD inline
#endif
#endif
// Fast exp on the device (as gsplat), libm expf on the host.
#ifdef __CUDA_ARCH__
#define GT_EXPF(x) __expf(x)
#else
#define GT_EXPF(x) expf(x)
#endif

// gsplat constants (csrc Common.h and rasterization() defaults).
#define GT_TILE 16                       // tile side in pixels
#define GT_NEAR 0.01f                    // near plane (camera z)
#define GT_FAR 1e10f                     // far plane (camera z)
#define GT_EPS2D 0.3f                    // low-pass dilation added to cov2d's diagonal
#define GT_MAX_ALPHA 0.99f               // alpha clamp
#define GT_ALPHA_THRESHOLD (1.f / 255.f) // alpha below this is skipped
#define GT_T_THRESHOLD 1e-4f             // stop when next T would be <= this
#define GT_MIN_ONE_MINUS_ALPHA 1e-6f     // backward: guard for 1 / (1 - alpha)

// Real SH constants as in gsplat's spherical_harmonics (Sloan, JCGT 2013).
#define GT_SH_C0 0.28209479177387814f
#define GT_SH_C1 0.48860251190292f

///////////////////////////////
// Quaternion, covariance
///////////////////////////////

// min / max that return a when b is NaN, like fminf / fmaxf with the NaN second. Plain compares, so
// that loops over these functions vectorise on the CPU (fminf / fmaxf do not, for their NaN rules).
GT_HD float gt_minf(float a, float b) { return b < a ? b : a; }
GT_HD float gt_maxf(float a, float b) { return b > a ? b : a; }

// quat [4] wxyz (any norm > 0) -> R [9] row-major rotation.
GT_HD void gt_quat_to_rotmat(const float* quat, float* R)
{
    float w = quat[0], x = quat[1], y = quat[2], z = quat[3];
    float inv_norm = 1.f / sqrtf(w * w + x * x + y * y + z * z);
    w *= inv_norm; x *= inv_norm; y *= inv_norm; z *= inv_norm;
    float x2 = x * x, y2 = y * y, z2 = z * z;
    float xy = x * y, xz = x * z, yz = y * z;
    float wx = w * x, wy = w * y, wz = w * z;
    R[0] = 1.f - 2.f * (y2 + z2); R[1] = 2.f * (xy - wz);       R[2] = 2.f * (xz + wy);
    R[3] = 2.f * (xy + wz);       R[4] = 1.f - 2.f * (x2 + z2); R[5] = 2.f * (yz - wx);
    R[6] = 2.f * (xz - wy);       R[7] = 2.f * (yz + wx);       R[8] = 1.f - 2.f * (x2 + y2);
}

// VJP of gt_quat_to_rotmat through the normalisation: v_R [9] -> v_quat [4] (+=).
GT_HD void gt_quat_to_rotmat_vjp(const float* quat, const float* v_R, float* v_quat)
{
    float w = quat[0], x = quat[1], y = quat[2], z = quat[3];
    float inv_norm = 1.f / sqrtf(w * w + x * x + y * y + z * z);
    w *= inv_norm; x *= inv_norm; y *= inv_norm; z *= inv_norm;
    const float* G = v_R;  // G[r * 3 + c] = dL / dR[r][c]
    float vw = 2.f * (x * (G[7] - G[5]) + y * (G[2] - G[6]) + z * (G[3] - G[1]));
    float vx = 2.f * (-2.f * x * (G[4] + G[8]) + y * (G[3] + G[1]) + z * (G[6] + G[2]) + w * (G[7] - G[5]));
    float vy = 2.f * (x * (G[3] + G[1]) - 2.f * y * (G[0] + G[8]) + z * (G[7] + G[5]) + w * (G[2] - G[6]));
    float vz = 2.f * (x * (G[6] + G[2]) + y * (G[7] + G[5]) - 2.f * z * (G[0] + G[4]) + w * (G[3] - G[1]));
    // project out the radial part: d(q / |q|) / dq = (I - n n^T) / |q|
    float d = vw * w + vx * x + vy * y + vz * z;
    v_quat[0] += (vw - d * w) * inv_norm;
    v_quat[1] += (vx - d * x) * inv_norm;
    v_quat[2] += (vy - d * y) * inv_norm;
    v_quat[3] += (vz - d * z) * inv_norm;
}

// covar [9] = R S S R^T, with M = R S (S = diag(scale)).
GT_HD void gt_quat_scale_to_covar(const float* quat, const float* scale, float* covar)
{
    float R[9], M[9];
    gt_quat_to_rotmat(quat, R);
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) M[r * 3 + c] = R[r * 3 + c] * scale[c];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            covar[r * 3 + c] = M[r * 3 + 0] * M[c * 3 + 0] + M[r * 3 + 1] * M[c * 3 + 1] + M[r * 3 + 2] * M[c * 3 + 2];
}

// VJP of gt_quat_scale_to_covar: v_covar [9] -> v_quat [4], v_scale [3] (+=).
GT_HD void gt_quat_scale_to_covar_vjp(const float* quat, const float* scale, const float* v_covar,
                                      float* v_quat, float* v_scale)
{
    float R[9], M[9], vM[9], vR[9];
    gt_quat_to_rotmat(quat, R);
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) M[r * 3 + c] = R[r * 3 + c] * scale[c];
    // D = M M^T: dL/dM = (G + G^T) M
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) {
            float s = 0.f;
            for (int k = 0; k < 3; ++k) s += (v_covar[r * 3 + k] + v_covar[k * 3 + r]) * M[k * 3 + c];
            vM[r * 3 + c] = s;
        }
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) vR[r * 3 + c] = vM[r * 3 + c] * scale[c];
    gt_quat_to_rotmat_vjp(quat, vR, v_quat);
    for (int c = 0; c < 3; ++c)
        v_scale[c] += R[0 * 3 + c] * vM[0 * 3 + c] + R[1 * 3 + c] * vM[1 * 3 + c] + R[2 * 3 + c] * vM[2 * 3 + c];
}

///////////////////////////////
// World -> camera
///////////////////////////////

// p_c [3] = R p + t, with [R | t] the top 3 rows of viewmat [16] (row-major).
GT_HD void gt_pos_world_to_cam(const float* viewmat, const float* p, float* p_c)
{
    for (int r = 0; r < 3; ++r)
        p_c[r] = viewmat[r * 4 + 0] * p[0] + viewmat[r * 4 + 1] * p[1] + viewmat[r * 4 + 2] * p[2] + viewmat[r * 4 + 3];
}

// v_p [3] += R^T v_p_c
GT_HD void gt_pos_world_to_cam_vjp(const float* viewmat, const float* v_p_c, float* v_p)
{
    for (int c = 0; c < 3; ++c)
        v_p[c] += viewmat[0 * 4 + c] * v_p_c[0] + viewmat[1 * 4 + c] * v_p_c[1] + viewmat[2 * 4 + c] * v_p_c[2];
}

// covar_c [9] = R covar R^T
GT_HD void gt_covar_world_to_cam(const float* viewmat, const float* covar, float* covar_c)
{
    float RC[9];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            RC[r * 3 + c] = viewmat[r * 4 + 0] * covar[0 * 3 + c] + viewmat[r * 4 + 1] * covar[1 * 3 + c] +
                            viewmat[r * 4 + 2] * covar[2 * 3 + c];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            covar_c[r * 3 + c] = RC[r * 3 + 0] * viewmat[c * 4 + 0] + RC[r * 3 + 1] * viewmat[c * 4 + 1] +
                                 RC[r * 3 + 2] * viewmat[c * 4 + 2];
}

// v_covar [9] += R^T v_covar_c R
GT_HD void gt_covar_world_to_cam_vjp(const float* viewmat, const float* v_covar_c, float* v_covar)
{
    float GR[9];  // v_covar_c R
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            GR[r * 3 + c] = v_covar_c[r * 3 + 0] * viewmat[0 * 4 + c] + v_covar_c[r * 3 + 1] * viewmat[1 * 4 + c] +
                            v_covar_c[r * 3 + 2] * viewmat[2 * 4 + c];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            v_covar[r * 3 + c] += viewmat[0 * 4 + r] * GR[0 * 3 + c] + viewmat[1 * 4 + r] * GR[1 * 3 + c] +
                                  viewmat[2 * 4 + r] * GR[2 * 3 + c];
}

// campos [3] = -R^T t: the camera centre in world space (SH view direction origin).
GT_HD void gt_camera_center(const float* viewmat, float* campos)
{
    for (int c = 0; c < 3; ++c)
        campos[c] = -(viewmat[0 * 4 + c] * viewmat[3] + viewmat[1 * 4 + c] * viewmat[7] + viewmat[2 * 4 + c] * viewmat[11]);
}

///////////////////////////////
// EWA perspective projection (gsplat persp_proj)
///////////////////////////////

// Clamp limits of x/z, y/z: 1.3x the half-fov on each side (gsplat's persp_proj).
GT_HD void gt_proj_limits(float fx, float fy, float cx, float cy, int width, int height, float* lim)
{
    float tan_fovx = 0.5f * (float)width / fx;
    float tan_fovy = 0.5f * (float)height / fy;
    lim[0] = ((float)width - cx) / fx + 0.3f * tan_fovx;   // x pos
    lim[1] = cx / fx + 0.3f * tan_fovx;                    // x neg
    lim[2] = ((float)height - cy) / fy + 0.3f * tan_fovy;  // y pos
    lim[3] = cy / fy + 0.3f * tan_fovy;                    // y neg
}

// Jacobian J [2, 3] row-major of the pinhole projection at mean_c, with tx/tz, ty/tz clamped.
GT_HD void gt_proj_jacobian(const float* mean_c, float fx, float fy, float cx, float cy, int width, int height,
                            float* J, float* tx, float* ty)
{
    float lim[4];
    gt_proj_limits(fx, fy, cx, cy, width, height, lim);
    float x = mean_c[0], y = mean_c[1], z = mean_c[2];
    float rz = 1.f / z;
    float rz2 = rz * rz;
    *tx = z * gt_minf(lim[0], gt_maxf(-lim[1], x * rz));
    *ty = z * gt_minf(lim[2], gt_maxf(-lim[3], y * rz));
    J[0] = fx * rz; J[1] = 0.f;     J[2] = -fx * (*tx) * rz2;
    J[3] = 0.f;     J[4] = fy * rz; J[5] = -fy * (*ty) * rz2;
}

// mean_c [3], covar_c [9] camera space -> cov2d [3] (xx, xy, yy) = J covar_c J^T, mean2d [2] pixels.
GT_HD void gt_persp_proj(const float* mean_c, const float* covar_c, float fx, float fy, float cx, float cy,
                         int width, int height, float* cov2d, float* mean2d)
{
    float J[6], tx, ty;
    gt_proj_jacobian(mean_c, fx, fy, cx, cy, width, height, J, &tx, &ty);
    float JC[6];  // J covar_c [2, 3]
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 3; ++c)
            JC[r * 3 + c] = J[r * 3 + 0] * covar_c[0 * 3 + c] + J[r * 3 + 1] * covar_c[1 * 3 + c] +
                            J[r * 3 + 2] * covar_c[2 * 3 + c];
    cov2d[0] = JC[0] * J[0] + JC[1] * J[1] + JC[2] * J[2];
    cov2d[1] = JC[0] * J[3] + JC[1] * J[4] + JC[2] * J[5];
    cov2d[2] = JC[3] * J[3] + JC[4] * J[4] + JC[5] * J[5];
    float rz = 1.f / mean_c[2];
    mean2d[0] = fx * mean_c[0] * rz + cx;
    mean2d[1] = fy * mean_c[1] * rz + cy;
}

// VJP of gt_persp_proj. v_cov2d [3] = (G_xx, G_xy, G_yy) of a symmetric gradient G (G_xy = G_yx).
// Accumulates v_mean_c [3] and v_covar_c [9]. Mirrors gsplat persp_proj_vjp (incl. the clamp).
GT_HD void gt_persp_proj_vjp(const float* mean_c, const float* covar_c, float fx, float fy, float cx, float cy,
                             int width, int height, const float* v_cov2d, const float* v_mean2d,
                             float* v_mean_c, float* v_covar_c)
{
    float lim[4];
    gt_proj_limits(fx, fy, cx, cy, width, height, lim);
    float J[6], tx, ty;
    gt_proj_jacobian(mean_c, fx, fy, cx, cy, width, height, J, &tx, &ty);
    float x = mean_c[0], y = mean_c[1], z = mean_c[2];
    float rz = 1.f / z, rz2 = rz * rz, rz3 = rz2 * rz;
    float G[4] = {v_cov2d[0], v_cov2d[1], v_cov2d[1], v_cov2d[2]};
    // v_covar_c += J^T G J
    float GJ[6];  // G J [2, 3]
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 3; ++c) GJ[r * 3 + c] = G[r * 2 + 0] * J[0 * 3 + c] + G[r * 2 + 1] * J[1 * 3 + c];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) v_covar_c[r * 3 + c] += J[0 * 3 + r] * GJ[0 * 3 + c] + J[1 * 3 + r] * GJ[1 * 3 + c];
    v_mean_c[0] += fx * rz * v_mean2d[0];
    v_mean_c[1] += fy * rz * v_mean2d[1];
    v_mean_c[2] += -(fx * x * v_mean2d[0] + fy * y * v_mean2d[1]) * rz2;
    // v_J = G J C^T + G^T J C = 2 G J C (G, C symmetric)  [2, 3]
    float vJ[6];
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 3; ++c)
            vJ[r * 3 + c] = 2.f * (GJ[r * 3 + 0] * covar_c[0 * 3 + c] + GJ[r * 3 + 1] * covar_c[1 * 3 + c] +
                                   GJ[r * 3 + 2] * covar_c[2 * 3 + c]);
    // fov clipping: a clamped tx/tz does not depend on x (resp. y)
    if (x * rz <= lim[0] && x * rz >= -lim[1]) v_mean_c[0] += -fx * rz2 * vJ[2];
    else v_mean_c[2] += -fx * rz3 * vJ[2] * tx;
    if (y * rz <= lim[2] && y * rz >= -lim[3]) v_mean_c[1] += -fy * rz2 * vJ[5];
    else v_mean_c[2] += -fy * rz3 * vJ[5] * ty;
    v_mean_c[2] += -fx * rz2 * vJ[0] - fy * rz2 * vJ[4] + 2.f * fx * tx * rz3 * vJ[2] + 2.f * fy * ty * rz3 * vJ[5];
}

///////////////////////////////
// 2-D covariance -> conic, radius, tiles
///////////////////////////////

// Adds the 0.3 px low-pass dilation to cov2d [3] in place; returns its determinant.
GT_HD float gt_add_blur(float* cov2d)
{
    cov2d[0] += GT_EPS2D;
    cov2d[2] += GT_EPS2D;
    return cov2d[0] * cov2d[2] - cov2d[1] * cov2d[1];
}

// conic [3] = inverse of cov2d [3] (det > 0), as gsplat: entries times 1 / det.
GT_HD void gt_conic(const float* cov2d, float det, float* conic)
{
    float inv_det = 1.f / det;
    conic[0] = cov2d[2] * inv_det;
    conic[1] = -cov2d[1] * inv_det;
    conic[2] = cov2d[0] * inv_det;
}

// VJP of the 2x2 inverse. v_conic [3] is the rasterizer's gradient, in which conic[1] is one
// scalar (the dx dy coefficient), so the symmetric matrix gradient holds v_conic[1] / 2 twice.
// v_cov2d [3] += symmetric (xx, xy, yy) of -P G P, P = conic.
GT_HD void gt_conic_vjp(const float* conic, const float* v_conic, float* v_cov2d)
{
    float a = conic[0], b = conic[1], c = conic[2];
    float g0 = v_conic[0], g1 = 0.5f * v_conic[1], g2 = v_conic[2];
    // P G = [[a g0 + b g1, a g1 + b g2], [b g0 + c g1, b g1 + c g2]]
    float pg00 = a * g0 + b * g1, pg01 = a * g1 + b * g2;
    float pg10 = b * g0 + c * g1, pg11 = b * g1 + c * g2;
    v_cov2d[0] += -(pg00 * a + pg01 * b);
    v_cov2d[1] += -(pg00 * b + pg01 * c);
    v_cov2d[2] += -(pg10 * b + pg11 * c);
}

// 3-sigma radius in pixels of the dilated cov2d [3] (gsplat <= 1.4 rule, 0.01 floor).
GT_HD float gt_radius(const float* cov2d, float det)
{
    float b = 0.5f * (cov2d[0] + cov2d[2]);
    float v1 = b + sqrtf(gt_maxf(0.01f, b * b - det));
    return ceilf(3.f * sqrtf(v1));
}

// True if the radius box around mean2d [2] misses the image.
GT_HD bool gt_offscreen(const float* mean2d, float radius, int width, int height)
{
    return (mean2d[0] + radius <= 0.f) | (mean2d[0] - radius >= (float)width) |  // | : no branches
           (mean2d[1] + radius <= 0.f) | (mean2d[1] - radius >= (float)height);
}

// Tiles [tx0, tx1) x [ty0, ty1) touched by the radius box (gsplat isect_tiles), clamped to the grid.
GT_HD void gt_tile_bounds(const float* mean2d, float radius, int tiles_x, int tiles_y,
                          int* tx0, int* ty0, int* tx1, int* ty1)
{
    float tr = radius / (float)GT_TILE;
    float tx = mean2d[0] / (float)GT_TILE, ty = mean2d[1] / (float)GT_TILE;
    *tx0 = (int)fminf(fmaxf(floorf(tx - tr), 0.f), (float)tiles_x);
    *ty0 = (int)fminf(fmaxf(floorf(ty - tr), 0.f), (float)tiles_y);
    *tx1 = (int)fminf(fmaxf(ceilf(tx + tr), 0.f), (float)tiles_x);
    *ty1 = (int)fminf(fmaxf(ceilf(ty + tr), 0.f), (float)tiles_y);
}

///////////////////////////////
// Whole projection of one Gaussian
///////////////////////////////

// mean [3], quat [4], scale [3] world; viewmat [16] -> mean2d [2], conic [3], depth, radius.
// Returns false (radius = 0) when culled: z outside [near, far], det <= 0, non-finite,
// radius <= 0, or the radius box fully off-screen. One exit and no early return, so that a CPU
// loop over it vectorises: every output is computed, and a culled Gaussian's mean2d, conic and
// depth are meaningless.
GT_HD bool gt_project_ewa(const float* mean, const float* quat, const float* scale, const float* viewmat,
                          float fx, float fy, float cx, float cy, int width, int height,
                          float* mean2d, float* conic, float* depth, float* radius)
{
    float mean_c[3], covar[9], covar_c[9], cov2d[3];
    gt_pos_world_to_cam(viewmat, mean, mean_c);
    gt_quat_scale_to_covar(quat, scale, covar);
    gt_covar_world_to_cam(viewmat, covar, covar_c);
    gt_persp_proj(mean_c, covar_c, fx, fy, cx, cy, width, height, cov2d, mean2d);
    float det = gt_add_blur(cov2d);
    gt_conic(cov2d, det, conic);
    float r = gt_radius(cov2d, det);
    // & instead of &&: no branches. The compares also reject NaN.
    bool ok = (mean_c[2] >= GT_NEAR) & (mean_c[2] <= GT_FAR);
    ok = ok & (det > 0.f) & (det < 3.0e38f);  // degenerate or overflowed (inf / NaN)
    ok = ok & (r > 0.f) & (r < 3.0e38f);
    ok = ok & (mean2d[0] == mean2d[0]) & (mean2d[1] == mean2d[1]);  // NaN mean
    ok = ok & !gt_offscreen(mean2d, r, width, height);
    *depth = mean_c[2];
    *radius = ok ? r : 0.f;
    return ok;
}

// VJP of gt_project_ewa for a visible Gaussian. conic [3] is the forward output;
// v_mean2d [2], v_conic [3] -> v_mean [3], v_quat [4], v_scale [3] (+=).
GT_HD void gt_project_ewa_vjp(const float* mean, const float* quat, const float* scale, const float* viewmat,
                              float fx, float fy, float cx, float cy, int width, int height,
                              const float* conic, const float* v_mean2d, const float* v_conic,
                              float* v_mean, float* v_quat, float* v_scale)
{
    float v_cov2d[3] = {0.f, 0.f, 0.f};
    gt_conic_vjp(conic, v_conic, v_cov2d);  // the dilation is additive: same gradient before it
    float mean_c[3], covar[9], covar_c[9];
    gt_pos_world_to_cam(viewmat, mean, mean_c);
    gt_quat_scale_to_covar(quat, scale, covar);
    gt_covar_world_to_cam(viewmat, covar, covar_c);
    float v_mean_c[3] = {0.f, 0.f, 0.f};
    float v_covar_c[9] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    gt_persp_proj_vjp(mean_c, covar_c, fx, fy, cx, cy, width, height, v_cov2d, v_mean2d, v_mean_c, v_covar_c);
    gt_pos_world_to_cam_vjp(viewmat, v_mean_c, v_mean);
    float v_covar[9] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    gt_covar_world_to_cam_vjp(viewmat, v_covar_c, v_covar);
    gt_quat_scale_to_covar_vjp(quat, scale, v_covar, v_quat, v_scale);
}

///////////////////////////////
// Spherical harmonics (degree 0..3)
///////////////////////////////

// basis [K], K = (degree + 1)^2, at the unit direction dir_n [3].
GT_HD void gt_sh_basis(int degree, const float* dir_n, float* basis)
{
    float x = dir_n[0], y = dir_n[1], z = dir_n[2];
    basis[0] = GT_SH_C0;
    if (degree < 1) return;
    basis[1] = -GT_SH_C1 * y;
    basis[2] = GT_SH_C1 * z;
    basis[3] = -GT_SH_C1 * x;
    if (degree < 2) return;
    float z2 = z * z;
    float fTmp0B = -1.092548430592079f * z;
    float fC1 = x * x - y * y;
    float fS1 = 2.f * x * y;
    basis[4] = 0.5462742152960395f * fS1;
    basis[5] = fTmp0B * y;
    basis[6] = 0.9461746957575601f * z2 - 0.3153915652525201f;
    basis[7] = fTmp0B * x;
    basis[8] = 0.5462742152960395f * fC1;
    if (degree < 3) return;
    float fTmp0C = -2.285228997322329f * z2 + 0.4570457994644658f;
    float fTmp1B = 1.445305721320277f * z;
    float fC2 = x * fC1 - y * fS1;
    float fS2 = x * fS1 + y * fC1;
    basis[9] = -0.5900435899266435f * fS2;
    basis[10] = fTmp1B * fS1;
    basis[11] = fTmp0C * y;
    basis[12] = z * (1.865881662950577f * z2 - 1.119528997770346f);
    basis[13] = fTmp0C * x;
    basis[14] = fTmp1B * fC1;
    basis[15] = -0.5900435899266435f * fC2;
}

// d basis / d (x, y, z) for each basis function: dB [K, 3] at the unit direction dir_n [3].
GT_HD void gt_sh_basis_grad(int degree, const float* dir_n, float* dB)
{
    float x = dir_n[0], y = dir_n[1], z = dir_n[2];
    int K = (degree + 1) * (degree + 1);
    for (int i = 0; i < K * 3; ++i) dB[i] = 0.f;
    if (degree < 1) return;
    dB[1 * 3 + 1] = -GT_SH_C1;
    dB[2 * 3 + 2] = GT_SH_C1;
    dB[3 * 3 + 0] = -GT_SH_C1;
    if (degree < 2) return;
    const float k4 = 0.5462742152960395f, k5 = -1.092548430592079f;
    float fC1 = x * x - y * y, fS1 = 2.f * x * y;
    dB[4 * 3 + 0] = k4 * 2.f * y;   dB[4 * 3 + 1] = k4 * 2.f * x;
    dB[5 * 3 + 1] = k5 * z;         dB[5 * 3 + 2] = k5 * y;
    dB[6 * 3 + 2] = 2.f * 0.9461746957575601f * z;
    dB[7 * 3 + 0] = k5 * z;         dB[7 * 3 + 2] = k5 * x;
    dB[8 * 3 + 0] = k4 * 2.f * x;   dB[8 * 3 + 1] = -k4 * 2.f * y;
    if (degree < 3) return;
    const float k9 = -0.5900435899266435f, k10 = 1.445305721320277f;
    float z2 = z * z;
    float fTmp0C = -2.285228997322329f * z2 + 0.4570457994644658f, fTmp0C_z = -2.f * 2.285228997322329f * z;
    // fC2 = x^3 - 3 x y^2, fS2 = 3 x^2 y - y^3
    float fC2_x = 3.f * fC1, fC2_y = -3.f * fS1;
    float fS2_x = 3.f * fS1, fS2_y = 3.f * fC1;
    dB[9 * 3 + 0] = k9 * fS2_x;           dB[9 * 3 + 1] = k9 * fS2_y;
    dB[10 * 3 + 0] = k10 * z * 2.f * y;   dB[10 * 3 + 1] = k10 * z * 2.f * x;   dB[10 * 3 + 2] = k10 * fS1;
    dB[11 * 3 + 1] = fTmp0C;              dB[11 * 3 + 2] = fTmp0C_z * y;
    dB[12 * 3 + 2] = 3.f * 1.865881662950577f * z2 - 1.119528997770346f;
    dB[13 * 3 + 0] = fTmp0C;              dB[13 * 3 + 2] = fTmp0C_z * x;
    dB[14 * 3 + 0] = k10 * z * 2.f * x;   dB[14 * 3 + 1] = -k10 * z * 2.f * y;  dB[14 * 3 + 2] = k10 * fC1;
    dB[15 * 3 + 0] = k9 * fC2_x;          dB[15 * 3 + 1] = k9 * fC2_y;
}

// rgb [3] = max(SH(dir) . coeffs + 0.5, 0); dir [3] = mean - campos (any length; degree 0 ignores it).
// coeffs [K, 3].
GT_HD void gt_sh_to_color(int degree, const float* dir, const float* coeffs, float* rgb)
{
    float basis[16], dir_n[3] = {0.f, 0.f, 1.f};
    if (degree > 0) {
        float inorm = 1.f / sqrtf(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
        dir_n[0] = dir[0] * inorm; dir_n[1] = dir[1] * inorm; dir_n[2] = dir[2] * inorm;
    }
    gt_sh_basis(degree, dir_n, basis);
    int K = (degree + 1) * (degree + 1);
    // one pass over the [K, 3] rows (contiguous reads); each channel still sums k = 0..K-1 in order
    float s0 = 0.f, s1 = 0.f, s2 = 0.f;
    for (int k = 0; k < K; ++k) {
        s0 += basis[k] * coeffs[k * 3 + 0];
        s1 += basis[k] * coeffs[k * 3 + 1];
        s2 += basis[k] * coeffs[k * 3 + 2];
    }
    rgb[0] = gt_maxf(0.f, s0 + 0.5f);
    rgb[1] = gt_maxf(0.f, s1 + 0.5f);
    rgb[2] = gt_maxf(0.f, s2 + 0.5f);
}

// VJP of gt_sh_to_color: v_rgb [3] -> v_coeffs [K, 3] (+=), v_dir [3] (+=, skipped if nullptr).
// The clamp at 0 passes the gradient where SH + 0.5 >= 0 (torch.clamp_min).
GT_HD void gt_sh_to_color_vjp(int degree, const float* dir, const float* coeffs, const float* v_rgb,
                              float* v_coeffs, float* v_dir)
{
    float basis[16], dir_n[3] = {0.f, 0.f, 1.f}, inorm = 0.f;
    if (degree > 0) {
        inorm = 1.f / sqrtf(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
        dir_n[0] = dir[0] * inorm; dir_n[1] = dir[1] * inorm; dir_n[2] = dir[2] * inorm;
    }
    gt_sh_basis(degree, dir_n, basis);
    int K = (degree + 1) * (degree + 1);
    float g[3];
    for (int c = 0; c < 3; ++c) {
        float s = 0.f;
        for (int k = 0; k < K; ++k) s += basis[k] * coeffs[k * 3 + c];
        g[c] = (s + 0.5f >= 0.f) ? v_rgb[c] : 0.f;
    }
    for (int k = 0; k < K; ++k)
        for (int c = 0; c < 3; ++c) v_coeffs[k * 3 + c] += basis[k] * g[c];
    if (v_dir == nullptr || degree < 1) return;
    float dB[48];
    gt_sh_basis_grad(degree, dir_n, dB);
    float vn[3] = {0.f, 0.f, 0.f};  // gradient w.r.t. the unit direction
    for (int k = 1; k < K; ++k) {
        float w = g[0] * coeffs[k * 3 + 0] + g[1] * coeffs[k * 3 + 1] + g[2] * coeffs[k * 3 + 2];
        vn[0] += w * dB[k * 3 + 0];
        vn[1] += w * dB[k * 3 + 1];
        vn[2] += w * dB[k * 3 + 2];
    }
    // through the normalisation: (I - n n^T) / |dir|
    float d = vn[0] * dir_n[0] + vn[1] * dir_n[1] + vn[2] * dir_n[2];
    for (int i = 0; i < 3; ++i) v_dir[i] += (vn[i] - d * dir_n[i]) * inorm;
}

///////////////////////////////
// Per-pixel alpha
///////////////////////////////

// Mahalanobis exponent; dx, dy = mean2d - pixel centre, conic [3] = (a, b, c).
GT_HD float gt_sigma(const float* conic, float dx, float dy)
{
    return 0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
}

// alpha = min(0.99, opacity exp(-sigma)); vis = exp(-sigma). Returns false when the pixel
// skips this Gaussian (sigma < 0 or alpha < 1/255), as gsplat.
GT_HD bool gt_eval_alpha(const float* conic, float dx, float dy, float opacity, float* alpha, float* vis)
{
    float sigma = gt_sigma(conic, dx, dy);
    *vis = GT_EXPF(-sigma);
    *alpha = fminf(GT_MAX_ALPHA, opacity * (*vis));
    return !(sigma < 0.f || *alpha < GT_ALPHA_THRESHOLD);
}

// A sigma above this value gives alpha < 1/255 for sure (a small margin keeps the
// exact test authoritative). -1 when the Gaussian can never pass the threshold.
GT_HD float gt_sigma_max(float opacity)
{
    if (!(opacity * 255.f >= 1.f)) return -1.f;
    return logf(opacity * 255.f) * 1.0001f + 1e-3f;
}

// Half extents (pixels) of the ellipse sigma <= gt_sigma_max(opacity) around the mean:
// pixels farther than this in x or y can never pass the alpha threshold. -1 if none can.
GT_HD void gt_alpha_extent(const float* conic, float opacity, float* ext_x, float* ext_y)
{
    float smax = gt_sigma_max(opacity);
    float det = conic[0] * conic[2] - conic[1] * conic[1];
    if (smax < 0.f) { *ext_x = -1.f; *ext_y = -1.f; return; }           // never visible
    if (!(det > 0.f)) { *ext_x = 3.0e38f; *ext_y = 3.0e38f; return; }    // rounding: no bound
    // sigma = 0.5 d^T P d <= s  =>  |dx| <= sqrt(2 s (P^-1)_xx), (P^-1)_xx = c / det
    *ext_x = sqrtf(2.f * smax * conic[2] / det) * 1.001f + 0.01f;
    *ext_y = sqrtf(2.f * smax * conic[0] / det) * 1.001f + 0.01f;
}

// VJP of alpha = opacity * vis (when not clamped at 0.99, as gsplat) w.r.t. conic [3],
// mean2d [2] and opacity, given v_alpha. Accumulates.
GT_HD void gt_alpha_vjp(const float* conic, float dx, float dy, float opacity, float vis, float v_alpha,
                        float* v_conic, float* v_mean2d, float* v_opacity)
{
    if (opacity * vis > GT_MAX_ALPHA) return;  // clamped: no gradient
    float v_sigma = -opacity * vis * v_alpha;
    v_conic[0] += 0.5f * v_sigma * dx * dx;
    v_conic[1] += v_sigma * dx * dy;
    v_conic[2] += 0.5f * v_sigma * dy * dy;
    v_mean2d[0] += v_sigma * (conic[0] * dx + conic[1] * dy);
    v_mean2d[1] += v_sigma * (conic[1] * dx + conic[2] * dy);
    *v_opacity += vis * v_alpha;
}
