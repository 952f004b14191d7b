// deform_cuda_emu.cpp: plugins/deform/deform_cuda.cu compiled for CPU threads (see cuda_emu.h), with the
// same cuLaunchKernel-shaped entry point as raster_cuda_emu.cpp (built by tests/cuda_emu/deform.py).
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda_emu.h"
#include "deform_cuda.cu"

namespace {

template <typename... A, size_t... I>
void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
std::function<void()> bind_args(void (*kernel)(A...), void** args)
{
    return [=] { call_with(kernel, args, std::index_sequence_for<A...>{}); };
}

}  // namespace

// 0 on success, -1 for an unknown kernel name. Both kernels use __syncthreads: cooperative launches.
extern "C" int gt_emu_launch(const char* name, const unsigned* grid, const unsigned* block, void** args)
{
    std::function<void()> run;
    if (!std::strcmp(name, "gt_deform_tokens")) run = bind_args(gt_deform_tokens, args);
    else if (!std::strcmp(name, "gt_deform_fused")) run = bind_args(gt_deform_fused, args);
    else return -1;
    gt_emu::launch({grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]}, true, run);
    return 0;
}
