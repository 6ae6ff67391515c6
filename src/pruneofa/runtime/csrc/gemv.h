// Few-token products (a decoder's per-token step): y[t] = act(W x[t] + b) for a few (gemv_serves)
// token-major rows. The tiled kernels multiply each weight non-zero into a whole vector of 16 (fp32)
// or 64 (int8) tokens and transpose in and out: for one token that is 16-64x the arithmetic, slower
// than a dense GEMV. Here an output row is a dot product of its non-zeros with the token's
// activations read by column index, each row's weights streamed once per call.
// int8: activations quantised per token exactly as the tiled kernels do, integer sums exact, so the
// outputs are bit-identical to theirs.
#pragma once
#include "spmm_f32.h"
#include "spmm_i8.h"

namespace pofa {

// Up to here a pass per token beats the tiled kernels' 16/64-token vectors. Sparse layouts: at 3 tokens
// the tiled kernels are as fast (768 x 2304 at 90%, 1 thread). The dense int8 layout (e.g. an unpruned LM
// head) pays a whole 64-token tile at any token count there, ~7x one pass per token at 3 tokens.
constexpr int kGemvMaxTokens = 2, kGemvMaxTokensDense = 16;

inline bool gemv_serves(int M, bool dense) { return M <= (dense ? kGemvMaxTokensDense : kGemvMaxTokens); }

#ifdef __AVX2__
#define POFA_GEMV_SIMD 1
inline int32_t hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}

// acc + the 4-byte dot products of w and x per 32-bit lane: maddubs(|w|, sign(x, w)), exact as in spmm_i8.h.
inline __m256i add_dot4(__m256i acc, __m256i w, __m256i x) {
#ifdef POFA_AVX_VNNI
  return _mm256_dpbusd_avx_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)),
                                                 _mm256_set1_epi16(1)));
#endif
}
#endif

// Quads q..nq-1 one product at a time (the portable path, and what SIMD leaves): x int32 or int8 per column.
template <class X>
inline int32_t dot_quads_scalar(const X* x, const uint16_t* c, const int32_t* qw, int q, int nq) {
  int32_t s = 0;
  for (; q < nq; ++q) {
    const int8_t* w = (const int8_t*)(qw + q);
    for (int j = 0; j < 4; ++j) s += w[j] * x[c[4 * q + j]];
  }
  return s;
}

// sum_j v[j] * x[c[j]]: four scalar chains (on an AMD EPYC without AVX-512, 0.48 ns per non-zero against
// 0.62 with 8-lane gathers, standalone, 1 thread).
inline float dot_csr_f32(const float* x, const uint16_t* c, const float* v, int nnz) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int j = 0;
  for (; j + 4 <= nnz; j += 4) {
    s0 += v[j] * x[c[j]];
    s1 += v[j + 1] * x[c[j + 1]];
    s2 += v[j + 2] * x[c[j + 2]];
    s3 += v[j + 3] * x[c[j + 3]];
  }
  for (; j < nnz; ++j) s0 += v[j] * x[c[j]];
  return (s0 + s1) + (s2 + s3);
}

// Gather layout (any 4 columns per quad): sum_j w8[j] * xq[c[j]], xq as int32.
inline int32_t dot_quads_i8(const int32_t* xq, const uint16_t* c, const int32_t* qw, int nq) {
  int q = 0;
  int32_t s = 0;
#if defined(POFA_AVX512) && !defined(POFA_NO_GEMV512)
  // four quads a step: one 16-lane gather feeds 16 products (the 8-lane loop below takes what is left)
  __m512i acc16 = _mm512_setzero_si512();
  for (; q + 4 <= nq; q += 4) {
    const __m512i idx = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(c + 4 * q)));
    const __m512i w = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(qw + q)));
    acc16 = _mm512_add_epi32(acc16, _mm512_mullo_epi32(w, _mm512_i32gather_epi32(idx, xq, 4)));
  }
  s = _mm512_reduce_add_epi32(acc16);
#endif
#ifdef POFA_GEMV_SIMD
  __m256i acc = _mm256_setzero_si256();
  for (; q + 2 <= nq; q += 2) {  // two quads: 8 non-zeros (two gathers in flight measured no faster)
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(c + 4 * q)));
    const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(qw + q)));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(w, _mm256_i32gather_epi32(xq, idx, 4)));
  }
  if (q < nq) {  // a last quad in the low half (upper lanes: column 0, weight 0)
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadl_epi64((const __m128i*)(c + 4 * q)));
    const __m256i w = _mm256_cvtepi8_epi32(_mm_cvtsi32_si128(qw[q]));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(w, _mm256_i32gather_epi32(xq, idx, 4)));
    ++q;
  }
  s += hsum8i(acc);
