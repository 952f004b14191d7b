// deform_kernels.h: the fused deformation network's data (prepacked weights, per-frame token
// matrices, one call's job) and its per-tile kernel, one variant per instruction set.
//
// deform_cpu_{amx,avx512,avx2,generic}.cpp each compile deform_simd.h with their own -m flags
// (setup.py); deform_cpu.cpp packs the weights, precomputes the per-frame token matrices, runs
// the tiles over OpenMP threads and picks a variant at run time (deform_select_isa).
//
// No STL here: the ISA translation units include this header, and inline code they share with
// the rest of the extension could be linked in its AVX-512 copy.
#pragma once

#include <stdint.h>

namespace gt {
namespace deform {

constexpr int kD = 64;          // token / query / hidden width (contract.HIDDEN)
constexpr int kHid = 128;       // ffn and head hidden width (contract.HEAD_HIDDEN)
constexpr int kAtt = 8;         // attention columns: 2 heads x 4 tokens
constexpr int kPW = 16;         // GEMM panel width: output columns per packed panel
constexpr int kRows = 32;       // Gaussians per tile (the tile's activations stay in L1)
constexpr int kHeads = 5;       // mu, rot, scale, sh, opacity (contract.HEAD_NAMES)
constexpr int kMaxLayers = 4;
constexpr int kSmallHead = 4;   // heads with at most this many outputs run fc2 as dot products

// One Linear(K, M) prepacked for the kernels. Columns are padded to Mp (a multiple of kPW) with
// zero weights and bias. FP32 panels: wf[Mp/16][K][16]. INT8 (per-column symmetric scale ws,
// w = ws * q, |q| <= 63 so that AVX2's int16 maddubs sums cannot overflow, see gemm_i8):
// wq[Mp/16][K/4][16][4], so 4 consecutive k of one column are one 32-bit lane (maddubs pairs /
// VNNI dot-4); wc = 64 * sum_k q, the correction for signed inputs fed as u8 x + 64.
struct Lin {
    int K = 0, M = 0, Mp = 0;
    const float* wf = nullptr;
    const int8_t* wq = nullptr;
    const float* ws = nullptr;
    const int32_t* wc = nullptr;
    const float* b = nullptr;
};

struct Layer {
    Lin ffn1, ffn2;                          // 64 -> 128, 128 -> 64
    const float *n1w, *n1b, *n2w, *n2b;      // LayerNorm affine [64]
};

// The network: weights packed once when the engine activates.
struct Net {
    int layers = 0;
    int int8 = 0;                 // 1: ffn and head Linears in INT8 (dynamic per-row activations)
    Layer layer[kMaxLayers];
    Lin fc1;                      // the 5 heads' fc1 fused: 64 -> 640 (run in 128-column blocks)
    Lin fc2[kHeads];              // each head's fc2: 128 -> k_h
    const float* fc2_rows[kHeads] = {nullptr};  // FP32 fc2.weight [k_h, 128] of heads with k_h <= kSmallHead, else null
    int out_dim[kHeads] = {0};    // k_h: 3, 4, 3, 3K, 1
    int max_mp = 0;               // widest fc2 Mp
};

// Per frame and layer (token-only work, done once per frame): scores S = X U + c with
// U [64, 8] (U[:, 4h+j] = Wq_h^T k_hj / sqrt(32), c its bias term) and attention output
// O = A Z + bo with Z [8, 64] (Z[4h+j] = Wo_h v_hj); both as Lins: score (K 64, M 8), out (K 8, M 64).
struct AttMats {
    Lin score, out;
};

// One call: B frames x the tiles of N Gaussians.
struct Job {
    const Net* net = nullptr;
    int B = 0, N = 0;
    const float* queries = nullptr;  // [Npad, 64], rows >= N zero
    const AttMats* att = nullptr;    // [B][layers]
    // activate == 0: out[h] = offsets [B, N, k_h] (dmu, drot, dscale, dsh, dopacity).
    // activate == 1: out = means [B,N,3], quats [B,N,4], scales [B,N,3], sh [B,N,3K], opacities [B,N]
    //   = canonical + offsets, with exp on the scales and sigmoid on the opacities; canon the
    //   raw canonical means [N,3], quats [N,4], log_scales [N,3], sh [N,3K], opacity_logits [N].
    int activate = 0;
    const float* canon[kHeads] = {nullptr};
    float* out[kHeads] = {nullptr};
};

// Floats of scratch one thread needs for one tile.
inline int scratch_floats(const Net& net)
{
    // x, h, o [rows, 64]; f [rows, 128]; s [rows, 16]; y [rows, max_mp]; row scales; int8 rows [rows, 128 + 64]
    return kRows * (3 * kD + kHid + kPW + net.max_mp) + kRows + kRows * (kHid + kD) / 4 + 64;
}

struct DeformKernels {
    const char* name;
    // Rows [row0, row0 + kRows) of every frame of `job`; scratch: scratch_floats(*job.net) floats, 64-byte aligned.
    void (*tile)(const Job& job, int row0, float* scratch);
};

// Variant getters; null when this build has no such variant (flags missing, other compiler).
const DeformKernels* deform_kernels_amx();
const DeformKernels* deform_kernels_avx512();
const DeformKernels* deform_kernels_avx2();
const DeformKernels* deform_kernels_generic();

}  // namespace deform
}  // namespace gt
