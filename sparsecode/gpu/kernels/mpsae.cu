// MP-SAE training on the GPU: the unrolled MP encoder and its exact backward pass (the
// CPU twin: sparsecode/sae/_mpsae_numba.py; the maths: sparsecode/sae/mpsae.py).
//
// mpsae_forward: the encoder of a block of signals in one launch, on the correlations
// C = X D^T and the Gram G = D D^T (cuBLAS) of atoms of any norm.  Per signal and step:
//     select j = argmax key(c) (fused into the previous pass), record (j, c_j) in the
//     trace J / Cs and add c_j to the code;
//     MP:   energy -= c_j^2 (2 - ||d_j||^2), c -= c_j G[j]   (2 n_atoms flops, one Gram row)
//     TopK: take j out of the running (c_j = 0 for abs, -inf otherwise), select again.
// mpsae_backward: one thread block per signal, the residual r and the gradient g with
// respect to it in shared memory (float64):
//     r = x - sum_t c_t d_{j_t},  loss = ||r||^2,  g = 2 s r
//     MP, t = T-1 .. 0:  r += c_t d  (now r_{t-1}),  gd = g . d,
//                        dL/dd += -(gd r + c_t g)   (atomicAdd into the atom's row),
//                        g -= gd d
//     TopK:              dL/dd_j += -((g0 . d_j) x + c_j g0),  g -= (g0 . d_j) d_j
// and writes dL/dx = g per signal (the pre-bias gradient is minus their sum).  Per signal
// and step: ~8 n_features flops, one atom row read and one row of atomic adds; no dense
// (n, n_atoms) gradient is formed.  One __syncthreads() pair per step.

#include "common.cuh"

