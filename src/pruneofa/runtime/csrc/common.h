// Shared helpers for the sparse kernels: SIMD feature switches, scratch memory, work split,
// the exact-GELU epilogue and 16x16 transposes.
//
// Layout convention: activations arrive token-major, x[M][K] (PyTorch's [tokens, features]),
// and leave token-major, y[M][N]. Inside, the kernels work "feature-major": every input feature
// k owns a contiguous run of all tokens, xt[k][0..Mp). One weight non-zero W[o][k] then updates
// a whole vector of tokens with a single broadcast FMA (or VNNI dot product), which is what makes
// unstructured sparsity vectorise.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <omp.h>

// One set of kernels per build, chosen from the compiler's target (the build uses -march=native):
//   POFA_AVX512 (+ POFA_VNNI): 512-bit paths, int8 with vpdpbusd (int8 without VNNI: portable loops);
//   POFA_AVX2: 256-bit paths for a CPU with AVX2 + FMA but no AVX-512 (int8: maddubs with the sign
//              trick, exact; activations stored signed, see kActZero in pack.h), and with AVX-VNNI
//              (POFA_AVX_VNNI: Alder Lake and later clients, Sierra Forest) the same sign trick on
//              vpdpbusd: one instruction instead of maddubs + madd + add;
//   neither: the portable loops, the reference every SIMD path is tested against.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define POFA_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define POFA_AVX2 1
#if defined(__AVXVNNI__)
#define POFA_AVX_VNNI 1
#endif
#endif
#if defined(POFA_AVX512) && defined(__AVX512VNNI__)
#define POFA_VNNI 1
#endif

namespace pofa {

// Which kernels this build runs (reported by pofa_kernel_isa and `pruneofa bench`).
#if defined(POFA_VNNI)
constexpr const char* kKernelIsa = "avx512-vnni";
#elif defined(POFA_AVX512)
constexpr const char* kKernelIsa = "avx512";
#elif defined(POFA_AVX_VNNI)
constexpr const char* kKernelIsa = "avx2-vnni";
#elif defined(POFA_AVX2)
constexpr const char* kKernelIsa = "avx2";
#else
constexpr const char* kKernelIsa = "portable";
#endif

constexpr int kRowBlock = 16;  // output rows finished together, then transposed into y

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Per-calling-thread scratch buffer, grown on demand and shared with the OpenMP team of that call.
// 64-byte aligned so that AVX-512 loads of a feature row never split cache lines.
struct Scratch {
  void* ptr = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(ptr); }
  void* get(size_t bytes) {
    if (bytes > size) {
      std::free(ptr);
      size = (bytes + 4095) / 4096 * 4096;
      ptr = std::aligned_alloc(64, size);
    }
    return ptr;
  }
};
inline Scratch& scratch(int slot) {
  static thread_local Scratch slots[3];
  return slots[slot];
}

// Split row blocks [0, n_blocks) among `parts` threads so that each gets about the same
// number of non-zeros plus a fixed cost per row (the epilogue), using the row pointer.
inline void balanced_range(const int32_t* row_ptr, int n_rows, int part, int parts, int* lo, int* hi) {
  const int n_blocks = (n_rows + kRowBlock - 1) / kRowBlock;
  auto cost = [&](int block) {  // cumulative cost of the blocks before `block`
    const int row = std::min(block * kRowBlock, n_rows);
    return (int64_t)row_ptr[row] + 8LL * row;
  };
  const int64_t total = cost(n_blocks);
  auto first_block_at = [&](int64_t target) {  // first block whose cumulative cost >= target
    int a = 0, b = n_blocks;
    while (a < b) {
      int mid = (a + b) / 2;
      if (cost(mid) < target) a = mid + 1; else b = mid;
    }
    return a;
  };
  *lo = part == 0 ? 0 : first_block_at(total * part / parts);
  *hi = part + 1 == parts ? n_blocks : first_block_at(total * (part + 1) / parts);
}

// erf as in Eigen's generic_fast_erf_float: a rational approximation, a few ulp in float.
constexpr float kErfAlpha[7] = {-2.72614225801306e-10f, 2.77068142495902e-08f, -2.10102402082508e-06f,
                                -5.69250639462346e-05f, -7.34990630326855e-04f, -2.95459980854025e-03f,
                                -1.60960333262415e-02f};
constexpr float kErfBeta[5] = {-1.45660718464996e-05f, -2.13374055278905e-04f, -1.68282697438203e-03f,
                               -7.37332916720468e-03f, -1.42647390514189e-02f};

inline float fast_erf(float x) {
  x = std::min(4.0f, std::max(-4.0f, x));
  const float x2 = x * x;
  float p = kErfAlpha[0], q = kErfBeta[0];
  for (int i = 1; i < 7; ++i) p = p * x2 + kErfAlpha[i];
  for (int i = 1; i < 5; ++i) q = q * x2 + kErfBeta[i];
  return x * p / q;
}

