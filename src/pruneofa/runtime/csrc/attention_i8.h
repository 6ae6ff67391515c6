// int8 self-attention (VNNI), same layouts and outer-product order as attention.h:
//   scores  sT[j][i] = scale * sk[j] * sq[i] * (sum_dd k8[j][dd] (q8[i][dd] + 128) - 128 sum_dd k8[j][dd])
//   softmax in fp32 (column-wise), e = exp(s - max) in (0, 1] quantised as p8 = round(255 e) (unsigned:
//           no offset needed), the 1/sum folded into the output scale
//   context ctx[dd][i] = sv[dd] / (255 sum[i]) * sum_j v8[dd][j] p8[j][i]
// q, k are quantised per token and head (symmetric), v per feature row of the head (its scale must
// factor out of the sum over tokens j). Every vpdpbusd multiplies 16 queries x 4 (features or
// keys) by 4 broadcast int8 values, like the sparse int8 kernel.
#pragma once
#include "attention.h"

namespace pofa {

#ifdef POFA_VNNI
// Four fp32 rows (16 lanes each) quantised with per-lane inverse scales `inv`, plus `offset`,
// packed into one vector of 16 int32 whose bytes are (row0, row1, row2, row3) of each lane.
inline __m512i pack4_rows(const float* r0, const float* r1, const float* r2, const float* r3, __m512 inv, int offset,
                          __mmask16 lanes) {
  const __m512i off = _mm512_set1_epi32(offset), byte = _mm512_set1_epi32(0xFF);
  auto q = [&](const float* r) {
    return _mm512_and_si512(_mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, r), inv)), off), byte);
  };
  return _mm512_or_si512(_mm512_or_si512(q(r0), _mm512_slli_epi32(q(r1), 8)),
                         _mm512_or_si512(_mm512_slli_epi32(q(r2), 16), _mm512_slli_epi32(q(r3), 24)));
}

template <int JB, int nvec>
inline void score_block_i8(const int32_t* qp, const int32_t* kq, int Sp, int dq_n, int j, int i0, int32_t* out) {
  __m512i acc[JB][4];
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = _mm512_setzero_si512();
  for (int dq = 0; dq < dq_n; ++dq) {
    const int32_t* qrow = qp + (size_t)dq * Sp + 16 * i0;
    __m512i qv[4];
    for (int c = 0; c < nvec; ++c) qv[c] = _mm512_loadu_si512(qrow + 16 * c);
    for (int a = 0; a < JB; ++a) {
      const __m512i kv = _mm512_set1_epi32(kq[(size_t)(j + a) * dq_n + dq]);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm512_dpbusd_epi32(acc[a][c], qv[c], kv);
    }
  }
  for (int a = 0; a < JB; ++a)
    for (int c = 0; c < nvec; ++c) _mm512_storeu_si512(out + (size_t)(j + a) * Sp + 16 * (i0 + c), acc[a][c]);
}

template <int DB, int nvec>
inline void context_block_i8(const int32_t* vq, const int32_t* pp, int Sp, int jq_n, int dd, int i0, int32_t* out) {
  __m512i acc[DB][4];
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = _mm512_setzero_si512();
  for (int jq = 0; jq < jq_n; ++jq) {
    const int32_t* prow = pp + (size_t)jq * Sp + 16 * i0;
    __m512i pv[4];
    for (int c = 0; c < nvec; ++c) pv[c] = _mm512_loadu_si512(prow + 16 * c);
    for (int a = 0; a < DB; ++a) {
      const __m512i vv = _mm512_set1_epi32(vq[(size_t)(dd + a) * jq_n + jq]);
      for (int c = 0; c < nvec; ++c) acc[a][c] = _mm512_dpbusd_epi32(acc[a][c], pv[c], vv);
    }
  }
  for (int a = 0; a < DB; ++a)
    for (int c = 0; c < nvec; ++c) _mm512_storeu_si512(out + (size_t)(dd + a) * Sp + 16 * (i0 + c), acc[a][c]);
}

