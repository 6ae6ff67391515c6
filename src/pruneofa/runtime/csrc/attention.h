// Multi-head self-attention on feature-major activations, fp32, as "outer products":
//   qkv[3H][ld]: rows h*d..h*d+d-1 are head h's query features, H + ... its keys, 2H + ... its
//   values; columns are tokens (batch b owns columns b*S..b*S+S-1).
//   ctx[H][ld] : the attention output, feature-major too (what the output projection reads).
// Per (batch, head), with the queries i as vector lanes throughout:
//   sT[j][i] = scale * sum_dd k[dd][j] q[dd][i] + maskT[j][i]   (key j: broadcast k, FMA rows of q)
//   pT[j][i] = softmax over j, column by column                  (lanes = queries: no shuffles)
//   ctx[dd][i] = sum_j v[dd][j] pT[j][i]                         (broadcast v, FMA rows of pT)
// so every operand is read contiguously and nothing is transposed.
#pragma once
#include "common.h"

namespace pofa {

constexpr int kMaxSeq = 4096;  // longest sequence the attention kernel takes (the caller checks)

// Additive attention mask: none, per key ([B][S]: padding), or full and key-major ([B][S_key][S_query]).
struct Mask {
  const float* data;
  int kind;  // 0 none, 1 per key, 2 full
  const float* keys(int b, int S) const { return kind == 1 ? data + (size_t)b * S : nullptr; }
  const float* full(int b, int S) const { return kind == 2 ? data + (size_t)b * S * S : nullptr; }
};

#ifdef POFA_AVX512
// exp for the softmax: range reduction to 2^n * e^r, |r| <= ln2/2, degree-6 polynomial (~1 ulp).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}
#endif

#ifdef POFA_AVX2
// exp16's range reduction and polynomial on 8 lanes; 2^n is built in the exponent bits (n >= -126).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}
#endif

// Column-wise softmax of sT[S][Sp] (rows j, lanes i), in place.
inline void softmax_columns(float* sT, int S, int Sp) {
#ifdef POFA_AVX2
  for (int i0 = 0; i0 < Sp; i0 += 8) {
    __m256 m = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
    for (int j = 0; j < S; ++j) m = _mm256_max_ps(m, _mm256_loadu_ps(sT + (size_t)j * Sp + i0));
    for (int j = 0; j < S; ++j) {
      float* row = sT + (size_t)j * Sp + i0;
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row), m));
      _mm256_storeu_ps(row, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
    for (int j = 0; j < S; ++j) _mm256_storeu_ps(sT + (size_t)j * Sp + i0, _mm256_mul_ps(_mm256_loadu_ps(sT + (size_t)j * Sp + i0), r));
  }
  return;
#endif
  for (int i0 = 0; i0 < Sp; i0 += 16) {
#ifdef POFA_AVX512
    __m512 m = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
    for (int j = 0; j < S; ++j) m = _mm512_max_ps(m, _mm512_loadu_ps(sT + (size_t)j * Sp + i0));
    for (int j = 0; j < S; ++j) {
      float* row = sT + (size_t)j * Sp + i0;
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row), m));
      _mm512_storeu_ps(row, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    for (int j = 0; j < S; ++j) _mm512_storeu_ps(sT + (size_t)j * Sp + i0, _mm512_mul_ps(_mm512_loadu_ps(sT + (size_t)j * Sp + i0), r));
#else
    for (int i = i0; i < i0 + 16; ++i) {
      float m = -INFINITY, sum = 0.0f;
      for (int j = 0; j < S; ++j) m = std::max(m, sT[(size_t)j * Sp + i]);
      for (int j = 0; j < S; ++j) sum += (sT[(size_t)j * Sp + i] = std::exp(sT[(size_t)j * Sp + i] - m));
      for (int j = 0; j < S; ++j) sT[(size_t)j * Sp + i] /= sum;
    }
#endif
  }
}

