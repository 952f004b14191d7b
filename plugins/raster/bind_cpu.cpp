// bind_cpu.cpp: pybind11 module gt_runtime._raster_cpu (numpy float32 in / out).
//
//   forward(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
//       -> image [H, W, 3]
//   forward_with_state(...same...) -> (image [H, W, 3], RasterState)
//   backward(state, v_image [H, W, 3])
//       -> (v_means [N, 3], v_quats [N, 4], v_scales [N, 3], v_opacities [N],
//           v_colors [N, 3] | [N, K, 3], v_background [3] | [H, W, 3] | None)
//   isa() -> str         blend kernel variant forward uses now ("avx512", "avx2", "generic";
//                        GT_RASTER_ISA=generic|avx2|avx512 caps it)
//   isas() -> list[str]  variants this build has and this CPU runs, best first
//   composite_over(plate [H, W, 3], rgba uint8 [H, W, 4]) -> [H, W, 3]: the torso over the plate
//
// The Python wrapper (gt_runtime.raster) validates arguments; the checks here only
// guard memory safety. The GIL is released while computing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdint.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "raster_cpu.h"

namespace py = pybind11;
using farray = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

// A few finished forward states kept for reuse: their buffers keep their capacity, so the next
// frame of the same size does not page-fault ~10 MB of fresh memory (512x512, 50k Gaussians).
class StatePool {
public:
    static StatePool& get()
    {
        static StatePool* pool = new StatePool();  // never destroyed: states may outlive module teardown
        return *pool;
    }
    std::unique_ptr<gt::RasterState> take()
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (free_.empty()) return std::make_unique<gt::RasterState>();
        std::unique_ptr<gt::RasterState> s = std::move(free_.back());
        free_.pop_back();
        return s;
    }
    void give(std::unique_ptr<gt::RasterState> s)
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (s && free_.size() < kMaxFree) free_.push_back(std::move(s));
    }

private:
    static constexpr size_t kMaxFree = 2;
    std::mutex mu_;
    std::vector<std::unique_ptr<gt::RasterState>> free_;
};

// Forward inputs kept alive (they back the raw pointers in `in`) plus the forward state.
struct PyRasterState {
    farray means, quats, scales, opacities, colors, viewmat, K, background;
    gt::RasterInputs in;
    std::unique_ptr<gt::RasterState> state = StatePool::get().take();
    gt::RasterState& st = *state;
    PyRasterState() = default;
    PyRasterState(const PyRasterState&) = delete;
    PyRasterState& operator=(const PyRasterState&) = delete;
    ~PyRasterState() { StatePool::get().give(std::move(state)); }
};

void check_shape(const farray& a, std::initializer_list<py::ssize_t> shape, const char* name)
{
    bool ok = a.ndim() == (py::ssize_t)shape.size();
    size_t i = 0;
    for (py::ssize_t d : shape) {
        if (ok && d >= 0 && a.shape(i) != d) ok = false;
        ++i;
    }
    if (!ok) throw py::value_error(std::string("_raster_cpu: argument '") + name + "' has a wrong shape");
}