template <int nvec>
inline void scores_i8_for(const int32_t* qp, const int32_t* kq, int Sp, int dq_n, int S, int i0, int32_t* out) {
  int j = 0;
  for (; j + 4 <= S; j += 4) score_block_i8<4, nvec>(qp, kq, Sp, dq_n, j, i0, out);
  for (; j < S; ++j) score_block_i8<1, nvec>(qp, kq, Sp, dq_n, j, i0, out);
}

template <int nvec>
inline void context_i8_for(const int32_t* vq, const int32_t* pp, int Sp, int jq_n, int d, int i0, int32_t* out) {
  int dd = 0;
  for (; dd + 4 <= d; dd += 4) context_block_i8<4, nvec>(vq, pp, Sp, jq_n, dd, i0, out);
  for (; dd < d; ++dd) context_block_i8<1, nvec>(vq, pp, Sp, jq_n, dd, i0, out);
}

#define POFA_DISPATCH_NVEC(n, call) \
  switch (n) {                      \
    case 4: call(4); break;         \
    case 3: call(3); break;         \
    case 2: call(2); break;         \
    default: call(1);               \
  }

// Per-thread scratch floats for attention_i8_team.
inline size_t attention_i8_scratch_floats(int S, int d) {
  const size_t Sp = round_up(S, 16), S4 = round_up(S, 4);
  return Sp * std::max(S, d)  // scores [S][Sp] (int32, then fp32 in place), later the context [d][Sp]
         + (size_t)d / 4 * Sp  // packed q
         + S4 / 4 * Sp         // packed p
         + (size_t)S * d / 4   // packed k
         + (size_t)d * S4 / 4  // packed v
         + 4 * Sp + d;         // sq, isq, ksum*sk.., sum; sv
}
#endif

