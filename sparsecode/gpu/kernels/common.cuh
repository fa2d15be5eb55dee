// Shared by every kernel of sparsecode.gpu; mp.cu, gp.cu, omp.cu and mpsae.cu include it,
// so each file compiles on its own.  sparsecode/gpu/_module.py puts rules.cuh, this
// header and the .cu files after it (their includes blanked) into one module that NVRTC
// compiles (through cupy.RawModule).  NVRTC sees no system headers: only CUDA built-ins
// are used.
//
// Conventions of every pursuit kernel:
//   * one thread block encodes one signal at a time; blocks take the next signal from a
//     queue (an int counter in device memory, zeroed by the caller), so a launch of any
//     number of blocks covers every signal and long signals do not hold up short ones;
//   * blockDim.x is a multiple of 32 (at most 1024); warp 0 does the per-step
//     bookkeeping (the support, the small linear algebra of gradient pursuit) while the
//     whole block does the O(n_atoms) passes;
//   * atoms are unit norm (the caller normalises), codes are written to I (int32, -1
//     filled by the caller) and Z (float64, 0 filled) of width `width` per signal;
//   * every branch that decides whether to stop depends only on values all threads of
//     the block hold identically (broadcast through shared memory), so __syncthreads()
//     is never reached by only part of a block.

#ifndef SPARSECODE_GPU_COMMON_CUH
#define SPARSECODE_GPU_COMMON_CUH

#define SC_FULL_MASK 0xffffffffu
#define SC_INT_MAX 2147483647

// Selection rules (SC_ABS, SC_POSITIVE, SC_SIGNED) and per-signal status (SC_RUNNING,
// SC_DONE, SC_DEPENDENT): generated from sparsecode/_rules.py into rules.cuh.
#include "rules.cuh"

// ---- selection keys --------------------------------------------------------------
// As in the CPU kernels (sparsecode/_pursuit_numba.py), selection compares the
// integer view of the correlations: |v| for ABS (sign bit cleared), v itself for
// POSITIVE (a winner <= 0 stops the signal anyway), and v with the magnitude bits of
// negative values flipped for SIGNED (orders every float like its value).  Ties go to
// the lowest atom index, so the GPU picks the atom the CPU picks from equal numbers.

template <typename T>
struct Key;

template <>
struct Key<float> {
  typedef int type;
  static __device__ __forceinline__ int bits(float v) { return __float_as_int(v); }
  static __device__ __forceinline__ int mask() { return 0x7fffffff; }
  static __device__ __forceinline__ int lowest() { return -2147483647 - 1; }
  static __device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
};

template <>
struct Key<double> {
  typedef long long type;
  static __device__ __forceinline__ long long bits(double v) { return __double_as_longlong(v); }
  static __device__ __forceinline__ long long mask() { return 0x7fffffffffffffffLL; }
  static __device__ __forceinline__ long long lowest() { return -9223372036854775807LL - 1; }
  static __device__ __forceinline__ double neg_inf() {
    return __longlong_as_double(0xfff0000000000000LL);
  }
};

template <typename T>
__device__ __forceinline__ typename Key<T>::type select_key(T v, int rule) {
  const typename Key<T>::type a = Key<T>::bits(v);
  if (rule == SC_ABS) return a & Key<T>::mask();
  if (rule == SC_SIGNED) return a >= 0 ? a : (a ^ Key<T>::mask());
  return a;
}

// True when the selected correlation cannot make progress (see vanished() in
// _pursuit_numba.py): the positive rule also stops when no correlation is positive.
template <typename T>
__device__ __forceinline__ bool vanished(T cj, double thr, int rule) {
  if (rule == SC_POSITIVE && cj <= (T)0) return true;
  return fabs((double)cj) <= thr;
}

// ---- 16-bit Gram rows ---------------------------------------------------------------
// A Gram matrix may be stored in float16 (half the bytes each update reads): its entries
// reach the kernels as their bits (sc_half; NVRTC sees no cuda_fp16.h) and sc_wide()
// widens them exactly, so every update runs in T as with rows of T.  sc_wide() of a T is
// the value itself, so kernels built for rows of T compute what they computed before.

