// What happens to a finished tile of 16 output rows x up to 128 token positions (fp32,
// feature-major, dequantised, tokens in natural order): bias, activation, and the write-out,
// either transposed back to token-major y[M][N] or as rows of a feature-major yT[N][ld].
// Then, optionally, the post-op y = LayerNorm(y + residual) over each token's N features.
#pragma once
#include "common.h"

namespace pofa {

constexpr int kTokenTile = 128;  // tokens per tile: 8 zmm fp32 accumulators, 2 zmm of uint8 per feature

struct Output {
  float* y;
  int feature_major;  // 0: y[M][N] (row stride N); 1: y[N][ld]
  int ld;             // token stride of a feature-major y (ignored for token-major)
  int n_out;          // N
  // Feature-major only, optional: per-thread running max |y| per token, [threads][ld]. The next
  // int8 kernel takes its per-token scales from these instead of re-reading y (`token_scales_parts`).
  float* absmax = nullptr;
};

// Token-major: tile[r * kTokenTile + p], rows r < n_rows, positions p < n_tok, written to
// y[t0 + p][o0 + r]. Rows n_rows..15 of the tile may hold anything (masked off).
inline void store_token_major(const float* tile, int n_rows, int n_tok, const float* bias, int act, float* y,
                              int n_out) {
#ifdef POFA_AVX512
  const __mmask16 mask = (__mmask16)((1u << n_rows) - 1);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
  for (int g = 0; g < n_tok; g += 16) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tile + i * kTokenTile + g);
    transpose16(r);
    const int n = std::min(16, n_tok - g);
    for (int j = 0; j < n; ++j) {
      __m512 v = _mm512_add_ps(r[j], b);
      v = activate16(v, act);
      _mm512_mask_storeu_ps(y + (size_t)(g + j) * n_out, mask, v);
    }
  }
#elif defined(POFA_AVX2)
  for (int r0 = 0; r0 < n_rows; r0 += 8) {  // 8 rows x 8 tokens per transpose
    const __m256i mask = lanes8(n_rows - r0);
    const __m256 b = bias ? _mm256_maskload_ps(bias + r0, mask) : _mm256_setzero_ps();
    for (int g = 0; g < n_tok; g += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tile + (r0 + i) * kTokenTile + g);
      transpose8(r);
      const int n = std::min(8, n_tok - g);
      for (int j = 0; j < n; ++j) {
        __m256 v = _mm256_add_ps(r[j], b);
        v = activate8(v, act);
        _mm256_maskstore_ps(y + (size_t)(g + j) * n_out + r0, mask, v);
      }
    }
  }
#else
  for (int p = 0; p < n_tok; ++p)
    for (int r = 0; r < n_rows; ++r) {
      const float v = tile[r * kTokenTile + p] + (bias ? bias[r] : 0.0f);
      y[(size_t)p * n_out + r] = activate(v, act);
    }
#endif
}

// Feature-major: row r of the tile -> y[(o0 + r) * ld + t0 + p] for p < n_pos (a multiple of 16);
// absmax (this thread's running maxima from token t0 on, or null) is updated with |y|.
inline void store_feature_major(const float* tile, int n_rows, int n_pos, const float* bias, int act, float* y,
                                int ld, float* absmax) {
  for (int r = 0; r < n_rows; ++r) {
    const float* src = tile + r * kTokenTile;
    float* dst = y + (size_t)r * ld;
    const float b = bias ? bias[r] : 0.0f;
#ifdef POFA_AVX512
    const __m512 bv = _mm512_set1_ps(b);
    for (int p = 0; p < n_pos; p += 16) {
      __m512 v = _mm512_add_ps(_mm512_loadu_ps(src + p), bv);
      v = activate16(v, act);
      _mm512_storeu_ps(dst + p, v);
      if (absmax) _mm512_storeu_ps(absmax + p, _mm512_max_ps(_mm512_loadu_ps(absmax + p), _mm512_abs_ps(v)));
    }
#elif defined(POFA_AVX2)
    const __m256 bv = _mm256_set1_ps(b);
    for (int p = 0; p < n_pos; p += 8) {
      __m256 v = _mm256_add_ps(_mm256_loadu_ps(src + p), bv);
      v = activate8(v, act);
      _mm256_storeu_ps(dst + p, v);
      if (absmax) _mm256_storeu_ps(absmax + p, _mm256_max_ps(_mm256_loadu_ps(absmax + p), abs8(v)));
    }
#else
    for (int p = 0; p < n_pos; ++p) {
      dst[p] = activate(src[p] + b, act);
      if (absmax) absmax[p] = std::max(absmax[p], std::fabs(dst[p]));
    }
#endif
  }
}