#endif
  return s + dot_quads_scalar(xq, c, qw, q, nq);
}

// Blocks layout (1x4 blocks, columns 4j..4j+3): sum over the quads of w8 . x8[4j..4j+3]. One 32-bit gather
// fetches a block's 4 activations, so 8 gathered lanes feed 32 products (the gather layout: 8).
inline int32_t dot_blocks_i8(const int8_t* x8, const uint16_t* c, const int32_t* qw, int nq) {
  int q = 0;
  int32_t s = 0;
#ifdef POFA_GEMV_SIMD
  __m256i acc = _mm256_setzero_si256();
  for (; q + 8 <= nq; q += 8) {
    const uint16_t* b = c + 4 * q;  // each quad's first column: the block's start
    const __m256i idx = _mm256_setr_epi32(b[0], b[4], b[8], b[12], b[16], b[20], b[24], b[28]);
    const __m256i x = _mm256_i32gather_epi32((const int*)x8, idx, 1);
    const __m256i w = _mm256_loadu_si256((const __m256i*)(qw + q));
    acc = add_dot4(acc, w, x);
  }
  if (q < nq) {  // the last 1-7 quads: masked weights (0 elsewhere), lanes past them gather column 0
    alignas(32) int32_t starts[8] = {};
    for (int i = 0; q + i < nq; ++i) starts[i] = c[4 * (q + i)];
    const __m256i x = _mm256_i32gather_epi32((const int*)x8, _mm256_load_si256((const __m256i*)starts), 1);
    const __m256i w = _mm256_maskload_epi32(qw + q, _mm256_cmpgt_epi32(_mm256_set1_epi32(nq - q),
                                                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    acc = add_dot4(acc, w, x);
    q = nq;
  }
  s = hsum8i(acc);
#endif
  return s + dot_quads_scalar(x8, c, qw, q, nq);
}

// Dense layout: sum_k w8[k] * x8[k] over n bytes (both zero-padded alike past K).
inline int32_t dot_dense_i8(const int8_t* x8, const int8_t* w8, int n) {
  int k = 0;
  int32_t s = 0;
#ifdef POFA_GEMV_SIMD
  __m256i acc = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256();  // two chains: vpdpbusd's latency
  for (; k + 64 <= n; k += 64) {
    acc = add_dot4(acc, _mm256_loadu_si256((const __m256i*)(w8 + k)), _mm256_loadu_si256((const __m256i*)(x8 + k)));
    acc2 = add_dot4(acc2, _mm256_loadu_si256((const __m256i*)(w8 + k + 32)),
                    _mm256_loadu_si256((const __m256i*)(x8 + k + 32)));
  }
  if (k + 32 <= n) {
    acc = add_dot4(acc, _mm256_loadu_si256((const __m256i*)(w8 + k)), _mm256_loadu_si256((const __m256i*)(x8 + k)));
    k += 32;
  }
  s = hsum8i(_mm256_add_epi32(acc, acc2));
#endif
  for (; k < n; ++k) s += w8[k] * x8[k];
  return s;
}

// Rows [o_lo, o_hi) of every token: y = act(y + b). Called by the thread that wrote those rows, after a
// compiler barrier: the dequantisation's product and the bias' sum stay two roundings (no FMA), as in the
// tiled kernels' separate epilogue.
inline void gemv_epilogue(float* y, int M, int N, int o_lo, int o_hi, const float* bias, int act) {
  asm volatile("" ::: "memory");
  if (!bias && act == kNone) return;
  for (int t = 0; t < M; ++t)
    for (int o = o_lo; o < o_hi; ++o) {
      float v = y[(size_t)t * N + o];
      if (bias) v += bias[o];
      y[(size_t)t * N + o] = activate(v, act);
    }
}

// This thread's output rows: whole row blocks balanced by non-zeros, as the tiled kernels split them.
inline void gemv_rows(const int32_t* row_ptr, int n_out, int* o_lo, int* o_hi) {
  int b_lo, b_hi;
  balanced_range(row_ptr, n_out, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
  *o_lo = std::min(b_lo * kRowBlock, n_out);
  *o_hi = std::min(b_hi * kRowBlock, n_out);
}

// Inside a parallel region; x token-major [M][K], y token-major [M][N]. No barrier: each thread
// finishes its own rows, so a decoder's step pays one fork/join per Linear.
inline void gemv_f32_team(const CsrView& w, int act, const float* x, int M, float* y) {
  int o_lo, o_hi;
  gemv_rows(w.row_ptr, w.n_out, &o_lo, &o_hi);
  for (int o = o_lo; o < o_hi; ++o) {
    const int j0 = w.row_ptr[o], nnz = w.row_ptr[o + 1] - j0;
    for (int t = 0; t < M; ++t) y[(size_t)t * w.n_out + o] = dot_csr_f32(x + (size_t)t * w.n_in, w.cols + j0, w.vals + j0, nnz);
  }
  gemv_epilogue(y, M, w.n_out, o_lo, o_hi, w.bias, act);
}

// Per thread: the M tokens quantised, int32 per feature (gather layout) or int8 (dense and blocks layouts).
inline size_t gemv_i8_scratch_bytes(int K, int M) { return (size_t)M * 4 * ((K + 3) / 4) * sizeof(int32_t); }

// q[k] = nearbyint(row[k] * inv) for k < K, 0 up to Kp: quantize_u8's value, unshifted (the vector
// conversion rounds to nearest even, as nearbyint does in the default rounding mode).
inline void quantize_token(const float* row, int K, int Kp, float inv, int32_t* q) {
  int k = 0;
#ifdef POFA_GEMV_SIMD
  const __m256 v_inv = _mm256_set1_ps(inv);
  for (; k + 8 <= K; k += 8)
    _mm256_storeu_si256((__m256i*)(q + k), _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k), v_inv)));
#endif
  for (; k < K; ++k) q[k] = (int)std::nearbyint(row[k] * inv);
  for (; k < Kp; ++k) q[k] = 0;
}

