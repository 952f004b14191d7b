// deform_cpu.cpp: weight packing, per-frame token matrices, the OpenMP loop over tiles, and the
// choice of kernel variant (see deform_cpu.h).
#include "deform_cpu.h"

#include "../common/gt_cpu_isa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace gt {
namespace deform {

namespace {

struct IsaEntry {
    const DeformKernels* kernels;
    int level;  // IsaLevel
};

const std::vector<IsaEntry>& isa_table()
{
    static const std::vector<IsaEntry> table = [] {
        std::vector<IsaEntry> t;
        const int level = cpu_isa_level(/*avx512_needs_vnni=*/true, /*want_amx=*/deform_kernels_amx() != nullptr);
        if (deform_kernels_amx() != nullptr && level >= kIsaAmx) t.push_back({deform_kernels_amx(), kIsaAmx});
        if (deform_kernels_avx512() != nullptr && level >= kIsaAvx512) t.push_back({deform_kernels_avx512(), kIsaAvx512});
        if (deform_kernels_avx2() != nullptr && level >= kIsaAvx2) t.push_back({deform_kernels_avx2(), kIsaAvx2});
        t.push_back({deform_kernels_generic(), kIsaGeneric});
        return t;
    }();
    return table;
}

int round_up(int x, int m) { return (x + m - 1) / m * m; }

// INT8 weight range of every Linear (see Lin).
constexpr int kWeightQmax = 63;

}  // namespace

std::vector<std::string> deform_isas()
{
    std::vector<std::string> names;
    for (const IsaEntry& e : isa_table()) names.push_back(e.kernels->name);
    return names;
}

const DeformKernels* deform_select_isa(const std::string& name)
{
    if (!name.empty()) {
        for (const IsaEntry& e : isa_table())
            if (name == e.kernels->name) return e.kernels;
        std::string have;
        for (const std::string& s : deform_isas()) have += (have.empty() ? "" : ", ") + s;
        throw std::invalid_argument("isa " + name + ": this CPU or build cannot run it | use one of: " + have);
    }
    const int cap = isa_cap_from_env("GT_DEFORM_ISA");
    for (const IsaEntry& e : isa_table())
        if (e.level <= cap) return e.kernels;
    return deform_kernels_generic();
}

void PackedLin::pack(const float* W, const float* bias, int M, int K, bool int8, int qmax)
{
    const int Mp = round_up(M, kPW), P = Mp / kPW;
    b.assign(Mp, 0.f);
    std::copy(bias, bias + M, b.begin());
    lin = Lin();
    lin.K = K;
    lin.M = M;
    lin.Mp = Mp;
    if (!int8) {
        wf.assign((size_t)Mp * K, 0.f);
        for (int m = 0; m < M; ++m)
            for (int k = 0; k < K; ++k) wf[((size_t)(m / kPW) * K + k) * kPW + m % kPW] = W[(size_t)m * K + k];
        lin.wf = wf.data();
    } else {
        if (K % 4) throw std::invalid_argument("INT8 Linear needs K divisible by 4");
        const int G = K / 4;
        ws.assign(Mp, 0.f);
        wc.assign(Mp, 0);
        wq.assign((size_t)Mp * K, 0);
        for (int m = 0; m < M; ++m) {
            float amax = 0.f;
            for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[(size_t)m * K + k]));
            const float s = amax / (float)qmax;
            ws[m] = s;
            int32_t sum = 0;
            for (int k = 0; k < K; ++k) {
                const int q = s > 0.f ? (int)std::lrint(W[(size_t)m * K + k] / s) : 0;
                sum += q;
                wq[(((size_t)(m / kPW) * G + k / 4) * kPW + m % kPW) * 4 + k % 4] = (int8_t)q;
            }
            wc[m] = 64 * sum;
        }
        (void)P;
        lin.wq = wq.data();
        lin.ws = ws.data();
        lin.wc = wc.data();
    }
    lin.b = b.data();
}