typedef unsigned short sc_half;

__device__ __forceinline__ float sc_wide(const float v) { return v; }
__device__ __forceinline__ double sc_wide(const double v) { return v; }
__device__ __forceinline__ float sc_wide(const sc_half h) {
  const unsigned e = (h >> 10) & 0x1fu;
  const unsigned m = h & 0x3ffu;
  float f;
  if (e == 0u) f = (float)m * 5.9604644775390625e-8f;  // zero, subnormal: m 2^-24, exact
  else if (e == 31u) f = __int_as_float(0x7f800000u | (m << 13));  // inf, nan
  else f = __int_as_float(((e + 112u) << 23) | (m << 13));
  return (h & 0x8000u) ? -f : f;
}

// ---- warp and block reductions ---------------------------------------------------

// Keep the better of two (key, index) pairs: the larger key, then the lower index.
template <typename K>
__device__ __forceinline__ void better_of(K& key, int& idx, K k2, int i2) {
  if (k2 > key || (k2 == key && i2 < idx)) {
    key = k2;
    idx = i2;
  }
}

// Butterfly reduction: every lane ends with the best pair of the warp.
template <typename K>
__device__ __forceinline__ void warp_argmax(K& key, int& idx) {
  for (int off = 16; off > 0; off >>= 1) {
    const K k2 = __shfl_xor_sync(SC_FULL_MASK, key, off);
    const int i2 = __shfl_xor_sync(SC_FULL_MASK, idx, off);
    better_of(key, idx, k2, i2);
  }
}

// Argmax over the block: afterwards every lane of warp 0 holds the best (key, index).
// Contains one __syncthreads(); sk and si are __shared__ arrays of 32 entries.  The
// caller must __syncthreads() before the next call (the pursuit loops do).
template <typename K>
__device__ __forceinline__ void block_argmax(K& key, int& idx, K* sk, int* si) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  warp_argmax(key, idx);
  if (lane == 0) {
    sk[warp] = key;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    key = lane < nw ? sk[lane] : sk[0];  // repeating warp 0's pair changes no maximum
    idx = lane < nw ? si[lane] : si[0];
    warp_argmax(key, idx);
  }
}

// IEEE addition is commutative, so the butterfly leaves the same bits in every lane.
__device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(SC_FULL_MASK, v, off);
  return v;
}

__device__ __forceinline__ int warp_max_int(int v) {
  for (int off = 16; off > 0; off >>= 1) {
    const int o = __shfl_xor_sync(SC_FULL_MASK, v, off);
    v = o > v ? o : v;
  }
  return v;
}

// Sum over the block: the result is valid in warp 0.  One __syncthreads(); sd is a
// __shared__ array of 32 doubles.
__device__ __forceinline__ double block_sum(double v, double* sd) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) sd[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    v = warp_sum(lane < nw ? sd[lane] : 0.0);
  }
  return v;
}

// ---- work queue and support bookkeeping ------------------------------------------

// The next signal for this block (every thread gets the same answer).  The caller ends
// each loop iteration with __syncthreads() so that sh_row is not overwritten early.
__device__ __forceinline__ int next_row(int* queue, int* sh_row) {
  if (threadIdx.x == 0) *sh_row = atomicAdd(queue, 1);
  __syncthreads();
  return *sh_row;
}

// Position of atom j in the support Irow[0:s], or -1 (warp 0, same answer in every lane).
__device__ __forceinline__ int find_in_support(const int* Irow, int s, int j, int lane) {
  int pos = -1;
  for (int m = lane; m < s; m += 32) {
    if (Irow[m] == j) pos = m;
  }
  return warp_max_int(pos);
}

