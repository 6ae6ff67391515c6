// Activation packing: fp32 activations -> the feature-major buffers the kernels read. The input is
// either token-major x[M][K] (PyTorch's layout: packing transposes) or already feature-major
// x[K][ld] (the output of a previous kernel: packing only quantises, no transpose).
//   pack_f32   : xt[k][t] fp32, tokens padded with 0 up to Mp (multiple of 16)
//   pack_u8    : xt[k][t] uint8 = q(x[t][k]) + 128, padded with 128 (= 0) up to Mp (multiple of 64)
//   pack_u8x4  : xp[k/4][t] = 4 uint8 of features 4(k/4)..+3 of token t ("VNNI layout", for 1x4 blocks)
// q() is symmetric per-token int8: q = round(x * 127 / max|x[t]|). The +128 shift (kActZero) is there
// because VNNI's vpdpbusd multiplies *unsigned* bytes by signed bytes; the kernels subtract 128*sum(w)
// back. The AVX2 build stores q itself (signed, kActZero = 0): its kernels multiply with the sign trick
// (maddubs(|w|, sign(q, w)), exact), so "u8" below is then the bit pattern of an int8.
// Each function is a work-shared loop: call it inside an OpenMP parallel region.
#pragma once
#include "common.h"

namespace pofa {

#ifdef POFA_AVX2
constexpr int kActZero = 0;
#else
constexpr int kActZero = 128;
#endif
constexpr uint8_t kActPad = (uint8_t)kActZero;  // the byte of a zero activation (padding)

// The integer value an activation byte stands for, before the kernels' zero-point correction.
inline int act_value(uint8_t b) { return kActZero ? (int)b : (int)(int8_t)b; }

#ifdef POFA_AVX2
// 8 tokens x 8 consecutive features k0.. of token-major x (rows past M, features past K read as 0),
// optionally multiplied by each token's inverse scale.
inline void load_block8(const float* x, int M, int K, int t0, int k0, const float* inv, __m256 r[8]) {
  const __m256i kmask = lanes8(K - k0);
  for (int i = 0; i < 8; ++i) {
    const int t = t0 + i;
    r[i] = t < M ? _mm256_maskload_ps(x + (size_t)t * K + k0, kmask) : _mm256_setzero_ps();
    if (inv && t < M) r[i] = _mm256_mul_ps(r[i], _mm256_set1_ps(inv[t]));
  }
}

// 16 scaled values (a: the first 8) -> 16 int8, rounded to nearest even as std::nearbyint.
inline __m128i quantize16_s8(__m256 a, __m256 b) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b)), 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

// 8 lanes of four quantised bytes each: (r0, r1, r2, r3)[lane], the operand layout of the int8 kernels.
inline __m256i quantize_pack4_s8(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 inv) {
  const __m256i byte = _mm256_set1_epi32(0xFF);
  auto q = [&](__m256 r) { return _mm256_and_si256(_mm256_cvtps_epi32(_mm256_mul_ps(r, inv)), byte); };
  return _mm256_or_si256(_mm256_or_si256(q(r0), _mm256_slli_epi32(q(r1), 8)),
                         _mm256_or_si256(_mm256_slli_epi32(q(r2), 16), _mm256_slli_epi32(q(r3), 24)));
}
#endif

// scale[t] = max|x[t]| / 127 and inv[t] = 1/scale[t] (0 for an all-zero token).
inline void token_scales(const float* x, int M, int K, float* scale, float* inv) {
#pragma omp for schedule(static)
  for (int t = 0; t < M; ++t) {
    const float* row = x + (size_t)t * K;
    float m = 0.0f;
#ifdef POFA_AVX512
    // four independent running maxima: one would serialise on vmaxps latency
    __m512 m4[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int k = 0;
    for (; k + 64 <= K; k += 64)
      for (int j = 0; j < 4; ++j) m4[j] = _mm512_max_ps(m4[j], _mm512_abs_ps(_mm512_loadu_ps(row + k + 16 * j)));
    for (; k < K; k += 16) {
      const __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
      m4[0] = _mm512_max_ps(m4[0], _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, row + k)));
    }
    m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m4[0], m4[1]), _mm512_max_ps(m4[2], m4[3])));
#else
#pragma omp simd reduction(max : m)
    for (int k = 0; k < K; ++k) m = std::max(m, std::fabs(row[k]));
#endif
    scale[t] = m / 127.0f;
    inv[t] = m > 0.0f ? 127.0f / m : 0.0f;
  }
}

