// Matching pursuit on the GPU (the CPU twin: sparsecode/pursuit/_mp_numba.py).
//
// mp_gram: the whole pursuit of a block of signals in one launch.  The caller computes
// the correlations C = X D^T with cuBLAS; then each thread block takes one signal and
// repeats, for up to k steps:
//     select j = argmax key(c)              (fused into the previous update pass)
//     add c_j to the code, energy -= c_j^2
//     c -= c_j G[j]                         (one pass over the row: update + next argmax)
// Per step and signal: 2 n_atoms flops, one Gram row read (n_atoms * itemsize bytes) and
// the correlation row read and written (2 n_atoms * itemsize), which stays in shared
// memory when it fits (use_shared), so device memory sees only the Gram row.  Two
// __syncthreads() per step.
//
// G may hold T or float16 bits (sc_half, widened exactly to float; half the bytes read).
//
// mp_nogram_step: one step for the still-active signals, whose correlations
// C = R[rows] D^T the caller recomputed with cuBLAS: select, update the code, then
// r -= c_j d_j and ||r||^2 (O(n_features)).

#include "common.cuh"

template <typename T, typename GT>
__global__ void mp_gram(T* __restrict__ C, const GT* __restrict__ G, const int n, const int K,
                        const int rule, const int k, const int width, const int use_shared,
                        const double* __restrict__ xnorm2, const double* __restrict__ tol2,
                        const double* __restrict__ thr, int* __restrict__ I,
                        double* __restrict__ Z, int* __restrict__ queue) {
  typedef typename Key<T>::type key_t;
  extern __shared__ double sc_smem[];  // the correlation row when use_shared
  __shared__ key_t sk[32];
  __shared__ int si[32];
  __shared__ int sh_row, sh_j, sh_stop;
  __shared__ T sh_cj;
  const int lane = threadIdx.x & 31;
  const bool warp0 = threadIdx.x < 32;

  for (;;) {
    const int row = next_row(queue, &sh_row);
    if (row >= n) break;
    double energy = xnorm2[row];
    const double tol = tol2[row];
    const double th = thr[row];
    if (energy > tol) {
      const T* src = C + (long long)row * K;
      T* c = use_shared ? reinterpret_cast<T*>(sc_smem) : C + (long long)row * K;
      int* Irow = I + (long long)row * width;
      double* Zrow = Z + (long long)row * width;

      load_and_select(src, use_shared ? c : (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
      if (threadIdx.x == 0) sh_stop = 0;
      __syncthreads();

      int s = 0;  // support size (used by warp 0 only)
      for (int t = 0; t < k && energy > tol; ++t) {
        const int j = sh_j;
        const T cj = sh_cj;
        if (sh_stop || vanished(cj, th, rule)) break;
        bool again = false;
        if (warp0) again = add_to_code(Irow, Zrow, s, j, (double)cj, lane);
        energy -= (double)cj * (double)cj;
        // The positive rule stops once a step re-selects an atom of the support; the
        // update below is then wasted (once) but harmless, and sh_stop ends the loop.
        const GT* g = G + (long long)j * K;
        key_t best = Key<T>::lowest();
        int bi = SC_INT_MAX;
#pragma unroll 4
        for (int m = threadIdx.x; m < K; m += blockDim.x) {
          const T v = c[m] - cj * (T)sc_wide(g[m]);
          c[m] = v;
          better_of(best, bi, select_key(v, rule), m);
        }
        block_argmax(best, bi, sk, si);
        if (threadIdx.x == 0) {
          sh_j = bi;
          sh_cj = c[bi];
          sh_stop = (again && rule == SC_POSITIVE) ? 1 : 0;
        }
        __syncthreads();
      }
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void mp_nogram_step(const T* __restrict__ C, const int* __restrict__ rows,
                               const int n_active, T* __restrict__ R, const T* __restrict__ D,
                               const int K, const int d, const int rule,
                               const double* __restrict__ tol2, const double* __restrict__ thr,
                               int* __restrict__ I, double* __restrict__ Z, const int width,
                               int* __restrict__ ns, signed char* __restrict__ status,
                               int* __restrict__ queue) {
  __shared__ typename Key<T>::type sk[32];
  __shared__ int si[32];
  __shared__ double sd[32];
  __shared__ int sh_row, sh_j;
  __shared__ T sh_cj;
  const int lane = threadIdx.x & 31;
  const bool warp0 = threadIdx.x < 32;

  for (;;) {
    const int a = next_row(queue, &sh_row);
    if (a >= n_active) break;
    const int i = rows[a];
    const T* c = C + (long long)a * K;
    load_and_select(c, (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
    __syncthreads();
    const int j = sh_j;
    const T cj = sh_cj;
    if (vanished(cj, thr[i], rule)) {
      if (threadIdx.x == 0) status[i] = SC_DONE;
    } else {
      bool again = false;
      if (warp0) {
        int s = ns[i];
        again = add_to_code(I + (long long)i * width, Z + (long long)i * width, s, j,
                            (double)cj, lane);
        if (lane == 0) ns[i] = s;
      }
      T* r = R + (long long)i * d;
      const T* dj = D + (long long)j * d;
      double e = 0.0;
      for (int q = threadIdx.x; q < d; q += blockDim.x) {
        const T v = r[q] - cj * dj[q];
        r[q] = v;
        e += (double)v * (double)v;
      }
      e = block_sum(e, sd);
      if (threadIdx.x == 0) {
        status[i] = (e <= tol2[i] || (again && rule == SC_POSITIVE)) ? SC_DONE : SC_RUNNING;
      }
    }
    __syncthreads();
  }
}
