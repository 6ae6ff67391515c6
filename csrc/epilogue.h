// Epilogue shared by the kernels: a finished tile of 16 output rows x up to 128 token positions
// (fp32, feature-major, already dequantised) is transposed back to token-major and written as
// y = act(tile + bias).
#pragma once
#include "common.h"

namespace pofa {

constexpr int kTokenTile = 128;  // tokens per tile: 8 zmm fp32 accumulators, 2 zmm of uint8 per feature

// tile[r * kTokenTile + p] for rows r < n_rows and positions p < n_pos; position p holds token
// token_of[p] (identity when token_of is null); tokens >= n_tok are padding and skipped.
// Rows n_rows..15 may hold anything. y points at y[t0][o0]; tokens are n_out floats apart.
inline void store_tile(const float* tile, int n_rows, int n_pos, const int* token_of, int n_tok, const float* bias,
                       int act, float* y, int n_out) {
#ifdef POFA_AVX512
  const __mmask16 mask = (__mmask16)((1u << n_rows) - 1);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
  for (int g = 0; g < n_pos; g += 16) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tile + i * kTokenTile + g);
    transpose16(r);
    for (int j = 0; j < 16; ++j) {
      const int t = token_of ? token_of[g + j] : g + j;
      if (t >= n_tok) continue;
      __m512 v = _mm512_add_ps(r[j], b);
      if (act == kGelu) v = gelu16(v);
      _mm512_mask_storeu_ps(y + (size_t)t * n_out, mask, v);
    }
  }
#else
  for (int p = 0; p < n_pos; ++p) {
    const int t = token_of ? token_of[p] : p;
    if (t >= n_tok) continue;
    for (int r = 0; r < n_rows; ++r) {
      const float v = tile[r * kTokenTile + p] + (bias ? bias[r] : 0.0f);
      y[(size_t)t * n_out + r] = act == kGelu ? gelu(v) : v;
    }
  }
#endif
}

}  // namespace pofa

namespace pofa {

// Optional second pass after all output rows are written ("post-op"): y[t] = LayerNorm(y[t] + residual[t]),
// the `LayerNorm(dense(x) + input)` that closes BERT's attention and FFN blocks. Needs whole rows,
// so it runs after the tile loop (the caller puts a barrier before it). Work-shared over tokens.
struct AddLayerNorm {
  const float* residual;  // [M][N]; null = no post-op
  const float* gamma;
  const float* beta;
  float eps;
};

inline void add_layer_norm(float* y, int M, int N, const AddLayerNorm& p) {
#pragma omp for schedule(static)
  for (int t = 0; t < M; ++t) {
    float* row = y + (size_t)t * N;
    const float* res = p.residual + (size_t)t * N;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < N; ++i) {
      row[i] += res[i];
      sum += row[i];
    }
    const float mean = sum / N;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < N; ++i) var += (row[i] - mean) * (row[i] - mean);
    const float rstd = 1.0f / std::sqrt(var / N + p.eps);
#pragma omp simd
    for (int i = 0; i < N; ++i) row[i] = (row[i] - mean) * rstd * p.gamma[i] + p.beta[i];
  }
}

}  // namespace pofa