#ifdef POFA_AVX512
// Load 16 consecutive features k0.. of tokens t0..t0+15 (rows past M or features past K read as 0),
// optionally multiplied by each token's inverse scale.
inline void load_block16(const float* x, int M, int K, int t0, int k0, const float* inv, __m512 r[16]) {
  const __mmask16 kmask = K - k0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k0)) - 1);
  for (int i = 0; i < 16; ++i) {
    const int t = t0 + i;
    r[i] = t < M ? _mm512_maskz_loadu_ps(kmask, x + (size_t)t * K + k0) : _mm512_setzero_ps();
    if (inv && t < M) r[i] = _mm512_mul_ps(r[i], _mm512_set1_ps(inv[t]));
  }
}
#endif

inline void pack_f32(const float* x, int M, int K, int Mp, float* xt) {
#ifdef POFA_AVX512
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < K; k0 += 16) {
    const int nk = std::min(16, K - k0);
    for (int t0 = 0; t0 < Mp; t0 += 16) {
      __m512 r[16];
      load_block16(x, M, K, t0, k0, nullptr, r);
      transpose16(r);
      for (int j = 0; j < nk; ++j) _mm512_storeu_ps(xt + (size_t)(k0 + j) * Mp + t0, r[j]);
    }
  }
#elif defined(POFA_AVX2)
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < K; k0 += 8) {
    const int nk = std::min(8, K - k0);
    for (int t0 = 0; t0 < Mp; t0 += 8) {
      __m256 r[8];
      load_block8(x, M, K, t0, k0, nullptr, r);
      transpose8(r);
      for (int j = 0; j < nk; ++j) _mm256_storeu_ps(xt + (size_t)(k0 + j) * Mp + t0, r[j]);
    }
  }
#else
#pragma omp for schedule(static)
  for (int k = 0; k < K; ++k)
    for (int t = 0; t < Mp; ++t) xt[(size_t)k * Mp + t] = t < M ? x[(size_t)t * K + k] : 0.0f;
#endif
}

inline uint8_t quantize_u8(float v, float inv) {
  return (uint8_t)((int)std::nearbyint(v * inv) + kActZero);
}

inline void pack_u8(const float* x, int M, int K, int Mp, const float* inv, uint8_t* xt) {
#ifdef POFA_AVX512
  const __m512i shift = _mm512_set1_epi32(128);
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < K; k0 += 16) {
    const int nk = std::min(16, K - k0);
    for (int t0 = 0; t0 < Mp; t0 += 16) {
      __m512 r[16];
      load_block16(x, M, K, t0, k0, inv, r);
      transpose16(r);
      for (int j = 0; j < nk; ++j) {
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(r[j]), shift);
        _mm_storeu_si128((__m128i*)(xt + (size_t)(k0 + j) * Mp + t0), _mm512_cvtusepi32_epi8(q));
      }
    }
  }
#elif defined(POFA_AVX2)
#pragma omp for schedule(static)
  for (int k0 = 0; k0 < K; k0 += 8) {
    const int nk = std::min(8, K - k0);
    for (int t0 = 0; t0 < Mp; t0 += 16) {  // Mp: a multiple of 64
      __m256 a[8], b[8];
      load_block8(x, M, K, t0, k0, inv, a);
      load_block8(x, M, K, t0 + 8, k0, inv, b);
      transpose8(a);
      transpose8(b);
      for (int j = 0; j < nk; ++j) _mm_storeu_si128((__m128i*)(xt + (size_t)(k0 + j) * Mp + t0), quantize16_s8(a[j], b[j]));
    }
  }
#else
#pragma omp for schedule(static)
  for (int k = 0; k < K; ++k)
    for (int t = 0; t < Mp; ++t) xt[(size_t)k * Mp + t] = t < M ? quantize_u8(x[(size_t)t * K + k], inv[t]) : kActPad;
#endif
}

#ifdef POFA_AVX512
// 16 lanes of four quantised bytes each: (r0, r1, r2, r3)[lane] (+offset), the VNNI operand layout.
inline __m512i quantize_pack4(__m512 r0, __m512 r1, __m512 r2, __m512 r3, __m512 inv, int offset) {
  const __m512i off = _mm512_set1_epi32(offset), byte = _mm512_set1_epi32(0xFF);
  auto q = [&](__m512 r) { return _mm512_and_si512(_mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(r, inv)), off), byte); };
  return _mm512_or_si512(_mm512_or_si512(q(r0), _mm512_slli_epi32(q(r1), 8)),
                         _mm512_or_si512(_mm512_slli_epi32(q(r2), 16), _mm512_slli_epi32(q(r3), 24)));
}
#endif

