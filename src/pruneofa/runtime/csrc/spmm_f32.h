// fp32 sparse weight x dense activations: y = act(x W^T + b) [then LayerNorm(y + residual)],
// W in CSR by output row (uint16 column indices).
// Outer-product order: each non-zero W[o][k] is broadcast and multiplied into the whole token
// vector xt[k][tile], so the inner loop is contiguous FMAs with no gathers. Output rows are
// split across threads (balanced by non-zeros); 16 rows are finished, then written out.
#pragma once
#include "epilogue.h"
#include "pack.h"

namespace pofa {

#ifdef POFA_AVX2
// NY (<= 8) vectors of 8 tokens of one output row, in the same summation order as the portable loop.
template <int NY>
static void row_f32_ymm(const float* xt, int Mp, const uint16_t* c, const float* v, int nnz, float* out) {
  __m256 acc[NY];
  for (int i = 0; i < NY; ++i) acc[i] = _mm256_setzero_ps();
  for (int j = 0; j < nnz; ++j) {
    const float* xr = xt + (size_t)c[j] * Mp;
    const __m256 w = _mm256_broadcast_ss(v + j);
    for (int i = 0; i < NY; ++i) acc[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * i), acc[i]);
  }
  for (int i = 0; i < NY; ++i) _mm256_storeu_ps(out + 8 * i, acc[i]);
}
#endif

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
#elif defined(POFA_AVX2)
  // 16 ymm registers: at most 64 tokens (8 accumulators) per pass over the row's non-zeros
  constexpr int ny = NV * 2;
  for (int c0 = 0; c0 + 64 <= ny * 8; c0 += 64) row_f32_ymm<8>(xt + c0, Mp, c, v, nnz, out + c0);
  if constexpr (ny % 8 != 0) row_f32_ymm<ny % 8>(xt + ny / 8 * 64, Mp, c, v, nnz, out + ny / 8 * 64);
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

struct CsrView {
  int n_in, n_out;
  const int32_t* row_ptr;
  const uint16_t* cols;
  const float* vals;
  const float* bias;
};

// Inside a parallel region. x: token-major [M][K] (x_fm = 0; packed into xt_scratch, K x
// round_up(Mc, 16) floats) or feature-major [K][ld_x] (x_fm = 1, read in place). Mc = tokens
// computed: ld of a feature-major y (padding included), else M. Ends with a barrier.
inline void spmm_f32_team(const CsrView& w, int act, const float* x, int x_fm, int ld_x, int M, float* xt_scratch,
                          const Output& out, const AddLayerNorm& post) {
  const int Mc = out.feature_major ? out.ld : M;
  const int Mp = x_fm ? ld_x : round_up(Mc, 16);
  const float* xt = x_fm ? x : xt_scratch;
  reset_absmax(out, round_up(Mc, 16));
  if (!x_fm) pack_f32(x, M, w.n_in, Mp, xt_scratch);  // ends with the work-sharing barrier
  int b_lo, b_hi;
  balanced_range(w.row_ptr, w.n_out, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
  alignas(64) float tile[kRowBlock * kTokenTile];
  Output tiles_out = out;
  if (post.residual) tiles_out.absmax = nullptr;  // the LayerNorm keeps the maxima of what it writes
  for (int b = b_lo; b < b_hi; ++b) {
    const int o0 = b * kRowBlock, n_rows = std::min(kRowBlock, w.n_out - o0);
    for (int t0 = 0; t0 < Mc; t0 += kTokenTile) {
      const int n_tok = std::min(kTokenTile, Mc - t0), n_vec = (n_tok + 15) / 16;
      for (int r = 0; r < n_rows; ++r) {
        const int o = o0 + r, j0 = w.row_ptr[o];
        kRowF32[n_vec](xt + t0, Mp, w.cols + j0, w.vals + j0, w.row_ptr[o + 1] - j0, tile + r * kTokenTile);
      }
      store_tile(tile, n_rows, n_tok, 16 * n_vec, t0, o0, w.bias, act, tiles_out);
    }
  }
  // ends with a barrier
  post_op(out, M, round_up(Mc, 16), post, b_lo * kRowBlock, std::min(b_hi * kRowBlock, w.n_out));
}

}  // namespace pofa
