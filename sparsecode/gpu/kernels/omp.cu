// Batch-OMP on the GPU (the CPU twin: sparsecode/pursuit/_omp_numba.py).
//
// Every step of a signal (s = support size before the step):
//     select j = argmax key(c)                       (fused into the previous update)
//     row s of the support Gram GII: s + 1 entries of G (Gram path; s + 1 dot products
//       of atoms over warp 0 with `exact`, where the CPU takes them exact from 16-bit
//       rows), or s + 1 dot products of atoms (no-Gram path, the whole block)
//     grow the Cholesky factor L of GII by one row   (warp 0: s column sweeps, float64);
//       a pivot below rtol * ||d_j||^2 means d_j is in the span of the support: the
//       signal stops with status SC_DEPENDENT
//     a0[s] = <x, d_j> = c_j + G[j, I] z             (x D^T itself is not kept)
//     solve L L^T z' = a0 (warp 0, 2 s^2 flops); positive: if some z' < 0, non-negative
//       least squares on the support (Lawson-Hanson, lane 0)
//     delta = z' - z; ||r||^2 = ||x||^2 - 2 a0.z' + z'^T GII z'   (r is never formed)
//     c -= G[I]^T delta                              (Gram path: one pass over the row,
//                                                     2 n_atoms s flops, s Gram rows read,
//                                                     fused with the next selection)
//     r -= D[I]^T delta, ||r||^2                     (no-Gram path: 2 n_features s flops)
// The factor, the support Gram and the vectors live in float64 scratch (OMPScratch):
// per thread block on the Gram path (omp_gram runs whole pursuits), per signal on the
// no-Gram path (omp_nogram_step runs one step per launch).
// Dynamic shared memory: [correlation row (Gram path, use_shared)] [delta: k T] [I: k int].

#include "common.cuh"

// Scratch of one signal, in doubles: L and GII (k x k each), a0 and the solution (k each);
// with `positive`, also the non-negative solver's (NNLSScratch, k x k + 4 k).  Keep in
// step with _scratch_doubles in sparsecode/gpu/omp.py.
struct OMPScratch {
  double* L;    // k x k, lower triangle: Cholesky factor of the support Gram
  double* GII;  // k x k, both triangles: the support Gram
  double* a0;   // k: <x, d_I[m]>
  double* sol;  // k: the least-squares solution of this step
  double* nn;   // the non-negative solver's scratch (positive only)
};

__device__ __forceinline__ long long omp_scratch_doubles(int k, int positive) {
  const long long kk = (long long)k * k;
  return 2 * kk + 2LL * k + (positive ? kk + 4LL * k : 0LL);
}

__device__ __forceinline__ OMPScratch omp_scratch(double* base, int k) {
  const long long kk = (long long)k * k;
  OMPScratch w;
  w.L = base;
  w.GII = base + kk;
  w.a0 = w.GII + kk;
  w.sol = w.a0 + k;
  w.nn = w.sol + k;
  return w;
}

// The non-negative solver's scratch, k x k + 4 k doubles from `base`.
struct NNLSScratch {
  double* Lp;       // k x k: Cholesky factor of a passive subset
  double* y;        // k: its solution
  double* zc;       // k: candidate solution
  double* passive;  // k: 1.0 when passive
  double* P;        // k: indices of the passive set
};

__device__ __forceinline__ NNLSScratch nnls_scratch(double* base, int k) {
  NNLSScratch w;
  w.Lp = base;
  w.y = base + (long long)k * k;
  w.zc = w.y + k;
  w.passive = w.zc + k;
  w.P = w.passive + k;
  return w;
}

// Grow the lower Cholesky factor L (k x k) by row s from grow = GII[s, 0:s+1] (warp 0).
// Forward substitution by columns: the entry of column q receives its subtractions in
// the order p = 0, 1, ..., q - 1, as chol_append on the CPU.  Returns false (L keeps the
// factor of the first s atoms) when the pivot is below rtol * grow[s].
__device__ bool chol_append_warp(double* L, const int k, const int s, const double* grow,
                                 const double rtol, const int lane) {
  double* Ls = L + (long long)s * k;
  for (int m = lane; m < s; m += 32) Ls[m] = grow[m];
  __syncwarp();
  for (int m = 0; m < s; ++m) {
    const double x = Ls[m] / L[(long long)m * k + m];
    __syncwarp();
    if (lane == 0) Ls[m] = x;
    for (int q = m + 1 + lane; q < s; q += 32) Ls[q] -= L[(long long)q * k + m] * x;
    __syncwarp();
  }
  double acc = 0.0;
  for (int p = lane; p < s; p += 32) acc += Ls[p] * Ls[p];
  const double d2 = grow[s] - warp_sum(acc);
  if (d2 <= rtol * grow[s]) return false;
  if (lane == 0) Ls[s] = sqrt(d2);
  __syncwarp();
  return true;
}