// Work-shared over (batch, head); ends with a barrier. Needs d % 4 == 0 (else use the fp32 kernel).
inline void attention_i8_team(const float* qkv, float* ctx, int ld, int B, int S, int H, int d, float scale,
                              const Mask& masks, float* scratch) {
#ifndef POFA_VNNI
  attention_f32_team(qkv, ctx, ld, B, S, H, d, scale, masks, scratch);
#else
  const int Sp = round_up(S, 16), nv = Sp / 16, S4 = round_up(S, 4), dq_n = d / 4, jq_n = S4 / 4;
  float* base = scratch + (size_t)omp_get_thread_num() * attention_i8_scratch_floats(S, d);
  int32_t* acc = (int32_t*)base;  // [S][Sp]; reused as fp32 scores/probabilities
  float* sT = base;
  int32_t* qp = acc + (size_t)std::max(S, d) * Sp;  // [d/4][Sp]
  int32_t* pp = qp + (size_t)dq_n * Sp;     // [S4/4][Sp]
  int32_t* kq = pp + (size_t)jq_n * Sp;     // [S][d/4]
  int32_t* vq = kq + (size_t)S * dq_n;      // [d][S4/4]
  float* sq = (float*)(vq + (size_t)d * jq_n);  // per query scale
  float* isq = sq + Sp;                     // per query inverse scale
  float* kcorr = isq + Sp;                  // per key: 128 * sum_dd k8
  float* sk = kcorr + Sp;                   // per key scale
  float* sv = sk + Sp;                      // per value feature scale
  __mmask16 lanes[kMaxSeq / 16];
  for (int c = 0; c < nv; ++c) lanes[c] = (c == nv - 1 && S % 16) ? (__mmask16)((1u << (S % 16)) - 1) : 0xFFFF;
  const int heads = H / d;
#pragma omp for schedule(static)
  for (int item = 0; item < B * heads; ++item) {
    const int b = item / heads, h = item % heads;
    const float* q = qkv + (size_t)(h * d) * ld + (size_t)b * S;
    const float* k = qkv + (size_t)(H + h * d) * ld + (size_t)b * S;
    const float* v = qkv + (size_t)(2 * H + h * d) * ld + (size_t)b * S;
    const float *mask = masks.full(b, S), *key_mask = masks.keys(b, S);
    float* out = ctx + (size_t)(h * d) * ld + (size_t)b * S;
    // per-token scales of q and k (max over the head's d features), vectorised over tokens
    for (int c = 0; c < nv; ++c) {
      __m512 mq = _mm512_setzero_ps(), mk = _mm512_setzero_ps();
      for (int dd = 0; dd < d; ++dd) {
        mq = _mm512_max_ps(mq, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes[c], q + (size_t)dd * ld + 16 * c)));
        mk = _mm512_max_ps(mk, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes[c], k + (size_t)dd * ld + 16 * c)));
      }
      const __mmask16 nz_q = _mm512_cmp_ps_mask(mq, _mm512_setzero_ps(), _CMP_GT_OQ);
      const __mmask16 nz_k = _mm512_cmp_ps_mask(mk, _mm512_setzero_ps(), _CMP_GT_OQ);
      _mm512_storeu_ps(sq + 16 * c, _mm512_mul_ps(mq, _mm512_set1_ps(1.0f / 127)));
      _mm512_storeu_ps(isq + 16 * c, _mm512_maskz_div_ps(nz_q, _mm512_set1_ps(127.0f), mq));
      _mm512_storeu_ps(sk + 16 * c, _mm512_mul_ps(mk, _mm512_set1_ps(1.0f / 127)));
      const __m512 ik = _mm512_maskz_div_ps(nz_k, _mm512_set1_ps(127.0f), mk);
      // q: u8 (+128) packed [d/4][i]; k: s8 packed per key [j][d/4] (transposed through a small buffer)
      __m512i ksum = _mm512_setzero_si512();
      for (int dq = 0; dq < dq_n; ++dq) {
        const float* r = q + (size_t)(4 * dq) * ld + 16 * c;
        _mm512_storeu_si512(qp + (size_t)dq * Sp + 16 * c,
                            pack4_rows(r, r + ld, r + 2 * ld, r + 3 * ld, _mm512_loadu_ps(isq + 16 * c), 128, lanes[c]));
        const float* kr = k + (size_t)(4 * dq) * ld + 16 * c;
        const __m512i kp = pack4_rows(kr, kr + ld, kr + 2 * ld, kr + 3 * ld, ik, 0, lanes[c]);
        alignas(64) int32_t tmp[16];
        _mm512_store_si512(tmp, kp);
        for (int i = 0; i < 16 && 16 * c + i < S; ++i) kq[(size_t)(16 * c + i) * dq_n + dq] = tmp[i];
        // sum of the 4 signed bytes of each lane: multiply by 1s with vpdpbusd
        ksum = _mm512_dpbusd_epi32(ksum, _mm512_set1_epi8(1), kp);
      }
      _mm512_storeu_ps(kcorr + 16 * c, _mm512_cvtepi32_ps(_mm512_mullo_epi32(ksum, _mm512_set1_epi32(128))));
    }
    for (int i0 = 0; i0 < nv; i0 += 4) {
#define POFA_SCORES(n) scores_i8_for<n>(qp, kq, Sp, dq_n, S, i0, acc)
      POFA_DISPATCH_NVEC(std::min(4, nv - i0), POFA_SCORES)
#undef POFA_SCORES
    }
    // dequantise, scale, mask (in place: int32 -> fp32), then softmax without the final division
    for (int j = 0; j < S; ++j) {
      const __m512 kscale = _mm512_set1_ps(sk[j] * scale), corr = _mm512_set1_ps(kcorr[j]);
      for (int c = 0; c < nv; ++c) {
        int32_t* row = acc + (size_t)j * Sp + 16 * c;
        __m512 s = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(row)), corr);
        s = _mm512_mul_ps(_mm512_mul_ps(s, kscale), _mm512_loadu_ps(sq + 16 * c));
        if (mask) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(lanes[c], mask + (size_t)j * S + 16 * c));
        if (key_mask) s = _mm512_add_ps(s, _mm512_set1_ps(key_mask[j]));
        _mm512_storeu_ps((float*)row, s);
      }
    }
    float* inv_sum = isq;  // the query scales are no longer needed
    for (int c = 0; c < nv; ++c) {
      __m512 m = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
      for (int j = 0; j < S; ++j) m = _mm512_max_ps(m, _mm512_loadu_ps(sT + (size_t)j * Sp + 16 * c));
      for (int j = 0; j < S; ++j) {
        float* row = sT + (size_t)j * Sp + 16 * c;
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row), m));
        _mm512_storeu_ps(row, e);
        sum = _mm512_add_ps(sum, e);
      }
      _mm512_storeu_ps(inv_sum + 16 * c, _mm512_div_ps(_mm512_set1_ps(1.0f / 255), sum));
      // p8 = round(255 e), packed 4 keys per int32; keys past S are zero
      const __m512 k255 = _mm512_set1_ps(255.0f);
      for (int jq = 0; jq < jq_n; ++jq) {
        const float* r[4];
        for (int a = 0; a < 4; ++a) r[a] = 4 * jq + a < S ? sT + (size_t)(4 * jq + a) * Sp + 16 * c : nullptr;
        __m512i packed = _mm512_setzero_si512();
        for (int a = 0; a < 4; ++a)
          if (r[a])
            packed = _mm512_or_si512(packed, _mm512_slli_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(r[a]), k255)), 8 * a));
        _mm512_storeu_si512(pp + (size_t)jq * Sp + 16 * c, packed);
      }
    }
    // v: per feature row scale, s8 bytes, 4 keys per int32 (keys past S are zero). Vectorised over keys: a
    // scalar max chains on its latency (it was an eighth of this function); cvtps rounds to nearest even,
    // as nearbyint does, and |r * iv| <= 127, so the bytes are those of the scalar loop.
    for (int dd = 0; dd < d; ++dd) {
      const float* r = v + (size_t)dd * ld;
      __m512 mv = _mm512_setzero_ps();
      for (int c = 0; c < nv; ++c) mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes[c], r + 16 * c)));
      const float m = _mm512_reduce_max_ps(mv);
      sv[dd] = m / 127.0f;
      const __m512 iv = _mm512_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
      int8_t* dst = (int8_t*)(vq + (size_t)dd * jq_n);
      for (int c = 0; c < nv; ++c) {  // lanes past S load as 0, so their bytes are 0; stores stop at S4
        const __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes[c], r + 16 * c), iv);
        const __m128i bytes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(scaled));
        const int n = std::min(16, S4 - 16 * c);
        _mm_mask_storeu_epi8(dst + 16 * c, (__mmask16)((1u << n) - 1), bytes);
      }
    }
    for (int i0 = 0; i0 < nv; i0 += 4) {
#define POFA_CONTEXT(n) context_i8_for<n>(vq, pp, Sp, jq_n, d, i0, acc)
      POFA_DISPATCH_NVEC(std::min(4, nv - i0), POFA_CONTEXT)
#undef POFA_CONTEXT
    }
    for (int dd = 0; dd < d; ++dd) {
      const __m512 s = _mm512_set1_ps(sv[dd]);
      for (int c = 0; c < nv; ++c) {
        const __m512 val = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + (size_t)dd * Sp + 16 * c));
        _mm512_mask_storeu_ps(out + (size_t)dd * ld + 16 * c, lanes[c],
                              _mm512_mul_ps(_mm512_mul_ps(val, s), _mm512_loadu_ps(inv_sum + 16 * c)));
      }
    }
  }
#endif
}

}  // namespace pofa