// xp[kb][t] (4 bytes) = q(x[t][4kb..4kb+3]) + 128, padded with 128 (token-major input).
inline void pack_u8x4(const float* x, int M, int K, int Mp, const float* inv, uint8_t* xp) {
  const int K4 = (K + 3) / 4;
#ifdef POFA_AVX512
  // 64 features (16 quads) x 16 tokens: quantise each token's 64 features into 16 int32, then a
  // 16x16 transpose of those int32 puts 16 tokens of one quad side by side.
  const __m512i shift = _mm512_set1_epi8((char)128);
#pragma omp for schedule(static)
  for (int kb0 = 0; kb0 < K4; kb0 += 16) {
    const int nkb = std::min(16, K4 - kb0);
    for (int t0 = 0; t0 < Mp; t0 += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const int t = t0 + i;
        __m512i packed = shift;  // zero point for padding tokens
        if (t < M) {
          const float* row = x + (size_t)t * K;
          __m128i bytes[4];
          for (int c = 0; c < 4; ++c) {
            const int k = 4 * kb0 + 16 * c;
            const int n = std::max(0, std::min(16, K - k));
            const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), row + k), _mm512_set1_ps(inv[t]));
            bytes[c] = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
          }
          packed = _mm512_inserti32x4(_mm512_castsi128_si512(bytes[0]), bytes[1], 1);
          packed = _mm512_inserti32x4(_mm512_inserti32x4(packed, bytes[2], 2), bytes[3], 3);
          packed = _mm512_add_epi8(packed, shift);
        }
        r[i] = _mm512_castsi512_ps(packed);
      }
      transpose16(r);
      for (int j = 0; j < nkb; ++j) _mm512_storeu_ps((float*)(xp + ((size_t)(kb0 + j) * Mp + t0) * 4), r[j]);
    }
  }
#elif defined(POFA_AVX2)
  // 32 features (8 quads) x 8 tokens: each token's 32 features quantised into 8 int32, then an 8x8
  // transpose of those int32 puts 8 tokens of one quad side by side.
#pragma omp for schedule(static)
  for (int kb0 = 0; kb0 < K4; kb0 += 8) {
    const int nkb = std::min(8, K4 - kb0);
    for (int t0 = 0; t0 < Mp; t0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        const int t = t0 + i;
        __m256i packed = _mm256_setzero_si256();  // padding tokens: zero
        if (t < M) {
          const float* row = x + (size_t)t * K;
          const __m256 iv = _mm256_set1_ps(inv[t]);
          __m256 v[4];
          for (int c = 0; c < 4; ++c) {
            const int k = 4 * kb0 + 8 * c;
            v[c] = _mm256_mul_ps(_mm256_maskload_ps(row + k, lanes8(K - k)), iv);
          }
          packed = _mm256_set_m128i(quantize16_s8(v[2], v[3]), quantize16_s8(v[0], v[1]));
        }
        r[i] = _mm256_castsi256_ps(packed);
      }
      transpose8(r);
      for (int j = 0; j < nkb; ++j) _mm256_storeu_ps((float*)(xp + ((size_t)(kb0 + j) * Mp + t0) * 4), r[j]);
    }
  }
#else
#pragma omp for schedule(static)
  for (int kb = 0; kb < K4; ++kb)
    for (int t = 0; t < Mp; ++t)
      for (int j = 0; j < 4; ++j) {
        const int k = 4 * kb + j;
        xp[((size_t)kb * Mp + t) * 4 + j] = (t < M && k < K) ? quantize_u8(x[(size_t)t * K + k], inv[t]) : kActPad;
      }
#endif
}

// ---- feature-major fp32 input x[K][ld], tokens 0..Mc (Mc multiple of 16, <= ld) ----

inline void token_scales_fm(const float* x, int K, int ld, int Mc, float* scale, float* inv) {
#pragma omp for schedule(static)
  for (int t0 = 0; t0 < Mc; t0 += 64) {  // 64 tokens: four independent running maxima
    const int w = std::min(64, Mc - t0);
    float m[64] = {};
    for (int k = 0; k < K; ++k) {
      const float* row = x + (size_t)k * ld + t0;
#pragma omp simd
      for (int i = 0; i < w; ++i) m[i] = std::max(m[i], std::fabs(row[i]));
    }
    for (int i = 0; i < w; ++i) {
      scale[t0 + i] = m[i] / 127.0f;
      inv[t0 + i] = m[i] > 0.0f ? 127.0f / m[i] : 0.0f;
    }
  }
}