// Solve L L^T out = b for the first s unknowns (warp 0; column sweeps).
__device__ void chol_solve_warp(const double* L, const int k, const int s, const double* b,
                                double* out, const int lane) {
  for (int m = lane; m < s; m += 32) out[m] = b[m];
  __syncwarp();
  for (int m = 0; m < s; ++m) {
    const double x = out[m] / L[(long long)m * k + m];
    __syncwarp();
    if (lane == 0) out[m] = x;
    for (int q = m + 1 + lane; q < s; q += 32) out[q] -= L[(long long)q * k + m] * x;
    __syncwarp();
  }
  for (int m = s - 1; m >= 0; --m) {
    const double x = out[m] / L[(long long)m * k + m];
    __syncwarp();
    if (lane == 0) out[m] = x;
    for (int q = lane; q < m; q += 32) out[q] -= L[(long long)m * k + q] * x;
    __syncwarp();
  }
}

// A[P, P] y = b[P] for the p indices P (A symmetric positive definite, k x k), into
// out[P] (one thread; _solve_subset on the CPU).
__device__ void solve_subset(const double* A, const int k, const double* b, const double* P,
                             const int p, double* out, const NNLSScratch& w) {
  for (int m = 0; m < p; ++m) {
    const int pm = (int)P[m];
    for (int q = 0; q <= m; ++q) {
      double acc = A[(long long)pm * k + (int)P[q]];
      for (int r = 0; r < q; ++r) acc -= w.Lp[(long long)m * k + r] * w.Lp[(long long)q * k + r];
      if (m == q) {
        w.Lp[(long long)m * k + m] = sqrt(acc > 1e-300 ? acc : 1e-300);
      } else {
        w.Lp[(long long)m * k + q] = acc / w.Lp[(long long)q * k + q];
      }
    }
  }
  for (int m = 0; m < p; ++m) {
    double acc = b[(int)P[m]];
    for (int r = 0; r < m; ++r) acc -= w.Lp[(long long)m * k + r] * w.y[r];
    w.y[m] = acc / w.Lp[(long long)m * k + m];
  }
  for (int m = p - 1; m >= 0; --m) {
    double acc = w.y[m];
    for (int r = m + 1; r < p; ++r) acc -= w.Lp[(long long)r * k + m] * w.y[r];
    w.y[m] = acc / w.Lp[(long long)m * k + m];
  }
  for (int m = 0; m < p; ++m) out[(int)P[m]] = w.y[m];
}

// Non-negative least squares in Gram form (Lawson and Hanson): minimise
// 0.5 x^T A x - b^T x over x >= 0 on the leading s x s block of A (one thread; nnls_gram on
// the CPU, step for step).
__device__ __noinline__ void nnls_gram_thread(const double* A, const int k, const double* b,
                                              const int s, double* x, double* scratch) {
  const NNLSScratch w = nnls_scratch(scratch, k);
  double bmax = 1.0;
  for (int m = 0; m < s; ++m) {
    x[m] = 0.0;
    w.passive[m] = 0.0;
    bmax = fabs(b[m]) > bmax ? fabs(b[m]) : bmax;
  }
  const double tol = 1e-12 * bmax;
  for (int outer = 0; outer < 3 * s + 3; ++outer) {
    int jb = -1;
    double best = tol;
    for (int m = 0; m < s; ++m) {
      double acc = b[m];
      for (int q = 0; q < s; ++q) acc -= A[(long long)m * k + q] * x[q];
      if (w.passive[m] == 0.0 && acc > best) {
        best = acc;
        jb = m;
      }
    }
    if (jb < 0) return;
    w.passive[jb] = 1.0;
    for (int inner = 0; inner < 3 * s + 3; ++inner) {
      int p = 0;
      for (int m = 0; m < s; ++m) {
        if (w.passive[m] != 0.0) w.P[p++] = (double)m;
        w.zc[m] = 0.0;
      }
      solve_subset(A, k, b, w.P, p, w.zc, w);
      bool ok = true;
      for (int m = 0; m < p; ++m) {
        if (w.zc[(int)w.P[m]] <= 0.0) ok = false;
      }
      if (ok) {
        for (int m = 0; m < s; ++m) x[m] = w.zc[m];
        break;
      }
      double alpha = 1.0;
      for (int m = 0; m < p; ++m) {
        const int q = (int)w.P[m];
        if (w.zc[q] <= 0.0) {
          const double a = x[q] / (x[q] - w.zc[q]);
          alpha = a < alpha ? a : alpha;
        }
      }
      for (int m = 0; m < s; ++m) {
        x[m] += alpha * (w.zc[m] - x[m]);
        if (w.passive[m] != 0.0 && x[m] <= 1e-15) {
          w.passive[m] = 0.0;
          x[m] = 0.0;
        }
      }
    }
  }
}