DeformModel::DeformModel(const WeightGetter& get, const float* queries, int N, int num_layers, int sh_degree, bool int8)
{
    if (num_layers < 1 || num_layers > kMaxLayers)
        throw std::invalid_argument("num_layers " + std::to_string(num_layers) + ": expected 1.." + std::to_string(kMaxLayers));
    if (sh_degree < 0 || sh_degree > 3)
        throw std::invalid_argument("sh_degree " + std::to_string(sh_degree) + ": expected 0..3");
    n_ = N;
    npad_ = round_up(std::max(N, 1), kRows);
    queries_.assign((size_t)npad_ * kD, 0.f);
    std::copy(queries, queries + (size_t)N * kD, queries_.begin());
    net_.layers = num_layers;
    net_.int8 = int8 ? 1 : 0;
    const std::vector<int> dd = {kD, kD}, d = {kD};
    for (int l = 0; l < num_layers; ++l) {
        const std::string p = "deform.layers." + std::to_string(l) + ".";
        LayerW& w = lw_[l];
        w.wq = get(p + "q.weight", dd); w.bq = get(p + "q.bias", d);
        w.wk = get(p + "k.weight", dd); w.bk = get(p + "k.bias", d);
        w.wv = get(p + "v.weight", dd); w.bv = get(p + "v.bias", d);
        w.wo = get(p + "o.weight", dd); w.bo = get(p + "o.bias", d);
        w.n1w = get(p + "norm1.weight", d); w.n1b = get(p + "norm1.bias", d);
        w.n2w = get(p + "norm2.weight", d); w.n2b = get(p + "norm2.bias", d);
        const std::vector<float> f1 = get(p + "ffn1.weight", {kHid, kD}), f1b = get(p + "ffn1.bias", {kHid});
        const std::vector<float> f2 = get(p + "ffn2.weight", {kD, kHid}), f2b = get(p + "ffn2.bias", {kD});
        ffn1_[l].pack(f1.data(), f1b.data(), kHid, kD, int8, kWeightQmax);
        ffn2_[l].pack(f2.data(), f2b.data(), kD, kHid, int8, kWeightQmax);
        Layer& lay = net_.layer[l];
        lay.ffn1 = ffn1_[l].lin;
        lay.ffn2 = ffn2_[l].lin;
        lay.n1w = w.n1w.data(); lay.n1b = w.n1b.data();
        lay.n2w = w.n2w.data(); lay.n2b = w.n2b.data();
    }
    static const char* kNames[kHeads] = {"mu", "rot", "scale", "sh", "opacity"};
    const int K = (sh_degree + 1) * (sh_degree + 1);
    const int dims[kHeads] = {3, 4, 3, 3 * K, 1};
    std::vector<float> w1, b1;  // the 5 fc1 stacked: [640, 64]
    for (int h = 0; h < kHeads; ++h) {
        const std::string p = std::string("deform.heads.") + kNames[h] + ".";
        const std::vector<float> w = get(p + "fc1.weight", {kHid, kD}), b = get(p + "fc1.bias", {kHid});
        w1.insert(w1.end(), w.begin(), w.end());
        b1.insert(b1.end(), b.begin(), b.end());
        const std::vector<float> w2 = get(p + "fc2.weight", {dims[h], kHid}), b2 = get(p + "fc2.bias", {dims[h]});
        fc2_[h].pack(w2.data(), b2.data(), dims[h], kHid, int8, kWeightQmax);
        net_.fc2[h] = fc2_[h].lin;
        if (dims[h] <= kSmallHead) {
            fc2_rows_[h] = w2;
            net_.fc2_rows[h] = fc2_rows_[h].data();
        }
        net_.out_dim[h] = dims[h];
        net_.max_mp = std::max(net_.max_mp, fc2_[h].lin.Mp);
    }
    fc1_.pack(w1.data(), b1.data(), kHeads * kHid, kD, int8, kWeightQmax);
    net_.fc1 = fc1_.lin;
}