// MP's code update (warp 0): a new atom is appended, an atom selected again has its
// coefficients summed.  Returns whether j was already in the support; s is updated.
__device__ __forceinline__ bool add_to_code(int* Irow, double* Zrow, int& s, int j,
                                            double coef, int lane) {
  const int pos = find_in_support(Irow, s, j, lane);
  if (pos < 0) {
    if (lane == 0) {
      Irow[s] = j;
      Zrow[s] = coef;
    }
    ++s;
    return false;
  }
  if (lane == 0) Zrow[pos] += coef;
  return true;
}

// ---- utilities -------------------------------------------------------------------

// Squared norms of the n rows of the C-contiguous (n, m) matrix A, in float64.
template <typename T>
__global__ void row_norms2(const T* __restrict__ A, const long long n, const int m,
                           double* __restrict__ out) {
  __shared__ double sd[32];
  for (long long row = blockIdx.x; row < n; row += gridDim.x) {
    const T* a = A + row * m;
    double acc = 0.0;
    for (int q = threadIdx.x; q < m; q += blockDim.x) {
      const double v = (double)a[q];
      acc += v * v;
    }
    acc = block_sum(acc, sd);
    if (threadIdx.x == 0) out[row] = acc;
    __syncthreads();
  }
}

// The first selection of a signal: take the block-wide argmax of the rule's key over its
// correlation row `src` and hand it to thread 0, which stores it in *sh_j and *sh_cj;
// with `copy` non-null, also copy the row there (into shared memory).  The caller's
// __syncthreads() makes the choice visible to the block.
template <typename T>
__device__ void load_and_select(const T* __restrict__ src, T* copy, const int K, const int rule,
                                typename Key<T>::type* sk, int* si, int* sh_j, T* sh_cj) {
  typename Key<T>::type best = Key<T>::lowest();
  int bi = SC_INT_MAX;
  for (int m = threadIdx.x; m < K; m += blockDim.x) {
    const T v = src[m];
    if (copy) copy[m] = v;
    better_of(best, bi, select_key(v, rule), m);
  }
  block_argmax(best, bi, sk, si);
  if (threadIdx.x == 0) {
    *sh_j = bi;
    *sh_cj = src[bi];
  }
}

// ---- what the least-squares pursuits (OMP, GP) share -----------------------------

// u^T A v over the leading s x s block of the symmetric k x k matrix A (warp 0; lanes
// over rows; A[q][m] is read for A[m][q] so that the lanes read consecutive doubles).
__device__ __forceinline__ double warp_quad(const double* A, int k, int s, const double* u,
                                            const double* v, int lane) {
  double acc = 0.0;
  for (int m = lane; m < s; m += 32) {
    double t = 0.0;
    for (int q = 0; q < s; ++q) t += A[(long long)q * k + m] * v[q];
    acc += u[m] * t;
  }
  return warp_sum(acc);
}

// Gram path: c -= sum_m s_delta[m] G[s_I[m]] over the support (in support order for every
// entry, as sub_rows on the CPU; zero changes skipped), fused with the next selection:
// thread 0 stores the argmax of the rule's key in *sh_j and *sh_cj.  2 K s flops, s Gram
// rows read.  The caller's __syncthreads() makes them visible.
template <typename T, typename GT>
__device__ void sub_rows_select(T* c, const GT* __restrict__ G, const int K, const int s,
                                const T* s_delta, const int* s_I, const int rule,
                                typename Key<T>::type* sk, int* si, int* sh_j, T* sh_cj) {
  typename Key<T>::type best = Key<T>::lowest();
  int bi = SC_INT_MAX;
  for (int q = threadIdx.x; q < K; q += blockDim.x) {
    T v = c[q];
    for (int m = 0; m < s; ++m) {
      const T dm = s_delta[m];
      if (dm != (T)0) v -= dm * (T)sc_wide(G[(long long)s_I[m] * K + q]);
    }
    c[q] = v;
    better_of(best, bi, select_key(v, rule), q);
  }
  block_argmax(best, bi, sk, si);
  if (threadIdx.x == 0) {
    *sh_j = bi;
    *sh_cj = c[bi];
  }
}

