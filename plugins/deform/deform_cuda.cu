// deform_cuda.cu: the deformation network fused into two CUDA kernels (engine `cuda-fused`).
//
// gt_deform_tokens: per frame and layer, what depends only on the 4 tokens (docs/MODEL.md):
//   U[4h+j][i] = sum_{d in head h} Wq[d][i] k_j[d] / sqrt(32)   so a score is  x . U[4h+j] + c[4h+j]
//   c[4h+j]    = sum_{d in head h} bq[d] k_j[d] / sqrt(32)
//   Z[4h+j][o] = sum_{d in head h} Wo[o][d] v_j[d]               so attention out = bo + sum A[4h+j] Z[4h+j]
//   (k = Wk t + bk, v = Wv t + bv). Layer 0 is no exception: its query projection folds into U too.
// gt_deform_fused: one thread per (frame, Gaussian): 2 post-norm cross-attention layers and the 5
//   heads (FP32, fmaf), weights streamed through shared memory in chunks of 32 hidden units; writes
//   the offsets, or (activate = 1) the rasterizer's inputs: canonical + offsets, exp on the scales,
//   sigmoid on the opacities (gt_runtime.model.reference.apply_offsets).
//
// Packed weights (gt_runtime/engines/fused_cuda.py `pack_weights`, one float buffer):
//   per layer (kLayerFloats): wq, wk, wv, wo [64][64] (torch [out][in]), bq, bk, bv, bo [64],
//     n1w, n1b, n2w, n2b [64], ffn: 128 unit records [w1 row (64) | w2 column (64) | b1], b2 [64];
//   then per head (mu, rot, scale, sh, opacity; M = 3, 4, 3, 3K, 1 outputs):
//     128 unit records [fc1 row (64) | fc2 column (M) | fc1 bias], fc2 bias [M].
// Also compiled as C++ for CPU threads by tests/cuda_emu (cuda_emu.h): only what that shim has.
#ifndef __CUDACC__
#include <math.h>  // the emulation (g++); nvcc and NVRTC have the device math built in
#endif

#define GT_D 64           // token / query / hidden width (contract.HIDDEN)
#define GT_HID 128        // ffn and head hidden width (contract.HEAD_HIDDEN)
#define GT_ATT 8          // 2 heads x 4 tokens
#define GT_DH 32          // width of one attention head
#define GT_CHUNK 32       // hidden units per shared-memory chunk
#define GT_THREADS 128    // block size of gt_deform_fused (the host launches exactly this)
#define GT_MAXM 64        // widest record output: ffn2 (64) >= sh head (3K <= 48)

// Per-layer packed weights.
#define GT_OFF_WQ 0
#define GT_OFF_WK (GT_OFF_WQ + GT_D * GT_D)
#define GT_OFF_WV (GT_OFF_WK + GT_D * GT_D)
#define GT_OFF_WO (GT_OFF_WV + GT_D * GT_D)
#define GT_OFF_BQ (GT_OFF_WO + GT_D * GT_D)
#define GT_OFF_BK (GT_OFF_BQ + GT_D)
#define GT_OFF_BV (GT_OFF_BK + GT_D)
#define GT_OFF_BO (GT_OFF_BV + GT_D)
#define GT_OFF_N1W (GT_OFF_BO + GT_D)
#define GT_OFF_N1B (GT_OFF_N1W + GT_D)
#define GT_OFF_N2W (GT_OFF_N1B + GT_D)
#define GT_OFF_N2B (GT_OFF_N2W + GT_D)
#define GT_OFF_FFN (GT_OFF_N2B + GT_D)
#define GT_FFN_REC (GT_D + GT_D + 1)
#define GT_OFF_FFN_B2 (GT_OFF_FFN + GT_HID * GT_FFN_REC)
#define GT_LAYER_FLOATS (GT_OFF_FFN_B2 + GT_D)

// Per frame and layer token matrices: U [8][64], Z [8][64], c [8] (padded).
#define GT_TM_U 0
#define GT_TM_Z (GT_ATT * GT_D)
#define GT_TM_C (2 * GT_ATT * GT_D)
#define GT_TM_FLOATS (2 * GT_ATT * GT_D + 16)
#define GT_MAX_LAYERS 4

