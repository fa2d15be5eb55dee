// Gradient pursuit and ACGP on the GPU (the CPU twin: sparsecode/pursuit/_gp_numba.py).
//
// Every step of a signal (s = support size after the step's selection):
//     select j = argmax key(c)                       (fused into the previous update)
//     add j to the support: one row of the support Gram GII (s entries of G, or s dot
//       products of atoms on the no-Gram path and when G is 16-bit)
//     g = c[I]; direction d = g (ACGP: conjugate to the previous direction through GII);
//       exact line search step = (d.g) / (d^T GII d), shortened at the boundary when
//       positive; z += step d                      (warp 0, O(s^2) flops, float64)
//     c -= G[I]^T delta                              (Gram path: one pass over the row,
//                                                     2 n_atoms s flops, s Gram rows read)
//     r -= D[I]^T delta, ||r||^2                     (no-Gram path: 2 n_features s flops)
// The support Gram, the gradient, the direction and the previous direction live in
// float64 scratch: per thread block on the Gram path (gp_gram runs whole pursuits), per
// signal on the no-Gram path (gp_nogram_step runs one step per launch).
// Dynamic shared memory: [correlation row (Gram path, use_shared)] [delta: k T] [I: k int].

#include "common.cuh"

struct GPScratch {
  double* GII;    // k x k, both triangles
  double* dprev;  // k
  double* g;      // k
  double* dir;    // k
};

__device__ __forceinline__ GPScratch gp_scratch(double* base, int k) {
  GPScratch w;
  w.GII = base;
  w.dprev = base + (long long)k * k;
  w.g = w.dprev + k;
  w.dir = w.g + k;
  return w;
}

// Zero the direction where a coefficient sits at 0 and would go negative.
__device__ __forceinline__ double project(double dm, double zm, int positive) {
  return (positive && zm <= 0.0 && dm < 0.0) ? 0.0 : dm;
}