std::unique_ptr<PyRasterState> make_state(farray means, farray quats, farray scales, farray opacities, farray colors,
                                          farray viewmat, farray K, int width, int height, py::object background)
{
    auto s = std::make_unique<PyRasterState>();
    const py::ssize_t N = means.ndim() == 2 ? means.shape(0) : -1;
    check_shape(means, {N, 3}, "means");
    check_shape(quats, {N, 4}, "quats");
    check_shape(scales, {N, 3}, "scales");
    check_shape(opacities, {N}, "opacities");
    check_shape(viewmat, {4, 4}, "viewmat");
    check_shape(K, {3, 3}, "K");
    if (width <= 0 || height <= 0) throw py::value_error("_raster_cpu: width and height must be positive");
    int sh_degree = -1;
    if (colors.ndim() == 2) {
        check_shape(colors, {N, 3}, "colors");
    } else {
        check_shape(colors, {N, -1, 3}, "colors");
        const py::ssize_t KB = colors.shape(1);
        for (int d = 0; d <= 3; ++d)
            if ((d + 1) * (d + 1) == KB) sh_degree = d;
        if (sh_degree < 0) throw py::value_error("_raster_cpu: colors [N, K, 3] needs K in {1, 4, 9, 16}");
    }
    s->in.bg_mode = 0;
    if (!background.is_none()) {
        s->background = background.cast<farray>();
        if (s->background.ndim() == 1) {
            check_shape(s->background, {3}, "background");
            s->in.bg_mode = 1;
        } else {
            check_shape(s->background, {height, width, 3}, "background");
            s->in.bg_mode = 2;
        }
        s->in.background = s->background.data();
    }
    s->means = means; s->quats = quats; s->scales = scales; s->opacities = opacities;
    s->colors = colors; s->viewmat = viewmat; s->K = K;
    s->in.N = (int)N;
    s->in.means = means.data(); s->in.quats = quats.data(); s->in.scales = scales.data();
    s->in.opacities = opacities.data(); s->in.colors = colors.data(); s->in.sh_degree = sh_degree;
    s->in.viewmat = viewmat.data(); s->in.K = K.data();
    s->in.width = width; s->in.height = height;
    return s;
}

farray run_forward(PyRasterState& s, bool for_backward)
{
    farray image({(py::ssize_t)s.in.height, (py::ssize_t)s.in.width, (py::ssize_t)3});
    float* out = image.mutable_data();
    {
        py::gil_scoped_release release;
        gt::raster_forward_cpu(s.in, out, s.st, for_backward);
    }
    return image;
}

// out = rgb / 255 * a + plate * (1 - a), a = alpha / 255, per pixel: the same float operations in the
// same order as gt_runtime.playback.scene.composite_over (built with -ffp-contract=off: no FMA), so the
// same floats, in one pass instead of numpy's six over [H, W, 3] temporaries.
void composite_rows(const float* plate, const uint8_t* rgba, float* out, size_t pixels)
{
    float u8f[256];  // k / 255 as the division rounds it: a table instead of four divisions per pixel
    for (int k = 0; k < 256; ++k) u8f[k] = (float)k / 255.f;
    for (size_t i = 0; i < pixels; ++i) {
        const uint8_t* q = rgba + 4 * i;
        if (q[3] == 0) {  // most of the frame: the plate alone (rgb * 0 + plate * 1 is plate exactly)
            out[3 * i] = plate[3 * i], out[3 * i + 1] = plate[3 * i + 1], out[3 * i + 2] = plate[3 * i + 2];
            continue;
        }
        const float a = u8f[q[3]], na = 1.f - a;
        for (int c = 0; c < 3; ++c) out[3 * i + c] = u8f[q[c]] * a + plate[3 * i + c] * na;
    }
}

}  // namespace