// One block per (frame, layer), 64 threads: thread i owns column i.
extern "C" __global__ void __launch_bounds__(64) gt_deform_tokens(
    int B, int L, const float* __restrict__ tokens, const float* __restrict__ weights, float* __restrict__ tokmats)
{
    __shared__ float kv[2][4][GT_D];  // k_j, v_j of the block's frame and layer
    const int b = blockIdx.x, l = blockIdx.y, i = threadIdx.x;
    if (b >= B || l >= L) return;  // whole block: no barrier is skipped by part of it
    const float* w = weights + (long long)l * GT_LAYER_FLOATS;
    const float* t = tokens + (long long)b * 4 * GT_D;
    for (int j = 0; j < 4; ++j) {
        float k = w[GT_OFF_BK + i], v = w[GT_OFF_BV + i];
        for (int d = 0; d < GT_D; ++d) {
            k = fmaf(w[GT_OFF_WK + i * GT_D + d], t[j * GT_D + d], k);
            v = fmaf(w[GT_OFF_WV + i * GT_D + d], t[j * GT_D + d], v);
        }
        kv[0][j][i] = k;
        kv[1][j][i] = v;
    }
    __syncthreads();
    float* out = tokmats + ((long long)b * L + l) * GT_TM_FLOATS;
    const float scale = 1.0f / sqrtf((float)GT_DH);
    for (int hj = 0; hj < GT_ATT; ++hj) {
        const int h = hj / 4, j = hj % 4;
        float u = 0.f, z = 0.f;
        for (int d = h * GT_DH; d < (h + 1) * GT_DH; ++d) {
            u = fmaf(w[GT_OFF_WQ + d * GT_D + i], kv[0][j][d], u);
            z = fmaf(w[GT_OFF_WO + i * GT_D + d], kv[1][j][d], z);
        }
        out[GT_TM_U + hj * GT_D + i] = u * scale;
        out[GT_TM_Z + hj * GT_D + i] = z;
        if (i == 0) {
            float c = 0.f;
            for (int d = h * GT_DH; d < (h + 1) * GT_DH; ++d) c = fmaf(w[GT_OFF_BQ + d], kv[0][j][d], c);
            out[GT_TM_C + hj] = c * scale;
        }
    }
}

// Copy n floats to shared memory with the whole block (barriers before: the last chunk is read; after: this one is written).
__device__ __forceinline__ void gt_stage(float* dst, const float* __restrict__ src, int n)
{
    __syncthreads();
    for (int k = threadIdx.x; k < n; k += blockDim.x) dst[k] = src[k];
    __syncthreads();
}

// LayerNorm of x [64] in place (biased variance, eps 1e-5: contract.LN_EPS), affine from global memory.
__device__ __forceinline__ void gt_layer_norm(float* x, const float* __restrict__ g, const float* __restrict__ bta)
{
    float mu = 0.f;
#pragma unroll
    for (int d = 0; d < GT_D; ++d) mu += x[d];
    mu *= 1.0f / GT_D;
    float var = 0.f;
#pragma unroll
    for (int d = 0; d < GT_D; ++d) {
        x[d] -= mu;
        var = fmaf(x[d], x[d], var);
    }
    var *= 1.0f / GT_D;
    const float inv = 1.0f / sqrtf(var + 1e-5f);
#pragma unroll
    for (int d = 0; d < GT_D; ++d) x[d] = fmaf(x[d] * inv, g[d], bta[d]);
}

// acc[0..M) += sum over 128 hidden units u of relu(w1_u . h + b1_u) * w2_u: records of (64 + M + 1) floats from
// `recs`, streamed through shared memory `sm` by chunks of GT_CHUNK units. Every thread of the block calls it.
template <int M>
__device__ __forceinline__ void gt_mlp(float* acc, const float* h, const float* __restrict__ recs, float* sm, bool live)
{
    const int rec = GT_D + M + 1;
    for (int u0 = 0; u0 < GT_HID; u0 += GT_CHUNK) {
        gt_stage(sm, recs + (long long)u0 * rec, GT_CHUNK * rec);
        if (!live) continue;
        for (int u = 0; u < GT_CHUNK; ++u) {
            const float* r = sm + u * rec;
            float a = r[GT_D + M];
#pragma unroll
            for (int d = 0; d < GT_D; ++d) a = fmaf(r[d], h[d], a);
            a = fmaxf(a, 0.f);
#pragma unroll
            for (int m = 0; m < M; ++m) acc[m] = fmaf(a, r[GT_D + m], acc[m]);
        }
    }
}

// One head: out [B, N, M] at (b, n) = fc2(relu(fc1(h))); activate: canon[n] + that, then `act`
// (0 none, 1 exp, 2 sigmoid). Returns the offset of the next head's records.
template <int M>
__device__ __forceinline__ long long gt_head(const float* h, const float* __restrict__ recs, float* sm, bool live,
                                             long long bn, int n, int activate, int act,
                                             const float* __restrict__ canon, float* __restrict__ out)
{
    float acc[M];
    const float* b2 = recs + (long long)GT_HID * (GT_D + M + 1);
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = b2[m];
    gt_mlp<M>(acc, h, recs, sm, live);
    if (live) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
            float y = acc[m];
            if (activate) {
                y += canon[(long long)n * M + m];
                if (act == 1) y = expf(y);
                else if (act == 2) y = 1.0f / (1.0f + expf(-y));
            }
            out[bn * M + m] = y;
        }
    }
    return (long long)GT_HID * (GT_D + M + 1) + M;
}

