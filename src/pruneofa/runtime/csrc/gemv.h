// Few-token products (a decoder's per-token step): y[t] = act(W x[t] + b) for M <= kGemvMaxTokens
// token-major rows. The tiled kernels multiply each weight non-zero into a whole vector of 16 (fp32)
// or 64 (int8) tokens and transpose in and out: for one token that is 16-64x the arithmetic, slower
// than a dense GEMV. Here an output row is a dot product of its non-zeros with the token's
// activations read by column index (AVX2 gathers), each row's weights streamed once per call.
// int8: activations quantised per token exactly as the tiled kernels do, integer sums exact, so the
// outputs are bit-identical to theirs (dequantisation, bias and activation in a second pass after a
// barrier, as the tiled kernels' separate epilogue: no FMA contraction across them).
#pragma once
#include "spmm_f32.h"
#include "spmm_i8.h"

namespace pofa {

constexpr int kGemvMaxTokens = 4;  // up to here one pass per token beats 16/64-token vectors

#if defined(__AVX2__) && defined(__FMA__)
#define POFA_GEMV_SIMD 1
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline int32_t hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}
#endif

// sum_j v[j] * x[c[j]]
inline float dot_csr_f32(const float* x, const uint16_t* c, const float* v, int nnz) {
  int j = 0;
  float s = 0.0f;
#ifdef POFA_GEMV_SIMD
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; j + 16 <= nnz; j += 16) {
    const __m256i i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(c + j)));
    const __m256i i1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(c + j + 8)));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j), _mm256_i32gather_ps(x, i0, 4), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j + 8), _mm256_i32gather_ps(x, i1, 4), a1);
  }
  for (; j + 8 <= nnz; j += 8) {
    const __m256i i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(c + j)));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j), _mm256_i32gather_ps(x, i0, 4), a0);
  }
  s = hsum8(_mm256_add_ps(a0, a1));
#endif
  for (; j < nnz; ++j) s += v[j] * x[c[j]];
  return s;
}

// Quads with explicit columns (layouts gather and blocks): sum_j w8[j] * xq[c[j]], xq as int32.
inline int32_t dot_quads_i8(const int32_t* xq, const uint16_t* c, const int32_t* qw, int nq) {
  int q = 0;
  int32_t s = 0;
#ifdef POFA_GEMV_SIMD
  __m256i acc = _mm256_setzero_si256();
  for (; q + 2 <= nq; q += 2) {  // two quads: 8 non-zeros
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(c + 4 * q)));
    const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(qw + q)));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(w, _mm256_i32gather_epi32(xq, idx, 4)));
  }
  s = hsum8i(acc);
#endif
  for (; q < nq; ++q) {
    const int8_t* w = (const int8_t*)(qw + q);
    for (int j = 0; j < 4; ++j) s += w[j] * xq[c[4 * q + j]];
  }
  return s;
}

// Dense layout: sum_k w8[k] * x8[k] over n bytes (both zero-padded alike past K).
inline int32_t dot_dense_i8(const int8_t* x8, const int8_t* w8, int n) {
  int k = 0;
  int32_t s = 0;
#ifdef POFA_GEMV_SIMD
  __m256i acc = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (; k + 32 <= n; k += 32) {  // maddubs(|w|, sign(x, w)): exact, as in spmm_i8.h
    const __m256i w = _mm256_loadu_si256((const __m256i*)(w8 + k));
    const __m256i x = _mm256_loadu_si256((const __m256i*)(x8 + k));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)), ones));
  }
  s = hsum8i(acc);
#endif
  for (; k < n; ++k) s += w8[k] * x8[k];
  return s;
}

// Second pass (after a barrier): y = act(y + b), work-shared.
inline void gemv_epilogue(float* y, int M, int N, const float* bias, int act) {
  if (!bias && act == kNone) return;
#pragma omp for schedule(static)
  for (int i = 0; i < M * N; ++i) {
    float v = y[i];
    if (bias) v += bias[i % N];
    y[i] = act == kGelu ? gelu(v) : v;
  }
}

// Inside a parallel region. x token-major [M][K], y token-major [M][N].
inline void gemv_f32_team(const CsrView& w, int act, const float* x, int M, float* y) {
  int b_lo, b_hi;
  balanced_range(w.row_ptr, w.n_out, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
  for (int o = b_lo * kRowBlock; o < std::min(b_hi * kRowBlock, w.n_out); ++o) {
    const int j0 = w.row_ptr[o], nnz = w.row_ptr[o + 1] - j0;
    for (int t = 0; t < M; ++t) y[(size_t)t * w.n_out + o] = dot_csr_f32(x + (size_t)t * w.n_in, w.cols + j0, w.vals + j0, nnz);
  }
#pragma omp barrier
  gemv_epilogue(y, M, w.n_out, w.bias, act);
}

// Scratch: xq32 M * K int32 (quads with columns) or x8 M * 4 * ceil(K / 4) int8 (dense); sx, inv M floats.
inline size_t gemv_i8_scratch_bytes(int K, int M) { return (size_t)M * 4 * ((K + 3) / 4) * sizeof(int32_t); }

inline void gemv_i8_team(const QuadView& w, int act, const float* x, int M, void* xq, float* sx, float* inv, float* y) {
  const int K = w.n_in, Kp = 4 * ((K + 3) / 4);
  token_scales(x, M, K, sx, inv);  // the tiled kernels' per-token scales; ends with a barrier
  int32_t* xq32 = (int32_t*)xq;
  int8_t* x8 = (int8_t*)xq;
#pragma omp for schedule(static)
  for (int i = 0; i < M * Kp; ++i) {
    const int t = i / Kp, k = i % Kp;
    const int q = k < K ? (int)std::nearbyint(x[(size_t)t * K + k] * inv[t]) : 0;  // as quantize_u8, unshifted
    if (w.layout == kDense) x8[i] = (int8_t)q; else xq32[i] = q;
  }
  int b_lo, b_hi;
  balanced_range(w.quad_ptr, w.n_out, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
  for (int o = b_lo * kRowBlock; o < std::min(b_hi * kRowBlock, w.n_out); ++o) {
    const int q0 = w.quad_ptr[o], nq = w.quad_ptr[o + 1] - q0;
    for (int t = 0; t < M; ++t) {
      const int32_t s = w.layout == kDense ? dot_dense_i8(x8 + (size_t)t * Kp, (const int8_t*)(w.w + q0), Kp)
                                           : dot_quads_i8(xq32 + (size_t)t * Kp, w.cols + 4 * q0, w.w + q0, nq);
      y[(size_t)t * w.n_out + o] = (float)s * (w.w_scale[o] * sx[t]);  // the tiled kernels' dequant16 order
    }
  }
#pragma omp barrier
  gemv_epilogue(y, M, w.n_out, w.bias, act);
}

}  // namespace pofa
