// raster_cuda_emu.cpp: plugins/raster/raster_cuda.cu compiled for the CPU (see cuda_emu.h), with one
// C entry point shaped like cuLaunchKernel: kernel name, grid, block, and a void* per argument that
// points at the argument's value (for a pointer argument: at the pointer).
//   g++ -std=c++17 -O2 -pthread -shared -fPIC -I plugins/raster tests/cuda_emu/raster_cuda_emu.cpp
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda_emu.h"
#include "raster_cuda.cu"

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

// 0 on success, -1 for an unknown kernel name.
extern "C" int gt_emu_launch(const char* name, const unsigned* grid, const unsigned* block, void** args)
{
    std::function<void()> run;
    bool cooperative = false;
    if (!std::strcmp(name, "gt_raster_project")) run = bind_args(gt_raster_project, args);
    else if (!std::strcmp(name, "gt_raster_isect_keys")) run = bind_args(gt_raster_isect_keys, args);
    else if (!std::strcmp(name, "gt_raster_tile_ranges")) run = bind_args(gt_raster_tile_ranges, args);
    else if (!std::strcmp(name, "gt_raster_blend")) {
        run = bind_args(gt_raster_blend, args);
        cooperative = true;  // __syncthreads_count / __syncthreads
    } else {
        return -1;
    }
    gt_emu::launch({grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]}, cooperative, run);
    return 0;
}