enum Activation { kNone = 0, kGelu = 1, kGeluTanh = 2 };

// The exact (erf) GELU BERT uses: 0.5 z (1 + erf(z / sqrt 2)).
inline float gelu(float z) { return 0.5f * z * (1.0f + fast_erf(z * 0.70710678118654752f)); }

// GPT-2's tanh GELU, 0.5 z (1 + tanh(u)) with u = sqrt(2 / pi) (z + 0.044715 z^3), written as
// z / (1 + e^(-2u)) (the same function: 0.5 (1 + tanh u) is the logistic of 2u). The exponent is
// clamped where e^x would overflow a float; the result there is 0 or z either way.
constexpr float kGeluTanhC = 0.79788456080286536f, kGeluTanhCubic = 0.044715f, kExpClamp = 87.0f;
inline float gelu_tanh(float z) {
  const float e = -2.0f * kGeluTanhC * (z + kGeluTanhCubic * z * z * z);
  return z / (1.0f + std::exp(std::min(kExpClamp, std::max(-kExpClamp, e))));
}

inline float activate(float v, int act) { return act == kGelu ? gelu(v) : act == kGeluTanh ? gelu_tanh(v) : v; }

#ifdef POFA_AVX512
// exp (the softmax's, the tanh GELU's): range reduction to 2^n * e^r, |r| <= ln2/2, degree-6 polynomial (~1 ulp).
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

#ifdef POFA_AVX512
inline __m512 gelu16(__m512 z) {
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(4.0f),
                                 _mm512_max_ps(_mm512_set1_ps(-4.0f), _mm512_mul_ps(z, _mm512_set1_ps(0.70710678118654752f))));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(kErfAlpha[0]), q = _mm512_set1_ps(kErfBeta[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(kErfAlpha[i]));
  for (int i = 1; i < 5; ++i) q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(kErfBeta[i]));
  const __m512 erf = _mm512_div_ps(_mm512_mul_ps(x, p), q);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), z), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

inline __m512 gelu_tanh16(__m512 z) {
  const __m512 z3 = _mm512_mul_ps(_mm512_mul_ps(z, z), z);
  const __m512 inner = _mm512_fmadd_ps(z3, _mm512_set1_ps(kGeluTanhCubic), z);  // u / sqrt(2 / pi)
  const __m512 minus_2u = _mm512_mul_ps(inner, _mm512_set1_ps(-2.0f * kGeluTanhC));
  const __m512 e = exp16(_mm512_min_ps(_mm512_set1_ps(kExpClamp), minus_2u));
  return _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline __m512 activate16(__m512 v, int act) { return act == kGelu ? gelu16(v) : act == kGeluTanh ? gelu_tanh16(v) : v; }
#endif

#ifdef POFA_AVX2
// 8-lane fp32 counterparts of gelu16 / transpose16 (same polynomial, same operation order).
inline __m256 gelu8(__m256 z) {
  const __m256 x = _mm256_min_ps(_mm256_set1_ps(4.0f),
                                 _mm256_max_ps(_mm256_set1_ps(-4.0f), _mm256_mul_ps(z, _mm256_set1_ps(0.70710678118654752f))));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(kErfAlpha[0]), q = _mm256_set1_ps(kErfBeta[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kErfAlpha[i]));
  for (int i = 1; i < 5; ++i) q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(kErfBeta[i]));
  const __m256 erf = _mm256_div_ps(_mm256_mul_ps(x, p), q);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), z), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

inline __m256 gelu_tanh8(__m256 z) {
  const __m256 z3 = _mm256_mul_ps(_mm256_mul_ps(z, z), z);
  const __m256 inner = _mm256_fmadd_ps(z3, _mm256_set1_ps(kGeluTanhCubic), z);
  const __m256 minus_2u = _mm256_mul_ps(inner, _mm256_set1_ps(-2.0f * kGeluTanhC));
  const __m256 e = exp8(_mm256_min_ps(_mm256_set1_ps(kExpClamp), minus_2u));
  return _mm256_div_ps(z, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

inline __m256 activate8(__m256 v, int act) { return act == kGelu ? gelu8(v) : act == kGeluTanh ? gelu_tanh8(v) : v; }

inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// In-register transpose of 8 vectors of 8 floats: r[i][j] -> r[j][i].
inline void transpose8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) r[i] = t[i];
}

// Lane mask of the first n (0..8) lanes, for maskload/maskstore.
inline __m256i lanes8(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

#ifdef POFA_AVX512
// In-register transpose of 16 vectors of 16 floats: r[i][j] -> r[j][i].
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
  }
}
#endif

}  // namespace pofa
