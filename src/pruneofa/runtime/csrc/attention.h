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

// Per-thread scratch floats of attention_f32_team.
inline size_t attention_f32_scratch_floats(int S) { return (size_t)S * round_up(S, 16); }

// Additive attention mask: none, per key ([B][S]: padding), or full and key-major ([B][S_key][S_query]).
struct Mask {
  const float* data;
  int kind;  // 0 none, 1 per key, 2 full
  const float* keys(int b, int S) const { return kind == 1 ? data + (size_t)b * S : nullptr; }
  const float* full(int b, int S) const { return kind == 2 ? data + (size_t)b * S * S : nullptr; }
};

// Column-wise softmax of sT[S][Sp] (rows j, lanes i), in place.
inline void softmax_columns(float* sT, int S, int Sp) {
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
// With 8-lane vectors a head runs one strip of 16 queries (two vectors) at a time, through a
// [S][16] buffer that stays in L1 (a [S][Sp] score matrix does not: at S = 128 its 512-byte rows put
// a column strip into 8 of the 64 L1 sets):
//   scores  st[j][i] = scale * sum_dd k[dd][j] q[dd][i] + masks, 4 keys x 16 queries of accumulators;
//           scaled and masked as they are stored, with the running max of every query column
//   softmax e = exp(s - max) in place, and the column sums
//   context ctx[dd][i] = (sum_j v[dd][j] e[j][i]) / sum[i], 6 features x 16 queries of accumulators
// (the portable loops divide e by the sum before the context: the same up to rounding).
// q, mask, out and lanes start at the strip's first query; lanes[c]: its real queries in vector c.
template <int JB>
inline void score_rows8(const float* q, const float* k, int ld, int d, int j, float scale, const float* mask, int S,
                        const float* key_mask, const __m256i* lanes, float* st, __m256* colmax) {
  __m256 acc[JB][2];
  for (int a = 0; a < JB; ++a) acc[a][0] = acc[a][1] = _mm256_setzero_ps();
  for (int dd = 0; dd < d; ++dd) {
    const float* qrow = q + (size_t)dd * ld;
    const __m256 q0 = _mm256_maskload_ps(qrow, lanes[0]), q1 = _mm256_maskload_ps(qrow + 8, lanes[1]);
    for (int a = 0; a < JB; ++a) {
      const __m256 kv = _mm256_broadcast_ss(k + (size_t)dd * ld + j + a);
      acc[a][0] = _mm256_fmadd_ps(kv, q0, acc[a][0]);
      acc[a][1] = _mm256_fmadd_ps(kv, q1, acc[a][1]);
    }
  }
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < 2; ++c) {
      __m256 s = _mm256_mul_ps(acc[a][c], _mm256_set1_ps(scale));
      if (mask) s = _mm256_add_ps(s, _mm256_maskload_ps(mask + (size_t)(j + a) * S + 8 * c, lanes[c]));
      if (key_mask) s = _mm256_add_ps(s, _mm256_set1_ps(key_mask[j + a]));
      _mm256_storeu_ps(st + (size_t)(j + a) * 16 + 8 * c, s);
      colmax[c] = _mm256_max_ps(colmax[c], s);
    }
}

template <int DB>
inline void context_rows8(const float* v, const float* st, int ld, int S, int dd, const __m256* inv_sum,
                          const __m256i* lanes, float* out) {
  __m256 acc[DB][2];
  for (int a = 0; a < DB; ++a) acc[a][0] = acc[a][1] = _mm256_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const __m256 p0 = _mm256_loadu_ps(st + (size_t)j * 16), p1 = _mm256_loadu_ps(st + (size_t)j * 16 + 8);
    for (int a = 0; a < DB; ++a) {
      const __m256 vv = _mm256_broadcast_ss(v + (size_t)(dd + a) * ld + j);
      acc[a][0] = _mm256_fmadd_ps(vv, p0, acc[a][0]);
      acc[a][1] = _mm256_fmadd_ps(vv, p1, acc[a][1]);
    }
  }
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < 2; ++c)
      _mm256_maskstore_ps(out + (size_t)(dd + a) * ld + 8 * c, lanes[c], _mm256_mul_ps(acc[a][c], inv_sum[c]));
}

// One (batch, head) of attention_f32_team; st: S x 16 floats of scratch.
inline void attention_head_avx2(const float* q, const float* k, const float* v, int ld, int S, int d, float scale,
                                const float* mask, const float* key_mask, float* st, float* out) {
  for (int i0 = 0; i0 < S; i0 += 16) {
    const __m256i lanes[2] = {lanes8(S - i0), lanes8(S - i0 - 8)};  // all, some or none of the 8 lanes
    const float* mask_i = mask ? mask + i0 : nullptr;
    __m256 colmax[2] = {_mm256_set1_ps(-INFINITY), _mm256_set1_ps(-INFINITY)};
    int j = 0;
    for (; j + 4 <= S; j += 4) score_rows8<4>(q + i0, k, ld, d, j, scale, mask_i, S, key_mask, lanes, st, colmax);
    for (; j < S; ++j) score_rows8<1>(q + i0, k, ld, d, j, scale, mask_i, S, key_mask, lanes, st, colmax);
    __m256 sum[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (j = 0; j < S; ++j)
      for (int c = 0; c < 2; ++c) {
        float* p = st + (size_t)j * 16 + 8 * c;
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), colmax[c]));
        _mm256_storeu_ps(p, e);
        sum[c] = _mm256_add_ps(sum[c], e);
      }
    const __m256 inv_sum[2] = {_mm256_div_ps(_mm256_set1_ps(1.0f), sum[0]), _mm256_div_ps(_mm256_set1_ps(1.0f), sum[1])};
    int dd = 0;
    for (; dd + 6 <= d; dd += 6) context_rows8<6>(v, st, ld, S, dd, inv_sum, lanes, out + i0);
    for (; dd < d; ++dd) context_rows8<1>(v, st, ld, S, dd, inv_sum, lanes, out + i0);
  }
}
#endif

// Scratch per thread: attention_f32_scratch_floats(S). Work-shared over (batch, head); ends with a barrier.
inline void attention_f32_team(const float* qkv, float* ctx, int ld, int B, int S, int H, int d, float scale,
                               const Mask& masks, float* scratch) {
  const int Sp = round_up(S, 16);
  [[maybe_unused]] const int nv = Sp / 16;
  float* sT = scratch + omp_get_thread_num() * attention_f32_scratch_floats(S);
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