// grid (ceil(N / 128), B), block 128: thread -> Gaussian n of frame b.
// out0..4: dmu [B,N,3], drot [B,N,4], dscale [B,N,3], dsh [B,N,3K], dopacity [B,N,1];
// activate = 1: means, quats, scales, sh, opacities (same shapes) from canon0..4 = means [N,3], quats [N,4],
// log_scales [N,3], sh [N,3K], opacity_logits [N] (unused and may be any buffer when activate = 0).
extern "C" __global__ void __launch_bounds__(GT_THREADS) gt_deform_fused(
    int B, int N, int L, int K, const float* __restrict__ queries, const float* __restrict__ weights,
    const float* __restrict__ tokmats, int activate,
    const float* __restrict__ canon0, const float* __restrict__ canon1, const float* __restrict__ canon2,
    const float* __restrict__ canon3, const float* __restrict__ canon4,
    float* __restrict__ out0, float* __restrict__ out1, float* __restrict__ out2, float* __restrict__ out3,
    float* __restrict__ out4)
{
    __shared__ float sm[GT_CHUNK * GT_FFN_REC];                  // one chunk of unit records
    __shared__ float tm[GT_MAX_LAYERS * GT_TM_FLOATS];          // this frame's token matrices
    const int b = blockIdx.y;
    const int n = blockIdx.x * GT_THREADS + threadIdx.x;
    const bool live = n < N;
    if (b >= B || L > GT_MAX_LAYERS) return;  // whole block
    const long long bn = (long long)b * N + n;
    gt_stage(tm, tokmats + (long long)b * L * GT_TM_FLOATS, L * GT_TM_FLOATS);

    float h[GT_D], acc[GT_D];
#pragma unroll
    for (int d = 0; d < GT_D; ++d) h[d] = live ? queries[(long long)n * GT_D + d] : 0.f;
    for (int l = 0; l < L; ++l) {
        const float* w = weights + (long long)l * GT_LAYER_FLOATS;
        const float* t = tm + l * GT_TM_FLOATS;
        // attention: 8 scores (64-dots), softmax per head over the 4 tokens, output A Z + bo; residual, norm1
        float s[GT_ATT];
#pragma unroll
        for (int hj = 0; hj < GT_ATT; ++hj) {
            float v = t[GT_TM_C + hj];
#pragma unroll
            for (int d = 0; d < GT_D; ++d) v = fmaf(h[d], t[GT_TM_U + hj * GT_D + d], v);
            s[hj] = v;
        }
#pragma unroll
        for (int hd = 0; hd < 2; ++hd) {
            float* r = s + 4 * hd;
            const float mx = fmaxf(fmaxf(r[0], r[1]), fmaxf(r[2], r[3]));
            float e[4], sum = 0.f;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                e[j] = expf(r[j] - mx);
                sum += e[j];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) r[j] = e[j] / sum;
        }
#pragma unroll
        for (int d = 0; d < GT_D; ++d) {
            float o = w[GT_OFF_BO + d];
#pragma unroll
            for (int hj = 0; hj < GT_ATT; ++hj) o = fmaf(s[hj], t[GT_TM_Z + hj * GT_D + d], o);
            h[d] += o;
        }
        gt_layer_norm(h, w + GT_OFF_N1W, w + GT_OFF_N1B);
        // ffn: h + ffn2(relu(ffn1(h))), norm2
#pragma unroll
        for (int d = 0; d < GT_D; ++d) acc[d] = w[GT_OFF_FFN_B2 + d];
        gt_mlp<GT_D>(acc, h, w + GT_OFF_FFN, sm, live);
#pragma unroll
        for (int d = 0; d < GT_D; ++d) h[d] += acc[d];
        gt_layer_norm(h, w + GT_OFF_N2W, w + GT_OFF_N2B);
    }
    // heads: mu, rot, scale, sh, opacity (activations: none, none, exp, none, sigmoid)
    const float* r = weights + (long long)L * GT_LAYER_FLOATS;
    r += gt_head<3>(h, r, sm, live, bn, n, activate, 0, canon0, out0);
    r += gt_head<4>(h, r, sm, live, bn, n, activate, 0, canon1, out1);
    r += gt_head<3>(h, r, sm, live, bn, n, activate, 1, canon2, out2);
    switch (K) {
    case 1: r += gt_head<3>(h, r, sm, live, bn, n, activate, 0, canon3, out3); break;
    case 4: r += gt_head<12>(h, r, sm, live, bn, n, activate, 0, canon3, out3); break;
    case 9: r += gt_head<27>(h, r, sm, live, bn, n, activate, 0, canon3, out3); break;
    default: r += gt_head<48>(h, r, sm, live, bn, n, activate, 0, canon3, out3); break;
    }
    gt_head<1>(h, r, sm, live, bn, n, activate, 2, canon4, out4);
}
