// deform_cpu.h: the fused deformation network on the CPU (gt_runtime._deform_cpu).
//
// DeformModel packs the network's weights once (FP32 panels, or INT8 with per-column scales) and
// binds the queries [N, 64]; run() takes per-frame tokens [B, 4, 64], precomputes the token-only
// matrices of every frame and layer (deform_kernels.h: AttMats), and runs the tiles of kRows
// Gaussians over OpenMP threads, each tile for all B frames, with the variant of deform_simd.h
// that deform_select_isa picks.
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "deform_kernels.h"

namespace gt {
namespace deform {

// Variants this build has and this CPU runs, best first.
std::vector<std::string> deform_isas();
// `name` ("amx", "avx512", "avx2", "generic") if non-empty (std::invalid_argument when this CPU or build
// lacks it), else the best variant capped by GT_DEFORM_ISA (read on every call; other values ignored).
const DeformKernels* deform_select_isa(const std::string& name = "");

// 64-byte aligned storage: the kernels' 32/64-byte loads of packed panels never straddle a cache line.
template <class T>
struct Aligned64 {
    using value_type = T;
    Aligned64() = default;
    template <class U>
    Aligned64(const Aligned64<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U>
    bool operator==(const Aligned64<U>&) const { return true; }
    template <class U>
    bool operator!=(const Aligned64<U>&) const { return false; }
};
template <class T>
using avector = std::vector<T, Aligned64<T>>;

// Owns one Linear's packed arrays; `lin` is what the kernels read.
struct PackedLin {
    avector<float> wf;
    std::vector<float> ws, b;
    avector<int8_t> wq;
    std::vector<int32_t> wc;
    Lin lin;
    // W [M, K] (torch layout), bias [M] -> panels; int8: per-column symmetric quantisation to
    // [-qmax, qmax] as well (see Lin).
    void pack(const float* W, const float* bias, int M, int K, bool int8, int qmax = 127);
};

// name, expected shape -> the float32 C-order values of the weight `name` (throws if absent or mis-shaped).
using WeightGetter = std::function<std::vector<float>(const std::string&, const std::vector<int>&)>;

class DeformModel {
public:
    // queries [N, 64]; weights by their state_dict names (docs/MODEL.md); int8: INT8 ffn and heads.
    DeformModel(const WeightGetter& get, const float* queries, int N, int num_layers, int sh_degree, bool int8);

    int n() const { return n_; }
    int out_dim(int h) const { return net_.out_dim[h]; }
    bool int8() const { return net_.int8 != 0; }

    // tokens [B, 4, 64] -> out[h] (see Job in deform_kernels.h: offsets, or activated when canon
    // is non-null). threads <= 0: OpenMP's default. isa: as deform_select_isa.
    void run(const float* tokens, int B, float* const out[kHeads], const float* const* canon, int threads,
             const std::string& isa) const;

private:
    struct LayerW {
        std::vector<float> wq, bq, wk, bk, wv, bv, wo, bo, n1w, n1b, n2w, n2b;
    };
    int n_ = 0, npad_ = 0;
    avector<float> queries_;         // [npad, 64]
    LayerW lw_[kMaxLayers];          // FP32 weights of the token-only work
    PackedLin ffn1_[kMaxLayers], ffn2_[kMaxLayers], fc1_, fc2_[kHeads];
    std::vector<float> fc2_rows_[kHeads];  // FP32 fc2 weights of the small heads (Net::fc2_rows)
    Net net_;
};

}  // namespace deform
}  // namespace gt
