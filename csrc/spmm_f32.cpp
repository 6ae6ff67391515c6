// fp32 sparse weight x dense activations: y[M][N] = act(x[M][K] W[N][K]^T + b), W in CSR by output row.
// Outer-product order: each non-zero W[o][k] is broadcast and multiplied into the whole token
// vector xt[k][tile], so the inner loop is contiguous FMAs with no gathers. Output rows are
// split across threads (balanced by non-zeros); 16 rows are finished, then transposed out.
#include "epilogue.h"
#include "pack.h"

namespace pofa {

// One output row over one token tile of NV*16 tokens: out[0..NV*16) = sum_j v[j] * xt[c[j]][..].
template <int NV>
static void row_f32(const float* xt, int Mp, const uint16_t* c, const float* v, int nnz, float* out) {
#ifdef POFA_AVX512
  __m512 acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = _mm512_setzero_ps();
  for (int j = 0; j < nnz; ++j) {
    const float* xr = xt + (size_t)c[j] * Mp;
    const __m512 w = _mm512_set1_ps(v[j]);
    for (int i = 0; i < NV; ++i) acc[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * i), acc[i]);
  }
  for (int i = 0; i < NV; ++i) _mm512_storeu_ps(out + 16 * i, acc[i]);
#else
  float acc[NV * 16] = {};
  for (int j = 0; j < nnz; ++j) {
    const float* xr = xt + (size_t)c[j] * Mp;
    const float w = v[j];
#pragma omp simd
    for (int i = 0; i < NV * 16; ++i) acc[i] += w * xr[i];
  }
  std::memcpy(out, acc, sizeof(acc));
#endif
}

using RowF32 = void (*)(const float*, int, const uint16_t*, const float*, int, float*);
static const RowF32 kRowF32[9] = {nullptr,         row_f32<1>, row_f32<2>, row_f32<3>, row_f32<4>,
                                  row_f32<5>,      row_f32<6>, row_f32<7>, row_f32<8>};

}  // namespace pofa

using namespace pofa;

extern "C" void pofa_spmm_f32(const float* x, int M, int K, int N, const int32_t* row_ptr, const uint16_t* cols,
                              const float* vals, const float* bias, int act, const float* residual,
                              const float* ln_gamma, const float* ln_beta, float ln_eps, float* y, int threads) {
  const int Mp = round_up(M, 16);
  float* xt = (float*)scratch(0).get((size_t)K * Mp * sizeof(float));
#pragma omp parallel num_threads(threads)
  {
    pack_f32(x, M, K, Mp, xt);  // ends with the work-sharing barrier
    int b_lo, b_hi;
    balanced_range(row_ptr, N, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
    alignas(64) float tile[kRowBlock * kTokenTile] = {};
    for (int b = b_lo; b < b_hi; ++b) {
      const int o0 = b * kRowBlock, n_rows = std::min(kRowBlock, N - o0);
      for (int t0 = 0; t0 < M; t0 += kTokenTile) {
        const int n_tok = std::min(kTokenTile, M - t0);
        const RowF32 row = kRowF32[(n_tok + 15) / 16];
        for (int r = 0; r < n_rows; ++r) {
          const int o = o0 + r;
          row(xt + t0, Mp, cols + row_ptr[o], vals + row_ptr[o], row_ptr[o + 1] - row_ptr[o], tile + r * kTokenTile);
        }
        store_tile(tile, n_rows, round_up(n_tok, 16), nullptr, n_tok, bias ? bias + o0 : nullptr, act,
                   y + (size_t)t0 * N + o0, N);
      }
    }
    if (residual) {
#pragma omp barrier
      add_layer_norm(y, M, N, AddLayerNorm{residual, ln_gamma, ln_beta, ln_eps});
    }
  }
}