// No-Gram path: r -= sum_m s_delta[m] D[s_I[m]] (support order, zeros skipped); returns
// ||r||^2, valid in warp 0.  2 d s flops.  One __syncthreads() (block_sum).
template <typename T>
__device__ double sub_rows_energy(T* r, const T* __restrict__ D, const int d, const int s,
                                  const T* s_delta, const int* s_I, double* sd) {
  double e = 0.0;
  for (int q = threadIdx.x; q < d; q += blockDim.x) {
    T v = r[q];
    for (int m = 0; m < s; ++m) {
      const T dm = s_delta[m];
      if (dm != (T)0) v -= dm * D[(long long)s_I[m] * d + q];
    }
    r[q] = v;
    e += (double)v * (double)v;
  }
  return block_sum(e, sd);
}

// Gram path: row s of the support Gram, G[j, Irow[m]] for m < s and G[j, j], written to
// both triangles of the k x k matrix GII (warp 0).
template <typename GT>
__device__ __forceinline__ void support_gram_row_of_G(double* GII, const int k, const int s,
                                                      const int* Irow, const GT* __restrict__ G,
                                                      const int K, const int j, const int lane) {
  const GT* gj = G + (long long)j * K;
  for (int m = lane; m < s; m += 32) {
    const double v = (double)sc_wide(gj[Irow[m]]);
    GII[(long long)s * k + m] = v;
    GII[(long long)m * k + s] = v;
  }
  if (lane == 0) GII[(long long)s * k + s] = (double)sc_wide(gj[j]);
}

// Row s of the support Gram from the atoms, <d_j, d_Irow[m]> for m < s and <d_j, d_j>
// (float64 sums), written to both triangles of the k x k matrix GII: warp w0 computes
// entry w0, then every nw-th (one warp per entry).  2 d (s + 1) flops.
template <typename T>
__device__ void support_gram_dots(double* GII, const int k, const int s, const int* Irow,
                                  const int j, const T* __restrict__ D, const int d,
                                  const int w0, const int nw) {
  const int lane = threadIdx.x & 31;
  const T* dj = D + (long long)j * d;
  for (int m = w0; m <= s; m += nw) {
    const T* dm = m < s ? D + (long long)Irow[m] * d : dj;
    double acc = 0.0;
    for (int q = lane; q < d; q += 32) acc += (double)dj[q] * (double)dm[q];
    acc = warp_sum(acc);
    if (lane == 0) {
      GII[(long long)s * k + m] = acc;
      GII[(long long)m * k + s] = acc;
    }
  }
}

// Gram path, warp 0: row s of the support Gram, computed from the atoms when `exact`, read
// from the rows otherwise.  On 16-bit rows the kernels choose as the CPU's do: GP and
// OMP take the entries exact, but for the rows OMP's deferred-update kernel would read
// (sparsecode.pursuit.omp.deferred_updates; float16 errors under 2.5e-4 for |G| <= 0.5).
template <typename T, typename GT>
__device__ __forceinline__ void support_gram_row_warp(double* GII, const int k, const int s,
                                                      const int* Irow, const GT* __restrict__ G,
                                                      const int K, const T* __restrict__ D,
                                                      const int d, const bool exact,
                                                      const int j, const int lane) {
  if (exact) support_gram_dots(GII, k, s, Irow, j, D, d, 0, 1);
  else support_gram_row_of_G(GII, k, s, Irow, G, K, j, lane);
}

// No-Gram path: row `snew` of the support Gram, one warp per entry (the whole block):
// support_gram_dots over every warp.
template <typename T>
__device__ void support_gram_row(double* GII, const int k, const int snew, const int* Irow,
                                 const int j, const T* __restrict__ D, const int d) {
  support_gram_dots(GII, k, snew, Irow, j, D, d, threadIdx.x >> 5, blockDim.x >> 5);
}

#endif  // SPARSECODE_GPU_COMMON_CUH