// Start this thread's running maxima for an output (call before its tiles; each thread owns its slice).
inline void reset_absmax(const Output& out, int M_cols) {
  if (out.absmax) std::fill_n(out.absmax + (size_t)omp_get_thread_num() * out.ld, M_cols, 0.0f);
}

// Write a tile whose first token is t0 and first output row o0.
inline void store_tile(const float* tile, int n_rows, int n_tok, int n_pos, int t0, int o0, const float* bias,
                       int act, const Output& out) {
  const float* b = bias ? bias + o0 : nullptr;
  if (out.feature_major)
    store_feature_major(tile, n_rows, n_pos, b, act, out.y + (size_t)o0 * out.ld + t0, out.ld,
                        out.absmax ? out.absmax + (size_t)omp_get_thread_num() * out.ld + t0 : nullptr);
  else
    store_token_major(tile, n_rows, n_tok, b, act, out.y + (size_t)t0 * out.n_out + o0, out.n_out);
}

// Feature-major h[N][ld] -> token-major y[M][N] (the inverse of pack_f32), work-shared over features.
inline void unpack_f32(const float* h, int N, int ld, int M, float* y) {
#ifdef POFA_AVX512
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < N; k0 += 16) {
    const int nk = std::min(16, N - k0);
    const __mmask16 kmask = (__mmask16)((1u << nk) - 1);
    for (int t0 = 0; t0 < M; t0 += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < nk ? _mm512_loadu_ps(h + (size_t)(k0 + i) * ld + t0) : _mm512_setzero_ps();
      transpose16(r);
      for (int j = 0; j < 16 && t0 + j < M; ++j) _mm512_mask_storeu_ps(y + (size_t)(t0 + j) * N + k0, kmask, r[j]);
    }
  }
#elif defined(POFA_AVX2)
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < N; k0 += 8) {
    const int nk = std::min(8, N - k0);
    const __m256i kmask = lanes8(nk);
    for (int t0 = 0; t0 < M; t0 += 8) {  // t0 + 8 <= ld: ld is a multiple of 64
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = i < nk ? _mm256_loadu_ps(h + (size_t)(k0 + i) * ld + t0) : _mm256_setzero_ps();
      transpose8(r);
      for (int j = 0; j < 8 && t0 + j < M; ++j) _mm256_maskstore_ps(y + (size_t)(t0 + j) * N + k0, kmask, r[j]);
    }
  }
#else
#pragma omp for schedule(static)
  for (int k = 0; k < N; ++k)
    for (int t = 0; t < M; ++t) y[(size_t)t * N + k] = h[(size_t)k * ld + t];
#endif
}

// Post-op y = LayerNorm(y + residual): BERT's `LayerNorm(dense(x) + input)`. Needs whole tokens, so it
// runs after the tile loop. Token-major y: work-shared over tokens after a barrier. Feature-major y: each
// thread keeps the rows it computed (below).
struct AddLayerNorm {
  const float* residual;  // same layout as y; null = no post-op
  const float* gamma;
  const float* beta;
  float eps;
  // optional: y + residual before the normalisation, in y's layout (may be the residual itself: a
  // pre-LayerNorm block's running sum h += y, whose next LayerNorm then comes out as y)
  float* sum_out = nullptr;
  // feature-major y: layer_norm_stats_floats(N, ld) floats of scratch shared by the team
  float* stats = nullptr;
};

inline size_t layer_norm_stats_floats(int N, int ld) {
  return 2 * (size_t)((N + kRowBlock - 1) / kRowBlock) * ld;
}

// One token-major row: row = LayerNorm(row + res) over its N features (sum_out: row + res, or null).
inline void add_layer_norm_row(float* row, const float* res, int N, const AddLayerNorm& p, float* sum_out) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < N; ++i) {
    row[i] += res[i];
    sum += row[i];
  }
  if (sum_out) std::copy(row, row + N, sum_out);
  const float mean = sum / N;
  float var = 0.0f;
#pragma omp simd reduction(+ : var)
  for (int i = 0; i < N; ++i) var += (row[i] - mean) * (row[i] - mean);
  const float rstd = 1.0f / std::sqrt(var / N + p.eps);
#pragma omp simd
  for (int i = 0; i < N; ++i) row[i] = (row[i] - mean) * rstd * p.gamma[i] + p.beta[i];
}

inline void add_layer_norm_token_major(float* y, int M, int N, const AddLayerNorm& p) {
#pragma omp for schedule(static)
  for (int t = 0; t < M; ++t)
    add_layer_norm_row(y + (size_t)t * N, p.residual + (size_t)t * N, N, p,
                       p.sum_out ? p.sum_out + (size_t)t * N : nullptr);
}