// One gradient-pursuit step after the selection (warp 0, see gp_step in _gp_numba.py).
// c is the signal's correlation row, Irow[0:s] its support (already holding the selected
// atom), z its coefficients.  Returns SC_RUNNING (delta written to s_delta/s_I, curv_prev
// and dec, the decrease of the residual energy, updated) or SC_DONE.
template <typename T>
__device__ int gp_step_warp(const T* c, const int s, const int k, const int* Irow, double* z,
                            const GPScratch& w, double& curv_prev, const int acgp,
                            const int positive, T* s_delta, int* s_I, double& dec,
                            const int lane) {
  for (int m = lane; m < s; m += 32) {
    const double gm = (double)c[Irow[m]];
    w.g[m] = gm;
    w.dir[m] = project(gm, z[m], positive);
  }
  __syncwarp();
  if (acgp && curv_prev > 0.0) {
    const double beta = -warp_quad(w.GII, k, s, w.g, w.dprev, lane) / curv_prev;
    double dg = 0.0;
    for (int m = lane; m < s; m += 32) {
      const double dm = project(w.g[m] + beta * w.dprev[m], z[m], positive);
      w.dir[m] = dm;
      dg += dm * w.g[m];
    }
    dg = warp_sum(dg);
    if (dg <= 0.0) {  // lost descent (projection): fall back to the gradient
      for (int m = lane; m < s; m += 32) w.dir[m] = project(w.g[m], z[m], positive);
    }
    __syncwarp();
  }
  double dg = 0.0;
  for (int m = lane; m < s; m += 32) dg += w.dir[m] * w.g[m];
  dg = warp_sum(dg);
  const double curv = warp_quad(w.GII, k, s, w.dir, w.dir, lane);
  if (dg <= 0.0 || curv <= 0.0) return SC_DONE;
  double step = dg / curv;
  int hit = -1;  // the coefficient that reaches 0 first (positive variant)
  if (positive) {
    // the smallest -z/d below the step over d < 0, the lowest index among equals
    double best = step;
    int bm = SC_INT_MAX;
    for (int m = lane; m < s; m += 32) {
      const double dm = w.dir[m];
      if (dm < 0.0) {
        const double r = -z[m] / dm;
        if (r < best) {
          best = r;
          bm = m;
        }
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const double b2 = __shfl_xor_sync(SC_FULL_MASK, best, off);
      const int m2 = __shfl_xor_sync(SC_FULL_MASK, bm, off);
      if (b2 < best || (b2 == best && m2 < bm)) {
        best = b2;
        bm = m2;
      }
    }
    if (bm != SC_INT_MAX) {
      step = best;
      hit = bm;
    }
  }
  for (int m = lane; m < s; m += 32) {
    const double dm = w.dir[m];
    double delta = step * dm;
    double zm = z[m] + delta;
    if (positive && (zm < 0.0 || m == hit)) {  // land exactly on the boundary
      delta -= zm;
      zm = 0.0;
    }
    z[m] = zm;
    s_delta[m] = (T)delta;
    s_I[m] = Irow[m];
    w.dprev[m] = dm;
  }
  curv_prev = curv;
  dec = 2.0 * step * dg - step * step * curv;
  return SC_RUNNING;
}

template <typename T, typename GT>
__global__ void gp_gram(T* __restrict__ C, const GT* __restrict__ G, const T* __restrict__ D,
                        const int d, const int n, const int K,
                        const int rule, const int acgp, const int positive, const int k,
                        const int max_steps, const int use_shared,
                        const double* __restrict__ xnorm2, const double* __restrict__ tol2,
                        const double* __restrict__ thr, int* __restrict__ I,
                        double* __restrict__ Z, double* __restrict__ work,
                        int* __restrict__ queue) {
  typedef typename Key<T>::type key_t;
  extern __shared__ double sc_smem[];
  __shared__ key_t sk[32];
  __shared__ int si[32];
  __shared__ int sh_row, sh_j, sh_s, sh_st;
  __shared__ T sh_cj;
  __shared__ double sh_dec;
  const int lane = threadIdx.x & 31;
  const bool warp0 = threadIdx.x < 32;
  const bool exact = sizeof(GT) < sizeof(T);  // support Gram entries from D (16-bit rows)
  T* s_delta = reinterpret_cast<T*>(sc_smem) + (use_shared ? K : 0);
  int* s_I = reinterpret_cast<int*>(s_delta + k);
  const GPScratch w = gp_scratch(work + (long long)blockIdx.x * ((long long)k * k + 3LL * k), k);

  for (;;) {
    const int row = next_row(queue, &sh_row);
    if (row >= n) break;
    double energy = xnorm2[row];
    const double tol = tol2[row];
    const double th = thr[row];
    if (energy > tol) {
      const T* src = C + (long long)row * K;
      T* c = use_shared ? reinterpret_cast<T*>(sc_smem) : C + (long long)row * K;
      int* Irow = I + (long long)row * k;
      double* Zrow = Z + (long long)row * k;

      load_and_select(src, use_shared ? c : (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
      __syncthreads();

      int s = 0;                // support size, the same in every thread
      double curv_prev = 0.0;   // curvature of the previous direction (warp 0)
      for (int t = 0; t < max_steps; ++t) {
        const int j = sh_j;
        const T cj = sh_cj;
        if (!(energy > tol) || s >= k || vanished(cj, th, rule)) break;
        if (warp0) {
          int s1 = s;
          if (find_in_support(Irow, s, j, lane) < 0) {
            support_gram_row_warp(w.GII, k, s, Irow, G, K, D, d, exact, j, lane);
            if (lane == 0) {
              Irow[s] = j;
              Zrow[s] = 0.0;
              w.dprev[s] = 0.0;
            }
            s1 = s + 1;
            __syncwarp();
          }
          double dec = 0.0;
          const int st = gp_step_warp(c, s1, k, Irow, Zrow, w, curv_prev, acgp, positive,
                                      s_delta, s_I, dec, lane);
          if (lane == 0) {
            sh_s = s1;
            sh_st = st;
            sh_dec = dec;
          }
        }
        __syncthreads();
        if (sh_st != SC_RUNNING) break;
        energy -= sh_dec;
        s = sh_s;
        sub_rows_select(c, G, K, s, s_delta, s_I, rule, sk, si, &sh_j, &sh_cj);
        __syncthreads();
      }
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void gp_nogram_step(const T* __restrict__ C, const int* __restrict__ rows,
                               const int n_active, T* __restrict__ R, const T* __restrict__ D,
                               const int K, const int d, const int rule, const int acgp,
                               const int positive, const int k,
                               const double* __restrict__ tol2, const double* __restrict__ thr,
                               int* __restrict__ I, double* __restrict__ Z,
                               int* __restrict__ ns, double* __restrict__ curv,
                               double* __restrict__ work, signed char* __restrict__ status,
                               int* __restrict__ queue) {
  extern __shared__ double sc_smem[];
  __shared__ typename Key<T>::type sk[32];
  __shared__ int si[32];
  __shared__ double sd[32];
  __shared__ int sh_row, sh_j, sh_new, sh_st;
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
    const GPScratch w = gp_scratch(work + (long long)i * ((long long)k * k + 3LL * k), k);

    load_and_select(c, (T*)0, K, rule, sk, si, &sh_j, &sh_cj);
    __syncthreads();
    const int j = sh_j;
    const T cj = sh_cj;
    if (vanished(cj, thr[i], rule)) {
      if (threadIdx.x == 0) status[i] = SC_DONE;
    } else {
      int s = ns[i];
      if (warp0) {
        const int pos = find_in_support(Irow, s, j, lane);
        if (lane == 0) {
          sh_new = pos < 0 ? s : -1;
          if (pos < 0) {
            Irow[s] = j;
            Zrow[s] = 0.0;
            w.dprev[s] = 0.0;
          }
        }
      }
      __syncthreads();
      const int snew = sh_new;
      if (snew >= 0) {
        support_gram_row(w.GII, k, snew, Irow, j, D, d);
        s = snew + 1;
      }
      __syncthreads();
      if (warp0) {
        double cp = curv[i];
        double dec = 0.0;
        const int st = gp_step_warp(c, s, k, Irow, Zrow, w, cp, acgp, positive, s_delta, s_I,
                                    dec, lane);
        if (lane == 0) {
          sh_st = st;
          curv[i] = cp;
          ns[i] = s;
        }
      }
      __syncthreads();
      if (sh_st == SC_RUNNING) {
        const double e = sub_rows_energy(R + (long long)i * d, D, d, s, s_delta, s_I, sd);
        if (threadIdx.x == 0) status[i] = (e <= tol2[i] || s >= k) ? SC_DONE : SC_RUNNING;
      } else if (threadIdx.x == 0) {
        status[i] = SC_DONE;
      }
    }
    __syncthreads();
  }
}