#ifdef POFA_AVX512
// Register blocks of 4 rows x 4 vectors (64 lanes): every load feeds four FMAs, so the inner
// loops run from L1 instead of streaming the whole S x S score matrix per row.
//   scores: sT[j..j+JB][i0*16..] = sum_dd k[dd][j..j+JB] (broadcast) * q[dd][i-vectors]
// (Block sizes are template parameters so that the accumulators stay in registers.)
template <int JB, int nvec>
inline void score_block(const float* q, const float* k, int ld, int d, int j, int i0, const __mmask16* lanes,
                        float* acc_out, int Sp) {
  __m512 acc[JB][4];
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = _mm512_setzero_ps();
  for (int dd = 0; dd < d; ++dd) {
    const float* qrow = q + (size_t)dd * ld + 16 * i0;
    __m512 qv[4];
    for (int c = 0; c < nvec; ++c) qv[c] = _mm512_maskz_loadu_ps(lanes[i0 + c], qrow + 16 * c);
    for (int a = 0; a < JB; ++a) {
      const __m512 kv = _mm512_set1_ps(k[(size_t)dd * ld + j + a]);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm512_fmadd_ps(kv, qv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < nvec; ++c) _mm512_storeu_ps(acc_out + (size_t)(j + a) * Sp + 16 * (i0 + c), acc[a][c]);
}

//   context: out[dd..dd+DB][i-vectors] = sum_j v[dd..dd+DB][j] (broadcast) * pT[j][i-vectors]
template <int DB, int nvec>
inline void context_block(const float* v, const float* pT, int ld, int S, int Sp, int dd, int i0,
                          const __mmask16* lanes, float* out) {
  __m512 acc[DB][4];
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const float* prow = pT + (size_t)j * Sp + 16 * i0;
    __m512 pv[4];
    for (int c = 0; c < nvec; ++c) pv[c] = _mm512_loadu_ps(prow + 16 * c);
    for (int a = 0; a < DB; ++a) {
      const __m512 vv = _mm512_set1_ps(v[(size_t)(dd + a) * ld + j]);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm512_fmadd_ps(vv, pv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < nvec; ++c) _mm512_mask_storeu_ps(out + (size_t)(dd + a) * ld + 16 * (i0 + c), lanes[i0 + c], acc[a][c]);
}

template <int nvec>
inline void scores_for(const float* q, const float* k, int ld, int d, int S, int i0, const __mmask16* lanes, float* sT,
                       int Sp) {
  int j = 0;
  for (; j + 4 <= S; j += 4) score_block<4, nvec>(q, k, ld, d, j, i0, lanes, sT, Sp);
  for (; j < S; ++j) score_block<1, nvec>(q, k, ld, d, j, i0, lanes, sT, Sp);
}

template <int nvec>
inline void context_for(const float* v, const float* pT, int ld, int S, int Sp, int d, int i0, const __mmask16* lanes,
                        float* out) {
  int dd = 0;
  for (; dd + 4 <= d; dd += 4) context_block<4, nvec>(v, pT, ld, S, Sp, dd, i0, lanes, out);
  for (; dd < d; ++dd) context_block<1, nvec>(v, pT, ld, S, Sp, dd, i0, lanes, out);
}
#endif

#ifdef POFA_AVX2
// The same register blocking with 8-lane vectors: 4 rows x 2 vectors (16 queries) of accumulators.
// lanes[c]: which lanes of query vector c are real queries (maskload/maskstore masks).
template <int JB, int nvec>
inline void score_block8(const float* q, const float* k, int ld, int d, int j, int c0, const __m256i* lanes,
                         float* acc_out, int Sp) {
  __m256 acc[JB][nvec];
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < nvec; ++c) acc[a][c] = _mm256_setzero_ps();
  for (int dd = 0; dd < d; ++dd) {
    const float* qrow = q + (size_t)dd * ld + 8 * c0;
    __m256 qv[nvec];
    for (int c = 0; c < nvec; ++c) qv[c] = _mm256_maskload_ps(qrow + 8 * c, lanes[c0 + c]);
    for (int a = 0; a < JB; ++a) {
      const __m256 kv = _mm256_broadcast_ss(k + (size_t)dd * ld + j + a);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm256_fmadd_ps(kv, qv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < nvec; ++c) _mm256_storeu_ps(acc_out + (size_t)(j + a) * Sp + 8 * (c0 + c), acc[a][c]);
}

template <int DB, int nvec>
inline void context_block8(const float* v, const float* pT, int ld, int S, int Sp, int dd, int c0,
                           const __m256i* lanes, float* out) {
  __m256 acc[DB][nvec];
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < nvec; ++c) acc[a][c] = _mm256_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const float* prow = pT + (size_t)j * Sp + 8 * c0;
    __m256 pv[nvec];
    for (int c = 0; c < nvec; ++c) pv[c] = _mm256_loadu_ps(prow + 8 * c);
    for (int a = 0; a < DB; ++a) {
      const __m256 vv = _mm256_broadcast_ss(v + (size_t)(dd + a) * ld + j);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm256_fmadd_ps(vv, pv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < nvec; ++c) _mm256_maskstore_ps(out + (size_t)(dd + a) * ld + 8 * (c0 + c), lanes[c0 + c], acc[a][c]);
}

template <int nvec>
inline void scores_for8(const float* q, const float* k, int ld, int d, int S, int c0, const __m256i* lanes, float* sT,
                        int Sp) {
  int j = 0;
  for (; j + 4 <= S; j += 4) score_block8<4, nvec>(q, k, ld, d, j, c0, lanes, sT, Sp);
  for (; j < S; ++j) score_block8<1, nvec>(q, k, ld, d, j, c0, lanes, sT, Sp);
}

template <int nvec>
inline void context_for8(const float* v, const float* pT, int ld, int S, int Sp, int d, int c0, const __m256i* lanes,
                         float* out) {
  int dd = 0;
  for (; dd + 4 <= d; dd += 4) context_block8<4, nvec>(v, pT, ld, S, Sp, dd, c0, lanes, out);
  for (; dd < d; ++dd) context_block8<1, nvec>(v, pT, ld, S, Sp, dd, c0, lanes, out);
}

// One (batch, head) of attention_f32_team: scores, scale + masks, softmax, context.
inline void attention_head_avx2(const float* q, const float* k, const float* v, int ld, int S, int d, float scale,
                                const float* mask, const float* key_mask, float* sT, float* out) {
  const int Sp = round_up(S, 16), nv = Sp / 8;
  __m256i lanes[kMaxSeq / 8];
  for (int c = 0; c < nv; ++c) lanes[c] = lanes8(S - 8 * c);  // all, some or none of its 8 lanes
  for (int c0 = 0; c0 < nv; c0 += 2) {  // Sp is a multiple of 16: always two vectors
    scores_for8<2>(q, k, ld, d, S, c0, lanes, sT, Sp);
  }
  const __m256 sc = _mm256_set1_ps(scale);
  for (int j = 0; j < S; ++j)
    for (int c = 0; c < nv; ++c) {
      float* row = sT + (size_t)j * Sp + 8 * c;
      __m256 s = _mm256_mul_ps(_mm256_loadu_ps(row), sc);
      if (mask) s = _mm256_add_ps(s, _mm256_maskload_ps(mask + (size_t)j * S + 8 * c, lanes[c]));
      if (key_mask) s = _mm256_add_ps(s, _mm256_set1_ps(key_mask[j]));
      _mm256_storeu_ps(row, s);
    }
  softmax_columns(sT, S, Sp);
  for (int c0 = 0; c0 < nv; c0 += 2) context_for8<2>(v, sT, ld, S, Sp, d, c0, lanes, out);
}
#endif

// Scratch per thread: S * round_up(S, 16) floats. Work-shared over (batch, head); ends with a barrier.
inline void attention_f32_team(const float* qkv, float* ctx, int ld, int B, int S, int H, int d, float scale,
                               const Mask& masks, float* scratch) {
  const int Sp = round_up(S, 16);
  [[maybe_unused]] const int nv = Sp / 16;
  float* sT = scratch + (size_t)omp_get_thread_num() * S * Sp;
#ifdef POFA_AVX512
  __mmask16 lanes[kMaxSeq / 16];  // per query vector: which lanes are real queries
  for (int c = 0; c < nv; ++c) lanes[c] = (c == nv - 1 && S % 16) ? (__mmask16)((1u << (S % 16)) - 1) : 0xFFFF;
#endif
#pragma omp for schedule(static)
  for (int item = 0; item < B * (H / d); ++item) {
    const int b = item / (H / d), h = item % (H / d);
    const float* q = qkv + (size_t)(h * d) * ld + (size_t)b * S;
    const float* k = qkv + (size_t)(H + h * d) * ld + (size_t)b * S;
    const float* v = qkv + (size_t)(2 * H + h * d) * ld + (size_t)b * S;
    const float *mask = masks.full(b, S), *key_mask = masks.keys(b, S);
    float* out = ctx + (size_t)(h * d) * ld + (size_t)b * S;
#ifdef POFA_AVX512
    for (int i0 = 0; i0 < nv; i0 += 4) {
      switch (std::min(4, nv - i0)) {
        case 4: scores_for<4>(q, k, ld, d, S, i0, lanes, sT, Sp); break;
        case 3: scores_for<3>(q, k, ld, d, S, i0, lanes, sT, Sp); break;
        case 2: scores_for<2>(q, k, ld, d, S, i0, lanes, sT, Sp); break;
        default: scores_for<1>(q, k, ld, d, S, i0, lanes, sT, Sp);
      }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int j = 0; j < S; ++j)
      for (int c = 0; c < nv; ++c) {
        float* row = sT + (size_t)j * Sp + 16 * c;
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(row), sc);
        if (mask) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(lanes[c], mask + (size_t)j * S + 16 * c));
        if (key_mask) s = _mm512_add_ps(s, _mm512_set1_ps(key_mask[j]));
        _mm512_storeu_ps(row, s);
      }
    softmax_columns(sT, S, Sp);
    for (int i0 = 0; i0 < nv; i0 += 4) {
      switch (std::min(4, nv - i0)) {
        case 4: context_for<4>(v, sT, ld, S, Sp, d, i0, lanes, out); break;
        case 3: context_for<3>(v, sT, ld, S, Sp, d, i0, lanes, out); break;
        case 2: context_for<2>(v, sT, ld, S, Sp, d, i0, lanes, out); break;
        default: context_for<1>(v, sT, ld, S, Sp, d, i0, lanes, out);
      }
    }
#elif defined(POFA_AVX2)
    attention_head_avx2(q, k, v, ld, S, d, scale, mask, key_mask, sT, out);
#else
    for (int j = 0; j < S; ++j)
      for (int i = 0; i < Sp; ++i) {
        float s = 0.0f;
        if (i < S)
          for (int dd = 0; dd < d; ++dd) s += k[(size_t)dd * ld + j] * q[(size_t)dd * ld + i];
        sT[(size_t)j * Sp + i] = s * scale + (mask && i < S ? mask[(size_t)j * S + i] : 0.0f) +
                                 (key_mask ? key_mask[j] : 0.0f);
      }
    softmax_columns(sT, S, Sp);
    for (int dd = 0; dd < d; ++dd)
      for (int i = 0; i < S; ++i) {
        float s = 0.0f;
        for (int j = 0; j < S; ++j) s += v[(size_t)dd * ld + j] * sT[(size_t)j * Sp + i];
        out[(size_t)dd * ld + i] = s;
      }
#endif
  }
}

}  // namespace pofa