template <typename T>
__global__ void mpsae_forward(T* __restrict__ C, const T* __restrict__ G, const int n,
                              const int K, const int rule, const int k, const int width,
                              const int topk, const int use_shared,
                              const double* __restrict__ xnorm2, const double* __restrict__ tol2,
                              const double* __restrict__ thr, int* __restrict__ I,
                              double* __restrict__ Z, int* __restrict__ J,
                              double* __restrict__ Cs, int* __restrict__ nsteps,
                              int* __restrict__ queue) {
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
    int t = 0;
    if (energy > tol) {
      const T* src = C + (long long)row * K;
      T* c = use_shared ? reinterpret_cast<T*>(sc_smem) : C + (long long)row * K;
      int* Irow = I + (long long)row * width;
      double* Zrow = Z + (long long)row * width;
      int* Jrow = J + (long long)row * k;
      double* Csrow = Cs + (long long)row * k;

      load_and_select(src, use_shared ? c : (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
      if (threadIdx.x == 0) sh_stop = 0;
      __syncthreads();

      int s = 0;  // code entries (used by warp 0 only)
      while (t < k && energy > tol) {
        const int j = sh_j;
        const T cj = sh_cj;
        if (sh_stop || vanished(cj, th, rule)) break;
        bool again = false;
        if (warp0) again = add_to_code(Irow, Zrow, s, j, (double)cj, lane);
        if (threadIdx.x == 0) {
          Jrow[t] = j;
          Csrow[t] = (double)cj;
        }
        ++t;
        key_t best = Key<T>::lowest();
        int bi = SC_INT_MAX;
        if (topk) {
          __syncthreads();  // every thread has read c[j] (as sh_cj) before it changes
          if (threadIdx.x == 0) c[j] = rule == SC_ABS ? (T)0 : Key<T>::neg_inf();
          __syncthreads();
          for (int m = threadIdx.x; m < K; m += blockDim.x) {
            better_of(best, bi, select_key(c[m], rule), m);
          }
        } else {
          // ||r - c d||^2 = ||r||^2 - c^2 (2 - ||d||^2): exact for atoms of any norm
          energy -= (double)cj * (double)cj * (2.0 - (double)G[(long long)j * K + j]);
          const T* g = G + (long long)j * K;
          for (int m = threadIdx.x; m < K; m += blockDim.x) {
            const T v = c[m] - cj * g[m];
            c[m] = v;
            better_of(best, bi, select_key(v, rule), m);
          }
        }
        block_argmax(best, bi, sk, si);
        if (threadIdx.x == 0) {
          sh_j = bi;
          sh_cj = c[bi];
          // the positive rule stops once a step re-selects an atom of the code
          sh_stop = (again && rule == SC_POSITIVE && !topk) ? 1 : 0;
        }
        __syncthreads();
      }
    }
    if (threadIdx.x == 0) nsteps[row] = t;
    __syncthreads();
  }
}

// Sum over the block, made visible to every thread (block_sum, then a broadcast through
// shared memory: two __syncthreads()).
__device__ __forceinline__ double block_sum_all(double v, double* sd, double* sh) {
  v = block_sum(v, sd);
  if (threadIdx.x == 0) *sh = v;
  __syncthreads();
  return *sh;
}

template <typename T>
__global__ void mpsae_backward(const T* __restrict__ X, const T* __restrict__ D, const int n,
                               const int d, const int k, const int* __restrict__ J,
                               const double* __restrict__ Cs, const int* __restrict__ nsteps,
                               const int topk, const int backward, const double gscale,
                               double* __restrict__ loss2, T* __restrict__ gD,
                               double* __restrict__ dX, int* __restrict__ queue) {
  extern __shared__ double sc_smem[];  // r, then g: d doubles each
  __shared__ double sd[32];
  __shared__ double sh_sum;
  __shared__ int sh_row;
  double* r = sc_smem;
  double* g = sc_smem + d;

  for (;;) {
    const int row = next_row(queue, &sh_row);
    if (row >= n) break;
    const int steps = nsteps[row];
    const T* x = X + (long long)row * d;
    const int* Jrow = J + (long long)row * k;
    const double* Csrow = Cs + (long long)row * k;
    // the residual, in the order of the CPU's _residual
    double e = 0.0;
    for (int q = threadIdx.x; q < d; q += blockDim.x) {
      double v = (double)x[q];
      for (int t = 0; t < steps; ++t) v -= Csrow[t] * (double)D[(long long)Jrow[t] * d + q];
      r[q] = v;
      g[q] = 2.0 * gscale * v;
      e += v * v;
    }
    e = block_sum(e, sd);
    if (threadIdx.x == 0) loss2[row] = e;
    if (backward) {
      for (int i = 0; i < steps; ++i) {
        const int t = topk ? i : steps - 1 - i;
        const int j = Jrow[t];
        const double cj = Csrow[t];
        const T* dj = D + (long long)j * d;
        T* gj = gD + (long long)j * d;
        double part = 0.0;
        if (topk) {  // r holds dL/dr = 2 s r throughout; g accumulates dL/dx
          for (int q = threadIdx.x; q < d; q += blockDim.x) part += (2.0 * gscale * r[q]) * (double)dj[q];
        } else {     // rebuild r_{t-1} = r_t + c_t d
          for (int q = threadIdx.x; q < d; q += blockDim.x) {
            r[q] += cj * (double)dj[q];
            part += g[q] * (double)dj[q];
          }
        }
        const double gd = block_sum_all(part, sd, &sh_sum);
        for (int q = threadIdx.x; q < d; q += blockDim.x) {
          const double dq = (double)dj[q];
          double upd;
          if (topk) {
            upd = gd * (double)x[q] + cj * (2.0 * gscale * r[q]);
          } else {
            upd = gd * r[q] + cj * g[q];
          }
          atomicAdd(gj + q, (T)(-upd));
          g[q] -= gd * dq;
        }
        __syncthreads();
      }
      for (int q = threadIdx.x; q < d; q += blockDim.x) dX[(long long)row * d + q] = g[q];
    }
    __syncthreads();
  }
}