void DeformModel::run(const float* tokens, int B, float* const out[kHeads], const float* const* canon, int threads,
                      const std::string& isa) const
{
    const DeformKernels* kern = deform_select_isa(isa);
    const int L = net_.layers;
    // Token-only work of every frame and layer, in double (a few hundred thousand operations).
    const size_t score_f = (size_t)kD * kPW + kPW, out_f = (size_t)kAtt * kD + kD;
    avector<float> mats((size_t)B * L * (score_f + out_f), 0.f);
    std::vector<AttMats> att((size_t)B * L);
    const double inv_sqrt = 1.0 / std::sqrt(32.0);
    for (int b = 0; b < B; ++b)
        for (int l = 0; l < L; ++l) {
            const LayerW& w = lw_[l];
            float* U = mats.data() + ((size_t)b * L + l) * (score_f + out_f);  // panel [64][16], then c [16]
            float* c = U + kD * kPW;
            float* Z = c + kPW;                                                // panels [4][8][16], then bo [64]
            float* bo = Z + kAtt * kD;
            double kk[4][kD], vv[4][kD];
            for (int j = 0; j < 4; ++j) {
                const float* tok = tokens + ((size_t)b * 4 + j) * kD;
                for (int e = 0; e < kD; ++e) {
                    double sk = w.bk[e], sv = w.bv[e];
                    for (int d = 0; d < kD; ++d) {
                        sk += (double)w.wk[e * kD + d] * tok[d];
                        sv += (double)w.wv[e * kD + d] * tok[d];
                    }
                    kk[j][e] = sk;
                    vv[j][e] = sv;
                }
            }
            for (int h = 0; h < 2; ++h)
                for (int j = 0; j < 4; ++j) {
                    const int col = 4 * h + j;
                    double cb = 0.0;
                    for (int e = 32 * h; e < 32 * h + 32; ++e) cb += (double)w.bq[e] * kk[j][e];
                    c[col] = (float)(cb * inv_sqrt);
                    for (int d = 0; d < kD; ++d) {
                        double u = 0.0;
                        for (int e = 32 * h; e < 32 * h + 32; ++e) u += (double)w.wq[e * kD + d] * kk[j][e];
                        U[d * kPW + col] = (float)(u * inv_sqrt);
                    }
                    for (int m = 0; m < kD; ++m) {
                        double z = 0.0;
                        for (int e = 32 * h; e < 32 * h + 32; ++e) z += (double)w.wo[m * kD + e] * vv[j][e];
                        Z[((m / kPW) * kAtt + col) * kPW + m % kPW] = (float)z;
                    }
                }
            std::copy(w.bo.begin(), w.bo.end(), bo);
            AttMats& a = att[(size_t)b * L + l];
            a.score.K = kD; a.score.M = kAtt; a.score.Mp = kPW; a.score.wf = U; a.score.b = c;
            a.out.K = kAtt; a.out.M = kD; a.out.Mp = kD; a.out.wf = Z; a.out.b = bo;
        }
    Job job;
    job.net = &net_;
    job.B = B;
    job.N = n_;
    job.queries = queries_.data();
    job.att = att.data();
    job.activate = canon != nullptr ? 1 : 0;
    for (int h = 0; h < kHeads; ++h) {
        job.out[h] = out[h];
        job.canon[h] = canon != nullptr ? canon[h] : nullptr;
    }
    const int tiles = npad_ / kRows;
    const int sf = scratch_floats(net_);
#ifdef _OPENMP
    const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
#endif
    {
        std::vector<float> scratch(sf + 16);
        float* sp = (float*)(((uintptr_t)scratch.data() + 63) & ~(uintptr_t)63);
        // dynamic: a thread that starts late or shares its core (the raster or encoder thread of an
        // overlapped pipeline, a neighbour) takes fewer tiles instead of holding the call up
        // (20k, 2 threads, one core busy: median 23.6 ms static, 16-17.6 dynamic); tiles are
        // independent, so the outputs are the same bits.
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int t = 0; t < tiles; ++t) kern->tile(job, t * kRows, sp);
    }
    (void)threads;
}

}  // namespace deform
}  // namespace gt
