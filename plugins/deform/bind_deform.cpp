// bind_deform.cpp: pybind11 module gt_runtime._deform_cpu (numpy float32 in / out).
//
//   Model(weights: dict name -> array, queries [N, 64], num_layers, sh_degree, int8, threads=0)
//     .offsets(tokens [B, 4, 64], isa="") -> (dmu [B,N,3], drot [B,N,4], dscale [B,N,3],
//                                             dsh [B,N,3K], dopacity [B,N,1])
//     .activated(tokens, means [N,3], quats [N,4], log_scales [N,3], opacity_logits [N],
//                sh [N,K,3], out_means [B,N,3], out_quats [B,N,4], out_scales [B,N,3],
//                out_opacities [B,N], out_sh [B,N,K,3], isa="")   writes the rasterizer's inputs
//   isa() -> str          variant used now (GT_DEFORM_ISA=generic|avx2|avx512 caps it)
//   isas() -> list[str]   variants this build has and this CPU runs, best first
//
// The Python runner (gt_runtime.engines.fused_cpu) validates arguments; the checks here guard
// memory safety. The GIL is released while computing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "deform_cpu.h"

namespace py = pybind11;
using farray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using gt::deform::DeformModel;
using gt::deform::kHeads;

namespace {

std::string shape_str(const std::vector<py::ssize_t>& s)
{
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

void check_shape(const py::array& a, const std::vector<py::ssize_t>& want, const char* name)
{
    std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
    if (got != want) throw py::value_error(std::string(name) + ": shape " + shape_str(got) + ", expected " + shape_str(want));
}

// An output array the kernel writes in place: float32, C-contiguous, writeable, of shape `want`.
float* out_ptr(py::array& a, const std::vector<py::ssize_t>& want, const char* name)
{
    if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) || !a.writeable())
        throw py::value_error(std::string(name) + ": expected a writeable C-contiguous float32 array");
    check_shape(a, want, name);
    return static_cast<float*>(a.mutable_data());
}

class PyModel {
public:
    PyModel(const py::dict& weights, const farray& queries, int num_layers, int sh_degree, bool int8, int threads)
        : threads_(threads)
    {
        if (queries.ndim() != 2 || queries.shape(1) != gt::deform::kD)
            throw py::value_error("queries: expected [N, 64]");
        auto get = [&weights](const std::string& name, const std::vector<int>& shape) {
            if (!weights.contains(name)) throw py::key_error("weights: missing " + name);
            farray a = farray::ensure(weights[py::str(name)]);
            std::vector<py::ssize_t> want(shape.begin(), shape.end());
            check_shape(a, want, name.c_str());
            return std::vector<float>(a.data(), a.data() + a.size());
        };
        model_ = std::make_unique<DeformModel>(get, queries.data(), (int)queries.shape(0), num_layers, sh_degree, int8);
    }

    py::tuple offsets(const farray& tokens, const std::string& isa)
    {
        const int B = check_tokens(tokens);
        const py::ssize_t N = model_->n();
        std::vector<py::array_t<float>> outs;
        float* ptr[kHeads];
        for (int h = 0; h < kHeads; ++h) {
            outs.emplace_back(std::vector<py::ssize_t>{B, N, model_->out_dim(h)});
            ptr[h] = outs.back().mutable_data();
        }
        {
            py::gil_scoped_release nogil;
            model_->run(tokens.data(), B, ptr, nullptr, threads_, isa);
        }
        return py::make_tuple(outs[0], outs[1], outs[2], outs[3], outs[4]);
    }

    void activated(const farray& tokens, const farray& means, const farray& quats, const farray& log_scales,
                   const farray& opacity_logits, const farray& sh, py::array out_means, py::array out_quats,
                   py::array out_scales, py::array out_opacities, py::array out_sh, const std::string& isa)
    {
        const py::ssize_t B = check_tokens(tokens), N = model_->n(), K = model_->out_dim(3) / 3;
        check_shape(means, {N, 3}, "means");
        check_shape(quats, {N, 4}, "quats");
        check_shape(log_scales, {N, 3}, "log_scales");
        check_shape(opacity_logits, {N}, "opacity_logits");
        check_shape(sh, {N, K, 3}, "sh");
        // kernel order: mu, rot, scale, sh, opacity
        float* ptr[kHeads] = {out_ptr(out_means, {B, N, 3}, "out_means"), out_ptr(out_quats, {B, N, 4}, "out_quats"),
                              out_ptr(out_scales, {B, N, 3}, "out_scales"), out_ptr(out_sh, {B, N, K, 3}, "out_sh"),
                              out_ptr(out_opacities, {B, N}, "out_opacities")};
        const float* canon[kHeads] = {means.data(), quats.data(), log_scales.data(), sh.data(), opacity_logits.data()};
        py::gil_scoped_release nogil;
        model_->run(tokens.data(), (int)B, ptr, canon, threads_, isa);
    }

    int n() const { return model_->n(); }
    bool int8() const { return model_->int8(); }

private:
    int check_tokens(const farray& tokens) const
    {
        if (tokens.ndim() != 3 || tokens.shape(1) != 4 || tokens.shape(2) != gt::deform::kD || tokens.shape(0) < 1)
            throw py::value_error("tokens: expected [B, 4, 64] with B >= 1");
        return (int)tokens.shape(0);
    }
    int threads_;
    std::unique_ptr<DeformModel> model_;
};

}  // namespace

PYBIND11_MODULE(_deform_cpu, m)
{
    m.doc() = "Fused deformation network on the CPU (FP32 / INT8, AMX / AVX-512 VNNI / AVX2 / generic kernels).";
    py::class_<PyModel>(m, "Model")
        .def(py::init<const py::dict&, const farray&, int, int, bool, int>(), py::arg("weights"), py::arg("queries"),
             py::arg("num_layers"), py::arg("sh_degree"), py::arg("int8") = false, py::arg("threads") = 0)
        .def("offsets", &PyModel::offsets, py::arg("tokens"), py::arg("isa") = "")
        .def("activated", &PyModel::activated, py::arg("tokens"), py::arg("means"), py::arg("quats"),
             py::arg("log_scales"), py::arg("opacity_logits"), py::arg("sh"), py::arg("out_means"),
             py::arg("out_quats"), py::arg("out_scales"), py::arg("out_opacities"), py::arg("out_sh"),
             py::arg("isa") = "")
        .def_property_readonly("n", &PyModel::n)
        .def_property_readonly("int8", &PyModel::int8);
    m.def("isa", [] { return std::string(gt::deform::deform_select_isa()->name); },
          "Kernel variant used now: 'amx', 'avx512', 'avx2' or 'generic' (GT_DEFORM_ISA caps it).");
    m.def("isas", [] { return gt::deform::deform_isas(); },
          "Variants this build has and this CPU runs, best first.");
}
