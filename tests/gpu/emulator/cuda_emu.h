// A CPU stand-in for the CUDA built-ins the sparsecode kernels use: one std::thread per
// CUDA thread, one thread block at a time, real barriers for __syncthreads/__syncwarp and
// warp shuffles through a per-warp exchange buffer.  A barrier that is not reached by
// every thread within 20 s aborts (divergent __syncthreads would hang on a GPU).
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using std::fabs;
using std::sqrt;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct EmuBarrier {
  std::mutex m;
  std::condition_variable cv;
  int n = 32, count = 0;
  long gen = 0;
  void wait(const char* what) {
    std::unique_lock<std::mutex> l(m);
    const long g = gen;
    if (++count == n) { count = 0; ++gen; cv.notify_all(); return; }
    if (!cv.wait_for(l, std::chrono::seconds(20), [&] { return gen != g; })) {
      std::fprintf(stderr, "emulator: %s not reached by every thread (thread %u of block %u)\n",
                   what, threadIdx.x, blockIdx.x);
      std::abort();
    }
  }
};

struct EmuWarp { EmuBarrier bar; unsigned char buf[32][8]; };

inline EmuBarrier* emu_block_barrier;
inline std::vector<std::unique_ptr<EmuWarp>>* emu_warps;
inline double* emu_smem;
thread_local long emu_sync_count;

inline void __syncthreads() { ++emu_sync_count; emu_block_barrier->wait("__syncthreads"); }
inline void __syncwarp(unsigned = 0xffffffffu) { (*emu_warps)[threadIdx.x >> 5]->bar.wait("__syncwarp"); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int off) {
  if (mask != 0xffffffffu) { std::fprintf(stderr, "emulator: partial shuffle mask\n"); std::abort(); }
  EmuWarp& w = *(*emu_warps)[threadIdx.x >> 5];
  const int lane = threadIdx.x & 31;
  std::memcpy(w.buf[lane], &v, sizeof(T));
  w.bar.wait("__shfl_xor_sync");
  T r;
  std::memcpy(&r, w.buf[lane ^ off], sizeof(T));
  w.bar.wait("__shfl_xor_sync");
  return r;
}

inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline int __float_as_int(float v) { int r; std::memcpy(&r, &v, 4); return r; }
inline long long __double_as_longlong(double v) { long long r; std::memcpy(&r, &v, 8); return r; }
inline float __int_as_float(unsigned v) { float r; std::memcpy(&r, &v, 4); return r; }
inline double __longlong_as_double(long long v) { double r; std::memcpy(&r, &v, 8); return r; }

template <class F>
void emu_launch(int grid, int block, long long smem, F&& body) {
  if (block < 32 || block > 1024 || block % 32) { std::fprintf(stderr, "emulator: bad block %d\n", block); std::abort(); }
  gridDim.x = grid;
  blockDim.x = block;
  std::vector<double> sm((smem + 7) / 8 + 1);
  emu_smem = sm.data();
  for (int b = 0; b < grid; ++b) {
    std::memset(sm.data(), 0xff, sm.size() * 8);  // NaN garbage, like uninitialised memory
    EmuBarrier bar;
    bar.n = block;
    std::vector<std::unique_ptr<EmuWarp>> warps;
    for (int w = 0; w < block / 32; ++w) warps.emplace_back(new EmuWarp());
    emu_block_barrier = &bar;
    emu_warps = &warps;
    std::vector<long> counts(block);
    std::vector<std::thread> ts;
    for (int t = 0; t < block; ++t)
      ts.emplace_back([&, t] { threadIdx.x = t; blockIdx.x = b; emu_sync_count = 0; body(); counts[t] = emu_sync_count; });
    for (auto& t : ts) t.join();
    for (int t = 1; t < block; ++t)
      if (counts[t] != counts[0]) { std::fprintf(stderr, "emulator: divergent __syncthreads\n"); std::abort(); }
  }
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __shared__ static