// Feature-major: each thread normalises the rows it computed, [row_lo, row_hi) (whole 16-row blocks), so
// that no row moves to the other core's cache between the matmul, the LayerNorm and the next packing
// (split by tokens, it moved half of every row: at 2 threads the packing, epilogues and LayerNorms took
// 47% of the CPU time of a 6x384 int8 call, 26% at 1 thread). A token's
// statistics then come from every thread: each block of 16 rows keeps its mean and sum of squared
// deviations per token, and after a barrier every thread merges the blocks in order (Chan et al.'s
// pairwise update: two-pass exact within a block, no cancellation across them), so the result does not
// depend on how many threads there were. absmax (optional, [threads][ld]): this thread's slice gets the
// max |y| of its rows per token (zeroed by the matmul beforehand). Ends with a barrier.
constexpr int kColumnChunk = 64;  // tokens whose statistics are vectorised together

inline void add_layer_norm_feature_major(float* y, int M_cols, int N, int ld, const AddLayerNorm& p, float* absmax,
                                         int row_lo, int row_hi) {
  const int n_blocks = (N + kRowBlock - 1) / kRowBlock;
  float* block_mean = p.stats;
  float* block_m2 = p.stats + (size_t)n_blocks * ld;
  for (int r0 = row_lo; r0 < row_hi; r0 += kRowBlock) {  // y += residual, per-block statistics
    const int n_rows = std::min(kRowBlock, row_hi - r0), b = r0 / kRowBlock;
    for (int t0 = 0; t0 < M_cols; t0 += kColumnChunk) {
      const int w = std::min(kColumnChunk, M_cols - t0);
      float sum[kColumnChunk] = {}, m2[kColumnChunk] = {};
      for (int k = r0; k < r0 + n_rows; ++k) {
        float* row = y + (size_t)k * ld + t0;
        const float* res = p.residual + (size_t)k * ld + t0;
#pragma omp simd
        for (int i = 0; i < w; ++i) {
          row[i] += res[i];
          sum[i] += row[i];
        }
        if (p.sum_out) std::copy(row, row + w, p.sum_out + (size_t)k * ld + t0);
      }
      float* mean = block_mean + (size_t)b * ld + t0;
      for (int i = 0; i < w; ++i) mean[i] = sum[i] / n_rows;
      for (int k = r0; k < r0 + n_rows; ++k) {
        const float* row = y + (size_t)k * ld + t0;
#pragma omp simd
        for (int i = 0; i < w; ++i) m2[i] += (row[i] - mean[i]) * (row[i] - mean[i]);
      }
      std::copy(m2, m2 + w, block_m2 + (size_t)b * ld + t0);
    }
  }
#pragma omp barrier
  for (int t0 = 0; t0 < M_cols; t0 += kColumnChunk) {
    const int w = std::min(kColumnChunk, M_cols - t0);
    float mean[kColumnChunk] = {}, m2[kColumnChunk] = {}, rstd[kColumnChunk], mx[kColumnChunk] = {};
    float n_a = 0.0f;
    for (int b = 0; b < n_blocks; ++b) {  // merge the blocks, in order
      const float n_b = (float)std::min(kRowBlock, N - b * kRowBlock), n = n_a + n_b;
      const float step = n_b / n, cross = n_a * n_b / n;
      const float *bm = block_mean + (size_t)b * ld + t0, *bq = block_m2 + (size_t)b * ld + t0;
#pragma omp simd
      for (int i = 0; i < w; ++i) {
        const float delta = bm[i] - mean[i];
        mean[i] += delta * step;
        m2[i] += bq[i] + delta * delta * cross;
      }
      n_a = n;
    }
    for (int i = 0; i < w; ++i) rstd[i] = 1.0f / std::sqrt(m2[i] / N + p.eps);
    for (int k = row_lo; k < row_hi; ++k) {
      float* row = y + (size_t)k * ld + t0;
      const float g = p.gamma[k], b = p.beta[k];
#pragma omp simd
      for (int i = 0; i < w; ++i) {
        row[i] = (row[i] - mean[i]) * rstd[i] * g + b;
        mx[i] = std::max(mx[i], std::fabs(row[i]));
      }
    }
    if (absmax && row_lo < row_hi) std::copy(mx, mx + w, absmax + (size_t)omp_get_thread_num() * ld + t0);
  }
#pragma omp barrier
}

// Ends with a barrier either way: the output is complete when it returns. [row_lo, row_hi): the rows of a
// feature-major y this thread computed.
inline void post_op(const Output& out, int M, int M_cols, const AddLayerNorm& p, int row_lo, int row_hi) {
  if (p.residual && out.feature_major) return add_layer_norm_feature_major(out.y, M_cols, out.n_out, out.ld, p,
                                                                           out.absmax, row_lo, row_hi);
#pragma omp barrier
  if (p.residual) add_layer_norm_token_major(out.y, M, out.n_out, p);
}

}  // namespace pofa