// xq: gemv_i8_scratch_bytes(K, M) bytes per thread of the team. Every thread quantises the few tokens
// itself (a few microseconds) instead of waiting at a barrier for a shared copy.
inline void gemv_i8_team(const QuadView& w, int act, const float* x, int M, uint8_t* xq, float* y) {
  const int K = w.n_in, Kp = 4 * ((K + 3) / 4);
  int32_t* xq32 = (int32_t*)(xq + gemv_i8_scratch_bytes(K, M) * omp_get_thread_num());
  int8_t* x8 = (int8_t*)xq32;  // dense and blocks layouts: bytes, narrowed in place
  float sx[kGemvMaxTokensDense];
  for (int t = 0; t < M; ++t) {  // token_scales' scales
    const float* row = x + (size_t)t * K;
    float m = 0.0f;
#pragma omp simd reduction(max : m)
    for (int k = 0; k < K; ++k) m = std::max(m, std::fabs(row[k]));
    sx[t] = m / 127.0f;
    quantize_token(row, K, Kp, m > 0.0f ? 127.0f / m : 0.0f, xq32 + (size_t)t * Kp);
  }
  if (w.layout != kGather)  // dense and blocks read 4 activations as one 32-bit word
    for (int i = 0; i < M * Kp; ++i) x8[i] = (int8_t)xq32[i];  // byte i <= int i: forward in place is safe
  int o_lo, o_hi;
  gemv_rows(w.quad_ptr, w.n_out, &o_lo, &o_hi);
  for (int o = o_lo; o < o_hi; ++o) {
    const int q0 = w.quad_ptr[o], nq = w.quad_ptr[o + 1] - q0;
    for (int t = 0; t < M; ++t) {
      const int32_t s =
          w.layout == kDense    ? dot_dense_i8(x8 + (size_t)t * Kp, (const int8_t*)(w.w + q0), Kp)
          : w.layout == kBlocks ? dot_blocks_i8(x8 + (size_t)t * Kp, w.cols + 4 * q0, w.w + q0, nq)
                                : dot_quads_i8(xq32 + (size_t)t * Kp, w.cols + 4 * q0, w.w + q0, nq);
      y[(size_t)t * w.n_out + o] = (float)s * (w.w_scale[o] * sx[t]);  // the tiled kernels' dequant16 order
    }
  }
  gemv_epilogue(y, M, w.n_out, o_lo, o_hi, w.bias, act);
}

}  // namespace pofa