// One OMP step after the selection of atom j with correlation cj (warp 0, see omp_step in
// _omp_numba.py).  Row s of w.GII already holds <d_j, d_I[m]> (m < s) and ||d_j||^2.
// On success the support is Irow[0:s+1], z = Zrow the new coefficients, the change in
// s_delta/s_I, *energy = ||x - D_I^T z||^2 from xnorm2; returns SC_RUNNING, or
// SC_DEPENDENT (nothing changed).
template <typename T>
__device__ int omp_step_warp(const T cj, const int j, const int s, const int k, int* Irow,
                             double* z, const OMPScratch& w, const double rtol,
                             const int positive, const double xnorm2, T* s_delta, int* s_I,
                             double* energy, const int lane) {
  const double* grow = w.GII + (long long)s * k;
  if (!chol_append_warp(w.L, k, s, grow, rtol, lane)) return SC_DEPENDENT;
  double acc = 0.0;
  for (int m = lane; m < s; m += 32) acc += z[m] * grow[m];
  acc = (double)cj + warp_sum(acc);
  if (lane == 0) {
    w.a0[s] = acc;
    Irow[s] = j;
    z[s] = 0.0;
  }
  __syncwarp();
  const int s1 = s + 1;
  chol_solve_warp(w.L, k, s1, w.a0, w.sol, lane);
  if (positive) {
    int neg = 0;
    for (int m = lane; m < s1; m += 32) neg |= w.sol[m] < 0.0 ? 1 : 0;
    if (warp_max_int(neg)) {
      if (lane == 0) nnls_gram_thread(w.GII, k, w.a0, s1, w.sol, w.nn);
      __syncwarp();
    }
  }
  double az = 0.0;
  for (int m = lane; m < s1; m += 32) {
    const double zm = w.sol[m];
    s_delta[m] = (T)(zm - z[m]);
    s_I[m] = Irow[m];
    z[m] = zm;
    az += w.a0[m] * zm;
  }
  az = warp_sum(az);
  __syncwarp();
  // ||x - D_I^T z||^2 = ||x||^2 - 2 a0.z + z^T GII z, and GII z = a0 on the support (least
  // squares; NNLS on its passive set, z = 0 elsewhere), so z^T GII z = a0.z (as on the CPU)
  *energy = xnorm2 - az;
  return SC_RUNNING;
}

