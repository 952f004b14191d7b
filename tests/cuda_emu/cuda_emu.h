// cuda_emu.h: just enough of CUDA's device built-ins to run raster_cuda.cu's kernels on CPU threads.
//
// Why: this project's CI machines have nvcc but no GPU, so the kernels compile there but never run.
// Compiled as C++ with this header in front, every kernel runs for real: blocks one after another,
// the threads of a block as std::threads (so __syncthreads is a true barrier), __shared__ arrays as
// statics (one block lives at a time). Tests drive them with the same host code as on a GPU
// (gt_runtime.raster._cuda.CudaRasterizer over numpy), and compare with the CPU rasterizer.
// Not emulated: warps (none of the kernels use warp intrinsics), device math (expf, not __expf),
// timing, and memory spaces (every pointer is a host pointer).
#pragma once

#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct float2 {
    float x, y;
};
struct float3 {
    float x, y, z;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline unsigned int __float_as_uint(float f)
{
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline int min(int a, int b) { return a < b ? a : b; }

namespace gt_emu {

// Barrier of one block's threads that also counts a predicate (__syncthreads_count).
class BlockBarrier {
public:
    explicit BlockBarrier(int n) : n_(n) {}
    int arrive(int pred)
    {
        std::unique_lock<std::mutex> lock(mu_);
        const long gen = gen_;
        count_ += pred != 0;
        if (++waiting_ == n_) {
            result_ = count_;
            count_ = 0;
            waiting_ = 0;
            ++gen_;
            cv_.notify_all();
            return result_;
        }
        cv_.wait(lock, [&] { return gen_ != gen; });
        return result_;  // not overwritten before every thread of this round has left: the next round needs them all
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    const int n_;
    int waiting_ = 0, count_ = 0, result_ = 0;
    long gen_ = 0;
};

inline thread_local BlockBarrier* tl_barrier = nullptr;

}  // namespace gt_emu

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline int __syncthreads_count(int pred) { return gt_emu::tl_barrier->arrive(pred); }
inline void __syncthreads() { gt_emu::tl_barrier->arrive(0); }

namespace gt_emu {

// Runs kernel() for every thread of grid x block. cooperative: the kernel uses barriers, so a block's
// threads run concurrently (one std::thread each); otherwise they run one after another.
inline void launch(dim3 grid, dim3 block, bool cooperative, const std::function<void()>& kernel)
{
    const int nthreads = (int)(block.x * block.y * block.z);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                BlockBarrier barrier(nthreads);
                auto body = [&](int t) {
                    threadIdx = {(unsigned)t % block.x, ((unsigned)t / block.x) % block.y,
                                 (unsigned)t / (block.x * block.y)};
                    blockIdx = {bx, by, bz};
                    blockDim = block;
                    gridDim = grid;
                    tl_barrier = &barrier;
                    kernel();
                };
                if (!cooperative) {
                    for (int t = 0; t < nthreads; ++t) body(t);
                    continue;
                }
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (int t = 0; t < nthreads; ++t) threads.emplace_back(body, t);
                for (auto& th : threads) th.join();
            }
}

}  // namespace gt_emu
