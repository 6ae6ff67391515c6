// fp32 sparse weight x dense activations: y = act(x W^T + b) [then LayerNorm(y + residual)],
// W in CSR by output row (uint16 column indices).
// Outer-product order: each non-zero W[o][k] is broadcast and multiplied into the whole token
// vector xt[k][tile], so the inner loop is contiguous FMAs with no gathers. Output rows are
// split across threads (balanced by non-zeros); 16 rows are finished, then written out.
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
static const RowF32 kRowF32[9] = {nullptr,    row_f32<1>, row_f32<2>, row_f32<3>, row_f32<4>,
                                  row_f32<5>, row_f32<6>, row_f32<7>, row_f32<8>};

}  // namespace pofa

using namespace pofa;

// x: token-major [M][K] (x_fm = 0) or feature-major [K][ld_x] (x_fm = 1).
// y: token-major [M][N] (y_fm = 0) or feature-major [N][ld_y] (y_fm = 1: all ld_y columns are
// computed, padding tokens included, so a feature-major y is fully defined for the next kernel).
extern "C" void pofa_spmm_f32(const float* x, int x_fm, int ld_x, int M, int K, int N, const int32_t* row_ptr,
                              const uint16_t* cols, const float* vals, const float* bias, int act,
                              const float* residual, const float* ln_gamma, const float* ln_beta, float ln_eps,
                              float* y, int y_fm, int ld_y, int threads) {
  const int Mc = y_fm ? ld_y : M;  // tokens computed
  const int Mp = x_fm ? ld_x : round_up(Mc, 16);
  const float* xt = x_fm ? x : (const float*)scratch(0).get((size_t)K * Mp * sizeof(float));
  const Output out{y, y_fm, ld_y, N};
#pragma omp parallel num_threads(threads)
  {
    if (!x_fm) pack_f32(x, M, K, Mp, (float*)xt);  // ends with the work-sharing barrier
    int b_lo, b_hi;
    balanced_range(row_ptr, N, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
    alignas(64) float tile[kRowBlock * kTokenTile] = {};
    for (int b = b_lo; b < b_hi; ++b) {
      const int o0 = b * kRowBlock, n_rows = std::min(kRowBlock, N - o0);
      for (int t0 = 0; t0 < Mc; t0 += kTokenTile) {
        const int n_tok = std::min(kTokenTile, Mc - t0), n_vec = (n_tok + 15) / 16;
        for (int r = 0; r < n_rows; ++r) {
          const int o = o0 + r;
          kRowF32[n_vec](xt + t0, Mp, cols + row_ptr[o], vals + row_ptr[o], row_ptr[o + 1] - row_ptr[o],
                         tile + r * kTokenTile);
        }
        store_tile(tile, n_rows, n_tok, 16 * n_vec, t0, o0, bias, act, out);
      }
    }
    post_op(out, M, round_up(Mc, 16), AddLayerNorm{residual, ln_gamma, ln_beta, ln_eps});
  }
}