template <typename T, typename GT>
__global__ void omp_gram(T* __restrict__ C, const GT* __restrict__ G, const T* __restrict__ D,
                        const int d, const int n, const int K,
                         const int rule, const int positive, const int k, const int exact,
                         const int use_shared,
                         const double rtol, const double* __restrict__ xnorm2,
                         const double* __restrict__ tol2, const double* __restrict__ thr,
                         int* __restrict__ I, double* __restrict__ Z,
                         signed char* __restrict__ status, double* __restrict__ work,
                         int* __restrict__ queue) {
  extern __shared__ double sc_smem[];
  __shared__ typename Key<T>::type sk[32];
  __shared__ int si[32];
  __shared__ int sh_row, sh_j, sh_st;
  __shared__ T sh_cj;
  __shared__ double sh_energy;
  const int lane = threadIdx.x & 31;
  const bool warp0 = threadIdx.x < 32;
  T* s_delta = reinterpret_cast<T*>(sc_smem) + (use_shared ? K : 0);
  int* s_I = reinterpret_cast<int*>(s_delta + k);
  const OMPScratch w = omp_scratch(work + blockIdx.x * omp_scratch_doubles(k, positive), k);

  for (;;) {
    const int row = next_row(queue, &sh_row);
    if (row >= n) break;
    const double x2 = xnorm2[row];
    const double tol = tol2[row];
    const double th = thr[row];
    double energy = x2;
    int st = SC_DONE;
    if (energy > tol) {
      const T* src = C + (long long)row * K;
      T* c = use_shared ? reinterpret_cast<T*>(sc_smem) : C + (long long)row * K;
      int* Irow = I + (long long)row * k;
      double* Zrow = Z + (long long)row * k;

      load_and_select(src, use_shared ? c : (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
      __syncthreads();

      int s = 0;  // support size, the same in every thread
      while (s < k && energy > tol) {
        const int j = sh_j;
        const T cj = sh_cj;
        if (vanished(cj, th, rule)) {
          st = SC_DONE;
          break;
        }
        if (warp0) {
          support_gram_row_warp(w.GII, k, s, Irow, G, K, D, d, exact, j, lane);
          __syncwarp();
          double e = 0.0;
          const int r = omp_step_warp(cj, j, s, k, Irow, Zrow, w, rtol, positive, x2, s_delta,
                                      s_I, &e, lane);
          if (lane == 0) {
            sh_st = r;
            sh_energy = e;
          }
        }
        __syncthreads();
        st = sh_st;
        if (st != SC_RUNNING) break;
        energy = sh_energy;
        ++s;
        if (s < k && energy > tol) {
          sub_rows_select(c, G, K, s, s_delta, s_I, rule, sk, si, &sh_j, &sh_cj);
          __syncthreads();
        }
      }
    }
    if (threadIdx.x == 0) status[row] = (signed char)(st == SC_DEPENDENT ? SC_DEPENDENT : SC_DONE);
    __syncthreads();
  }
}

template <typename T>
__global__ void omp_nogram_step(const T* __restrict__ C, const int* __restrict__ rows,
                                const int n_active, T* __restrict__ R, const T* __restrict__ D,
                                const int K, const int d, const int rule, const int positive,
                                const int k, const double rtol, const double* __restrict__ tol2,
                                const double* __restrict__ thr, int* __restrict__ I,
                                double* __restrict__ Z, int* __restrict__ ns,
                                double* __restrict__ work, signed char* __restrict__ status,
                                int* __restrict__ queue) {
  extern __shared__ double sc_smem[];
  __shared__ typename Key<T>::type sk[32];
  __shared__ int si[32];
  __shared__ double sd[32];
  __shared__ int sh_row, sh_j, sh_st;
  __shared__ T sh_cj;
  const int lane = threadIdx.x & 31;
  const bool warp0 = threadIdx.x < 32;
  T* s_delta = reinterpret_cast<T*>(sc_smem);
  int* s_I = reinterpret_cast<int*>(s_delta + k);

  for (;;) {
    const int a = next_row(queue, &sh_row);
    if (a >= n_active) break;
    const int i = rows[a];
    const T* c = C + (long long)a * K;
    int* Irow = I + (long long)i * k;
    double* Zrow = Z + (long long)i * k;
    const OMPScratch w = omp_scratch(work + (long long)i * omp_scratch_doubles(k, positive), k);

    load_and_select(c, (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
    __syncthreads();
    const int j = sh_j;
    const T cj = sh_cj;
    if (vanished(cj, thr[i], rule)) {
      if (threadIdx.x == 0) status[i] = SC_DONE;
    } else {
      const int s = ns[i];
      support_gram_row(w.GII, k, s, Irow, j, D, d);
      __syncthreads();
      if (warp0) {
        double e = 0.0;
        const int r = omp_step_warp(cj, j, s, k, Irow, Zrow, w, rtol, positive, 0.0, s_delta,
                                    s_I, &e, lane);
        if (lane == 0) {
          sh_st = r;
          if (r == SC_RUNNING) ns[i] = s + 1;
        }
      }
      __syncthreads();
      if (sh_st == SC_RUNNING) {
        const double e = sub_rows_energy(R + (long long)i * d, D, d, s + 1, s_delta, s_I, sd);
        if (threadIdx.x == 0) status[i] = (e <= tol2[i] || s + 1 >= k) ? SC_DONE : SC_RUNNING;
      } else if (threadIdx.x == 0) {
        status[i] = (signed char)sh_st;
      }
    }
    __syncthreads();
  }
}