PYBIND11_MODULE(_raster_cpu, m)
{
    m.doc() = "gt CPU Gaussian rasterizer (C++/OpenMP); see gt_runtime.raster for the public API.";

    py::class_<PyRasterState>(m, "RasterState", "Opaque forward state consumed by backward().")
        .def_property_readonly("isa", [](const PyRasterState& s) {
            return std::string(s.st.kernels != nullptr ? s.st.kernels->name : "");
        }, "blend kernel variant the forward used (the backward uses the same)")
        .def_property_readonly("num_visible", [](const PyRasterState& s) { return s.st.num_visible; })
        .def_property_readonly("num_intersections", [](const PyRasterState& s) { return s.st.tile_ids.size(); })
        .def_property_readonly("radii", [](const PyRasterState& s) {
            farray r({(py::ssize_t)s.st.radius.size()});
            std::copy(s.st.radius.begin(), s.st.radius.end(), r.mutable_data());
            return r;
        }, "[N] float32 pixel radius per Gaussian, 0 = culled");

    m.def("isa", [] { return std::string(gt::raster_cpu_select_isa()->name); },
          "Blend kernel variant forward uses now: 'avx512', 'avx2' or 'generic' (GT_RASTER_ISA caps it).");
    m.def("isas", [] { return gt::raster_cpu_isas(); },
          "Blend kernel variants this build has and this CPU runs, best first.");

    m.def(
        "composite_over",
        [](farray plate, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> rgba) {
            const py::ssize_t H = plate.ndim() == 3 ? plate.shape(0) : -1, W = plate.ndim() == 3 ? plate.shape(1) : -1;
            check_shape(plate, {H, W, 3}, "plate");
            if (rgba.ndim() != 3 || rgba.shape(0) != H || rgba.shape(1) != W || rgba.shape(2) != 4)
                throw py::value_error("_raster_cpu: argument 'rgba' has a wrong shape");
            farray out({H, W, (py::ssize_t)3});
            const float* p = plate.data();
            const uint8_t* q = rgba.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                composite_rows(p, q, o, (size_t)H * (size_t)W);
            }
            return out;
        },
        py::arg("plate"), py::arg("rgba"), "The torso RGBA over the plate -> [H, W, 3] float32.");

    m.def(
        "forward",
        [](farray means, farray quats, farray scales, farray opacities, farray colors, farray viewmat, farray K,
           int width, int height, py::object background) {
            auto s = make_state(means, quats, scales, opacities, colors, viewmat, K, width, height, background);
            return run_forward(*s, false);
        },
        py::arg("means"), py::arg("quats"), py::arg("scales"), py::arg("opacities"), py::arg("colors"),
        py::arg("viewmat"), py::arg("K"), py::arg("width"), py::arg("height"), py::arg("background") = py::none(),
        "Render [H, W, 3] float32.");

    m.def(
        "forward_with_state",
        [](farray means, farray quats, farray scales, farray opacities, farray colors, farray viewmat, farray K,
           int width, int height, py::object background) {
            auto s = make_state(means, quats, scales, opacities, colors, viewmat, K, width, height, background);
            farray image = run_forward(*s, true);
            return py::make_tuple(image, py::cast(std::move(s)));
        },
        py::arg("means"), py::arg("quats"), py::arg("scales"), py::arg("opacities"), py::arg("colors"),
        py::arg("viewmat"), py::arg("K"), py::arg("width"), py::arg("height"), py::arg("background") = py::none(),
        "Render [H, W, 3] float32 and return (image, state) for backward().");

    m.def(
        "backward",
        [](PyRasterState& s, farray v_image) {
            check_shape(v_image, {s.in.height, s.in.width, 3}, "v_image");
            const py::ssize_t N = s.in.N;
            farray v_means({N, (py::ssize_t)3}), v_quats({N, (py::ssize_t)4}), v_scales({N, (py::ssize_t)3});
            farray v_opacities({N});
            farray v_colors(std::vector<py::ssize_t>(s.colors.shape(), s.colors.shape() + s.colors.ndim()));
            py::object v_bg = py::none();
            gt::RasterGrads g;
            g.v_means = v_means.mutable_data();
            g.v_quats = v_quats.mutable_data();
            g.v_scales = v_scales.mutable_data();
            g.v_opacities = v_opacities.mutable_data();
            g.v_colors = v_colors.mutable_data();
            if (s.in.bg_mode != 0) {
                farray vb(std::vector<py::ssize_t>(s.background.shape(), s.background.shape() + s.background.ndim()));
                g.v_background = vb.mutable_data();
                v_bg = vb;
            }
            {
                py::gil_scoped_release release;
                gt::raster_backward_cpu(s.in, s.st, v_image.data(), g);
            }
            return py::make_tuple(v_means, v_quats, v_scales, v_opacities, v_colors, v_bg);
        },
        py::arg("state"), py::arg("v_image"),
        "Gradients of sum(v_image * image) w.r.t. (means, quats, scales, opacities, colors, background).");
}