// The same from per-thread running maxima [parts][ld] kept by the producer of x (Output::absmax).
inline void token_scales_parts(const float* parts, int n_parts, int ld, int Mc, float* scale, float* inv) {
#pragma omp for schedule(static)
  for (int t = 0; t < Mc; ++t) {
    float m = 0.0f;
    for (int j = 0; j < n_parts; ++j) m = std::max(m, parts[(size_t)j * ld + t]);
    scale[t] = m / 127.0f;
    inv[t] = m > 0.0f ? 127.0f / m : 0.0f;
  }
}

// xt[k][t] = q(x[k][t]) for t < Mc; columns Mc..Mp are set to the zero point.
inline void pack_u8_fm(const float* x, int K, int ld, int Mc, int Mp, const float* inv, uint8_t* xt) {
#pragma omp for schedule(static)
  for (int k = 0; k < K; ++k) {
    const float* row = x + (size_t)k * ld;
    uint8_t* dst = xt + (size_t)k * Mp;
#ifdef POFA_AVX512
    const __m512i shift = _mm512_set1_epi32(128);
    for (int t = 0; t < Mc; t += 16) {
      const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(row + t), _mm512_loadu_ps(inv + t));
      _mm_storeu_si128((__m128i*)(dst + t), _mm512_cvtusepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), shift)));
    }
#elif defined(POFA_AVX2)
    for (int t = 0; t < Mc; t += 16) {
      const __m256 a = _mm256_mul_ps(_mm256_loadu_ps(row + t), _mm256_loadu_ps(inv + t));
      const __m256 b = _mm256_mul_ps(_mm256_loadu_ps(row + t + 8), _mm256_loadu_ps(inv + t + 8));
      _mm_storeu_si128((__m128i*)(dst + t), quantize16_s8(a, b));
    }
#else
    for (int t = 0; t < Mc; ++t) dst[t] = quantize_u8(row[t], inv[t]);
#endif
    for (int t = Mc; t < Mp; ++t) dst[t] = kActPad;
  }
}

inline void pack_u8x4_fm(const float* x, int K, int ld, int Mc, int Mp, const float* inv, uint8_t* xp) {
  const int K4 = (K + 3) / 4;
#pragma omp for schedule(static)
  for (int kb = 0; kb < K4; ++kb) {
#ifdef POFA_AVX512
    const __m512 zero = _mm512_setzero_ps();
    const float* rows[4];
    for (int j = 0; j < 4; ++j) rows[j] = 4 * kb + j < K ? x + (size_t)(4 * kb + j) * ld : nullptr;
    for (int t = 0; t < Mc; t += 16) {
      __m512 r[4];
      for (int j = 0; j < 4; ++j) r[j] = rows[j] ? _mm512_loadu_ps(rows[j] + t) : zero;
      _mm512_storeu_si512(xp + ((size_t)kb * Mp + t) * 4, quantize_pack4(r[0], r[1], r[2], r[3], _mm512_loadu_ps(inv + t), 128));
    }
    for (int t = Mc; t < Mp; ++t) std::memset(xp + ((size_t)kb * Mp + t) * 4, 128, 4);
#elif defined(POFA_AVX2)
    const float* rows[4];
    for (int j = 0; j < 4; ++j) rows[j] = 4 * kb + j < K ? x + (size_t)(4 * kb + j) * ld : nullptr;
    for (int t = 0; t < Mc; t += 8) {
      __m256 r[4];
      for (int j = 0; j < 4; ++j) r[j] = rows[j] ? _mm256_loadu_ps(rows[j] + t) : _mm256_setzero_ps();
      _mm256_storeu_si256((__m256i*)(xp + ((size_t)kb * Mp + t) * 4),
                          quantize_pack4_s8(r[0], r[1], r[2], r[3], _mm256_loadu_ps(inv + t)));
    }
    std::memset(xp + ((size_t)kb * Mp + Mc) * 4, kActPad, (size_t)(Mp - Mc) * 4);
#else
    for (int t = 0; t < Mp; ++t)
      for (int j = 0; j < 4; ++j) {
        const int k = 4 * kb + j;
        xp[((size_t)kb * Mp + t) * 4 + j] = (t < Mc && k < K) ? quantize_u8(x[(size_t)k * ld + t], inv[t]) : kActPad;
      }
#endif
  }
}

}  // namespace pofa
