// int8 sparse weight x int8 activations, int32 accumulation, fp32 out:
//   y[t][o] = act(sx[t] * sw[o] * (sum_k W8[o][k] * (xq[t][k] + 128) - 128 * sum_k W8[o][k]) + b[o])
// [then LayerNorm(y + residual)]. Activations are quantised per token on the fly (symmetric).
// Weights: per output row, non-zeros grouped four at a time ("quads": 4 column indices + 4 int8
// values packed in one int32; a short last quad is padded with zero weights).
//
// Two layouts of the activations, chosen per layer when the weights are packed:
//  - gather (unstructured): xt[k][t] bytes. A quad's four feature rows are loaded (64 tokens each)
//    and byte-interleaved with two levels of unpack, giving for every token the 4 bytes that one
//    vpdpbusd multiplies with the 4 broadcast weights. The unpacks leave tokens permuted inside
//    each 64-token group; four 128-bit-lane shuffles restore the order when the row is finished.
//  - blocks (1x4 block-sparse, columns 4j..4j+3): xp[j][t] already holds the 4 bytes per token,
//    so each quad is one load + one vpdpbusd per 16 tokens, no shuffles.
//  - dense (no zeros worth skipping, e.g. a compacted structured model): every 1x4 block of a row,
//    in order, no column indices (row o's K4 = ceil(K/4) quads are qw[o*K4 ..], zero-padded past K);
//    activations as for blocks. A register-blocked GEMM (`dense_i8_rows`): kDenseRows rows x
//    kDenseVecs 16-token vectors of accumulators, so one activation load feeds kDenseRows vpdpbusd
//    and one broadcast weight kDenseVecs. One row at a time (the blocks kernel) reloads the whole
//    activation stream per row and is L2-bound at ~40 MACs/cycle; this one runs at VNNI's peak.
// The AVX2 build (no VNNI) runs the same three layouts with maddubs + madd on signed activations
// (POFA_AVX2 section below: exact, the zero point is then 0); the portable loops are the reference.
#pragma once
#include "amx.h"
#include "epilogue.h"
#include "pack.h"

namespace pofa {

enum Layout { kGather = 0, kBlocks = 1, kDense = 2 };

// The sparse weights (indices and values) stream from L3 or DRAM: fetch both streams 64 quads ahead
// (512 B of indices, 256 B of values), as the dense kernel does its weights. Past a row's end it reads
// the next row's quads, which follow in memory. -DPOFA_NO_SPARSE_PREFETCH leaves it to the hardware.
inline void prefetch_quads(const uint16_t* qc, const int32_t* qw, int q) {
#ifndef POFA_NO_SPARSE_PREFETCH
  __builtin_prefetch(qc + 4 * q + 256);
  __builtin_prefetch(qw + q + 64);
#else
  (void)qc, (void)qw, (void)q;
#endif
}

constexpr int kDenseRows = 4, kDenseVecs = 2;  // dense micro-tile: 4 rows x 32 tokens (measured best of 2-16 x 1-8)

struct Dequant {  // per row: y[p] = (acc[p] - zero) * scale * sx[p]
  int32_t zero;
  float scale;
  const float* sx;  // per-token scales of the tile
};

#ifdef POFA_VNNI
inline __m512 dequant16(__m512i acc, const Dequant& d, int p) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(d.zero)));
  return _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(d.scale), _mm512_loadu_ps(d.sx + p)));
}

// NV = number of 64-token vectors in the tile (1 or 2); out[] gets 64*NV floats in token order.
template <int NV>
inline void row_i8_gather(const uint8_t* xt, int Mp, const uint16_t* qc, const int32_t* qw, int nq, const Dequant& d,
                          float* out) {
  __m512i acc[4 * NV];
  for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_setzero_si512();
  for (int q = 0; q < nq; ++q) {
    prefetch_quads(qc, qw, q);
    const uint8_t* r0 = xt + (size_t)qc[4 * q] * Mp;
    const uint8_t* r1 = xt + (size_t)qc[4 * q + 1] * Mp;
    const uint8_t* r2 = xt + (size_t)qc[4 * q + 2] * Mp;
    const uint8_t* r3 = xt + (size_t)qc[4 * q + 3] * Mp;
    const __m512i w = _mm512_set1_epi32(qw[q]);
    for (int h = 0; h < NV; ++h) {
      const __m512i a = _mm512_loadu_si512(r0 + 64 * h), b = _mm512_loadu_si512(r1 + 64 * h);
      const __m512i c = _mm512_loadu_si512(r2 + 64 * h), e = _mm512_loadu_si512(r3 + 64 * h);
      const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
      const __m512i ce_lo = _mm512_unpacklo_epi8(c, e), ce_hi = _mm512_unpackhi_epi8(c, e);
      acc[4 * h + 0] = _mm512_dpbusd_epi32(acc[4 * h + 0], _mm512_unpacklo_epi16(ab_lo, ce_lo), w);
      acc[4 * h + 1] = _mm512_dpbusd_epi32(acc[4 * h + 1], _mm512_unpackhi_epi16(ab_lo, ce_lo), w);
      acc[4 * h + 2] = _mm512_dpbusd_epi32(acc[4 * h + 2], _mm512_unpacklo_epi16(ab_hi, ce_hi), w);
      acc[4 * h + 3] = _mm512_dpbusd_epi32(acc[4 * h + 3], _mm512_unpackhi_epi16(ab_hi, ce_hi), w);
    }
  }
  // acc[4h + j], 128-bit lane L holds tokens 64h + 16L + 4j + (0..3): a 4x4 transpose of lanes
  // gives lane-ordered vectors B_L = tokens 64h + 16L + (0..15).
  for (int h = 0; h < NV; ++h) {
    const __m512i* a = acc + 4 * h;
    const __m512i t0 = _mm512_shuffle_i32x4(a[0], a[1], 0x44), t1 = _mm512_shuffle_i32x4(a[0], a[1], 0xEE);
    const __m512i t2 = _mm512_shuffle_i32x4(a[2], a[3], 0x44), t3 = _mm512_shuffle_i32x4(a[2], a[3], 0xEE);
    const __m512i b[4] = {_mm512_shuffle_i32x4(t0, t2, 0x88), _mm512_shuffle_i32x4(t0, t2, 0xDD),
                          _mm512_shuffle_i32x4(t1, t3, 0x88), _mm512_shuffle_i32x4(t1, t3, 0xDD)};
    for (int L = 0; L < 4; ++L) _mm512_storeu_ps(out + 64 * h + 16 * L, dequant16(b[L], d, 64 * h + 16 * L));
  }
}

#if defined(__AVX512VBMI__) && !defined(POFA_NO_GATHER16)
#define POFA_GATHER16 1
// Gather layout, at most 16 tokens (a short sentence): only the first 16 bytes of each feature row count,
// so a quad's four rows go into the four 128-bit lanes of one vector (a load and three merge-masked broadcasts)
// and one vpermb turns them into 16 tokens x 4 bytes. That is 1 shuffle and 3 blends a quad where the
// 64-token kernel spends 6 shuffles on rows that are three-quarters padding. Four accumulators take
// turns (a vpdpbusd chained on the last one would wait its latency every quad) and are summed at the end:
// the same integer sums, so the same bits.
inline void row_i8_gather16(const uint8_t* xt, int Mp, const uint16_t* qc, const int32_t* qw, int nq, const Dequant& d,
                            float* out) {
  // byte 4t + i of the result = byte t of lane i: token t's bytes from the quad's four feature rows
  alignas(64) static const struct Index {
    uint8_t b[64];
    Index() {
      for (int t = 0; t < 16; ++t)
        for (int i = 0; i < 4; ++i) b[4 * t + i] = (uint8_t)(16 * i + t);
    }
  } index;
  const __m512i idx = _mm512_load_si512(index.b);
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  auto rows = [&](int q) {
    uint64_t c;
    std::memcpy(&c, qc + 4 * q, 8);  // the four column indices in one load
    // lane i of the vector is row i: a 16-byte load broadcast to lane i only (merge-masked), never split
    const auto row = [&](int shift) {
      return _mm_loadu_si128((const __m128i*)(xt + (size_t)((c >> shift) & 0xFFFF) * Mp));
    };
    __m512i v = _mm512_castsi128_si512(row(0));
    v = _mm512_mask_broadcast_i32x4(v, 0x00F0, row(16));
    v = _mm512_mask_broadcast_i32x4(v, 0x0F00, row(32));
    v = _mm512_mask_broadcast_i32x4(v, 0xF000, row(48));
    return _mm512_permutexvar_epi8(idx, v);
  };
  int q = 0;
  for (; q + 4 <= nq; q += 4) {
    prefetch_quads(qc, qw, q);
    for (int j = 0; j < 4; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], rows(q + j), _mm512_set1_epi32(qw[q + j]));
  }
  for (; q < nq; ++q) acc[0] = _mm512_dpbusd_epi32(acc[0], rows(q), _mm512_set1_epi32(qw[q]));
  const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
  _mm512_storeu_ps(out, dequant16(sum, d, 0));
}
#endif

template <int NV>
inline void row_i8_blocks(const uint8_t* xp, int Mp, const uint16_t* qc, const int32_t* qw, int nq, const Dequant& d,
                          float* out) {
  __m512i acc[4 * NV];
  for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_setzero_si512();
  for (int q = 0; q < nq; ++q) {
    prefetch_quads(qc, qw, q);
    const uint8_t* r = xp + (size_t)(qc[4 * q] >> 2) * Mp * 4;
    const __m512i w = _mm512_set1_epi32(qw[q]);
    for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_loadu_si512(r + 64 * i), w);
  }
  for (int i = 0; i < 4 * NV; ++i) _mm512_storeu_ps(out + 16 * i, dequant16(acc[i], d, 16 * i));
}

// Dense layout: R rows (weights w + r * K4) x tokens p..p+16*kDenseVecs of the tile xs; row r goes to
// out + r * kTokenTile + p. Activation vectors loaded once per 4-feature step serve all R rows.
template <int R>
inline void dense_i8_rows(const uint8_t* xs, int Mp, const int32_t* w, int K4, const Dequant* d, int p, float* out) {
  constexpr int V = kDenseVecs;
  __m512i acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  const uint8_t* a = xs + (size_t)p * 4;
  for (int kb = 0; kb < K4; ++kb, a += (size_t)Mp * 4) {
    __m512i x[V];
    for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(a + 64 * v);
    // the weights often come from DRAM (they rarely stay cached between calls): 4 cache lines
    // ahead, one row per step (cold weights: 10-25% faster in a standalone harness)
    _mm_prefetch((const char*)(w + (size_t)(kb % R) * K4 + kb + 64), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_set1_epi32(w[(size_t)r * K4 + kb]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], x[v], wv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_storeu_ps(out + r * kTokenTile + p + 16 * v, dequant16(acc[r][v], d[r], p + 16 * v));
}
#endif

#ifdef POFA_AMX
// 16 rows (weights qw, K4 quads each, K4 % kAmxK4 == 0) x the first n_pos (a multiple of 32) tokens of
// the tile xs -> tile, dequantised exactly as dense_i8_rows does.
inline void dense_i8_block_amx(const int32_t* qw, int K4, const Dequant* d, const uint8_t* xs, int Mp, int n_pos,
                               float* tile) {
  alignas(64) int32_t c[4][16][16];
  const size_t w_stride = (size_t)K4 * 4, x_stride = (size_t)Mp * 4;
  for (int p = 0; p < n_pos; p += 64) {
    const int groups = std::min(4, (n_pos - p) / 16);
    const uint8_t* x = xs + (size_t)p * 4;
    if (groups == 4) {
      amx_accumulate<4>((const uint8_t*)qw, w_stride, K4, x, x_stride);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
    } else {
      amx_accumulate<2>((const uint8_t*)qw, w_stride, K4, x, x_stride);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    for (int r = 0; r < 16; ++r)
      for (int g = 0; g < groups; ++g)
        _mm512_storeu_ps(tile + r * kTokenTile + p + 16 * g, dequant16(_mm512_load_si512(c[g][r]), d[r], p + 16 * g));
  }
}
#endif

#ifdef POFA_AVX2
// int8 without VNNI, exactly: activations are stored signed (kActZero = 0), and a vector of 4-byte
// groups v (activations) times the broadcast weights w is maddubs(|w|, sign(v, w)): |w| is the
// unsigned operand, so each pair sum is at most 2 * 127 * 127 < 2^15 and never saturates (with
// unsigned activations x + 128 it could); madd with 1s then adds the pairs into int32.
struct Weights4 {  // 4 int8 weights broadcast to every 32-bit lane, and their absolute values
  __m256i w, abs;
  explicit Weights4(int32_t q) : w(_mm256_set1_epi32(q)), abs(_mm256_abs_epi8(w)) {}
};

inline __m256i dot4_add(__m256i acc, __m256i v, const Weights4& w) {
#ifdef POFA_AVX_VNNI  // the same products, summed in int32 at once: no int16 stage to saturate
  return _mm256_dpbusd_avx_epi32(acc, w.abs, _mm256_sign_epi8(v, w.w));
#else
  const __m256i pairs = _mm256_maddubs_epi16(w.abs, _mm256_sign_epi8(v, w.w));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

inline __m256 dequant8(__m256i acc, const Dequant& d, int p) {
  const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, _mm256_set1_epi32(d.zero)));
  return _mm256_mul_ps(v, _mm256_mul_ps(_mm256_set1_ps(d.scale), _mm256_loadu_ps(d.sx + p)));
}

// NH = number of 32-token vectors per pass (1 or 2); out[] gets 32*NH floats in token order.
template <int NH>
inline void row_i8_gather_avx2(const uint8_t* xt, int Mp, const uint16_t* qc, const int32_t* qw, int nq,
                               const Dequant& d, float* out) {
  __m256i acc[4 * NH];
  for (int i = 0; i < 4 * NH; ++i) acc[i] = _mm256_setzero_si256();
  for (int q = 0; q < nq; ++q) {
    prefetch_quads(qc, qw, q);
    const uint8_t* r0 = xt + (size_t)qc[4 * q] * Mp;
    const uint8_t* r1 = xt + (size_t)qc[4 * q + 1] * Mp;
    const uint8_t* r2 = xt + (size_t)qc[4 * q + 2] * Mp;
    const uint8_t* r3 = xt + (size_t)qc[4 * q + 3] * Mp;
    const Weights4 w(qw[q]);
    for (int h = 0; h < NH; ++h) {
      const __m256i a = _mm256_loadu_si256((const __m256i*)(r0 + 32 * h));
      const __m256i b = _mm256_loadu_si256((const __m256i*)(r1 + 32 * h));
      const __m256i c = _mm256_loadu_si256((const __m256i*)(r2 + 32 * h));
      const __m256i e = _mm256_loadu_si256((const __m256i*)(r3 + 32 * h));
      const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
      const __m256i ce_lo = _mm256_unpacklo_epi8(c, e), ce_hi = _mm256_unpackhi_epi8(c, e);
      acc[4 * h + 0] = dot4_add(acc[4 * h + 0], _mm256_unpacklo_epi16(ab_lo, ce_lo), w);
      acc[4 * h + 1] = dot4_add(acc[4 * h + 1], _mm256_unpackhi_epi16(ab_lo, ce_lo), w);
      acc[4 * h + 2] = dot4_add(acc[4 * h + 2], _mm256_unpacklo_epi16(ab_hi, ce_hi), w);
      acc[4 * h + 3] = dot4_add(acc[4 * h + 3], _mm256_unpackhi_epi16(ab_hi, ce_hi), w);
    }
  }
  // acc[4h + j], 128-bit lane L holds tokens 32h + 16L + 4j + (0..3): pairs of lanes give the
  // tokens in order, 8 at a time.
  for (int h = 0; h < NH; ++h) {
    const __m256i* a = acc + 4 * h;
    const __m256i b[4] = {_mm256_permute2x128_si256(a[0], a[1], 0x20), _mm256_permute2x128_si256(a[2], a[3], 0x20),
                          _mm256_permute2x128_si256(a[0], a[1], 0x31), _mm256_permute2x128_si256(a[2], a[3], 0x31)};
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + 32 * h + 8 * i, dequant8(b[i], d, 32 * h + 8 * i));
  }
}

// Blocks layout: NY (<= 8) vectors of 8 tokens x 4 bytes per pass.
template <int NY>
inline void row_i8_blocks_avx2(const uint8_t* xp, int Mp, const uint16_t* qc, const int32_t* qw, int nq,
                               const Dequant& d, float* out) {
  __m256i acc[NY];
  for (int i = 0; i < NY; ++i) acc[i] = _mm256_setzero_si256();
  for (int q = 0; q < nq; ++q) {
    prefetch_quads(qc, qw, q);
    const uint8_t* r = xp + (size_t)(qc[4 * q] >> 2) * Mp * 4;
    const Weights4 w(qw[q]);
    for (int i = 0; i < NY; ++i) acc[i] = dot4_add(acc[i], _mm256_loadu_si256((const __m256i*)(r + 32 * i)), w);
  }
  for (int i = 0; i < NY; ++i) _mm256_storeu_ps(out + 8 * i, dequant8(acc[i], d, 8 * i));
}

// One row over n_pos (a multiple of 64) tokens of the tile, either layout.
inline void row_i8_avx2(const uint8_t* xs, int Mp, int layout, const uint16_t* qc, const int32_t* qw, int nq,
                        int n_pos, const Dequant& d, float* out) {
  for (int p = 0; p < n_pos; p += 64) {
    const Dequant dp{d.zero, d.scale, d.sx + p};
    if (layout == kBlocks)
      row_i8_blocks_avx2<8>(xs + (size_t)p * 4, Mp, qc, qw, nq, dp, out + p);
    else
      row_i8_gather_avx2<2>(xs + p, Mp, qc, qw, nq, dp, out + p);
  }
}

// Dense layout: R rows x kDenseVecsAvx2 vectors of 8 tokens (8 accumulators), tokens p.. of the tile.
constexpr int kDenseVecsAvx2 = 2;

template <int R>
inline void dense_i8_rows_avx2(const uint8_t* xs, int Mp, const int32_t* w, int K4, const Dequant* d, int p,
                               float* out) {
  constexpr int V = kDenseVecsAvx2;
  __m256i acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_si256();
  const uint8_t* a = xs + (size_t)p * 4;
  for (int kb = 0; kb < K4; ++kb, a += (size_t)Mp * 4) {
    __m256i x[V];
    for (int v = 0; v < V; ++v) x[v] = _mm256_loadu_si256((const __m256i*)(a + 32 * v));
    _mm_prefetch((const char*)(w + (size_t)(kb % R) * K4 + kb + 64), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const Weights4 wv(w[(size_t)r * K4 + kb]);
      for (int v = 0; v < V; ++v) acc[r][v] = dot4_add(acc[r][v], x[v], wv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm256_storeu_ps(out + r * kTokenTile + p + 8 * v, dequant8(acc[r][v], d[r], p + 8 * v));
}
#endif

// Portable path (also the reference the VNNI and AVX2 paths are tested against).
inline void row_i8_portable(const uint8_t* x, int Mp, int layout, const uint16_t* qc, const int32_t* qw, int nq,
                            int n_pos, const Dequant& d, float* out) {
  int32_t acc[kTokenTile] = {};
  for (int q = 0; q < nq; ++q) {
    const int8_t* w = (const int8_t*)&qw[q];
    for (int j = 0; j < 4; ++j) {
      if (w[j] == 0) continue;
      const uint8_t* r = layout == kGather ? x + (size_t)qc[4 * q + j] * Mp
                                           : x + (size_t)(layout == kDense ? q : qc[4 * q] >> 2) * Mp * 4 + j;
      const int step = layout == kGather ? 1 : 4;
      for (int p = 0; p < n_pos; ++p) acc[p] += w[j] * act_value(r[step * p]);
    }
  }
  // the SIMD paths' rounding order (dequant16): bit-identical results
  for (int p = 0; p < n_pos; ++p) out[p] = (float)(acc[p] - d.zero) * (d.scale * d.sx[p]);
}

// Rows o0..o0+n_rows of a dense-layout weight x the tile's first n_pos tokens (a multiple of 32) -> tile.
// tiles: this thread holds a TileSession (AMX) and K4 % kAmxK4 == 0; a block of fewer than 16 rows
// still takes the VNNI kernel.
inline void dense_i8_tile(const int32_t* qw, int K4, int n_rows, const Dequant* d, const uint8_t* xs, int Mp,
                          int n_pos, float* tile, bool tiles = false) {
#ifdef POFA_AMX
  if (tiles && n_rows == kRowBlock) return dense_i8_block_amx(qw, K4, d, xs, Mp, n_pos, tile);
#endif
  (void)tiles;
#ifdef POFA_VNNI
  for (int p = 0; p < n_pos; p += 16 * kDenseVecs)
    for (int r = 0; r < n_rows; r += kDenseRows) {
      const int32_t* w = qw + (size_t)r * K4;
      float* out = tile + r * kTokenTile;
      switch (std::min(kDenseRows, n_rows - r)) {
        case 4: dense_i8_rows<4>(xs, Mp, w, K4, d + r, p, out); break;
        case 3: dense_i8_rows<3>(xs, Mp, w, K4, d + r, p, out); break;
        case 2: dense_i8_rows<2>(xs, Mp, w, K4, d + r, p, out); break;
        default: dense_i8_rows<1>(xs, Mp, w, K4, d + r, p, out); break;
      }
    }
#elif defined(POFA_AVX2)
  for (int p = 0; p < n_pos; p += 8 * kDenseVecsAvx2)
    for (int r = 0; r < n_rows; r += kDenseRows) {
      const int32_t* w = qw + (size_t)r * K4;
      float* out = tile + r * kTokenTile;
      switch (std::min(kDenseRows, n_rows - r)) {
        case 4: dense_i8_rows_avx2<4>(xs, Mp, w, K4, d + r, p, out); break;
        case 3: dense_i8_rows_avx2<3>(xs, Mp, w, K4, d + r, p, out); break;
        case 2: dense_i8_rows_avx2<2>(xs, Mp, w, K4, d + r, p, out); break;
        default: dense_i8_rows_avx2<1>(xs, Mp, w, K4, d + r, p, out); break;
      }
    }
#else
  for (int r = 0; r < n_rows; ++r)
    row_i8_portable(xs, Mp, kDense, nullptr, qw + (size_t)r * K4, K4, n_pos, d[r], tile + r * kTokenTile);
#endif
}

struct QuadView {
  int n_in, n_out;
  const int32_t* quad_ptr;
  const uint16_t* cols;
  const int32_t* w;
  const float* w_scale;
  const int32_t* w_sum;
  int layout;  // Layout; kDense: no cols, quad_ptr[o] = o * ceil(n_in / 4)
  const float* bias;
};

inline size_t i8_scratch_bytes(int K, int Mc) {
  return (size_t)4 * ((K + 3) / 4) * round_up(Mc, 64);
}

// Inside a parallel region; layouts as spmm_f32_team. xq: i8_scratch_bytes(K, Mc) bytes;
// sx: 2 * round_up(Mc, 64) floats. x_absmax (feature-major x only, optional): the running maxima
// its producer kept (Output::absmax, one slice per thread of this team). Ends with a barrier.
inline void spmm_i8_team(const QuadView& w, int act, const float* x, int x_fm, int ld_x, int M, uint8_t* xq, float* sx,
                         const Output& out, const AddLayerNorm& post, const float* x_absmax = nullptr) {
  // Feature-major y: only the first round_up(M, 16) columns are computed (at 16 tokens the ld = 64 columns
  // would quadruple the packing, the epilogue and the LayerNorm); no consumer reads past them (the int8
  // packing pads its own buffer, attention masks its lanes), and kernels.spmm_i8 hands out zeroed tensors.
  const int Mc = out.feature_major ? std::min(out.ld, round_up(M, 16)) : M;
  const int Mp = round_up(Mc, 64);
  const int K = w.n_in;
  float* inv = sx + Mp;
  const int scaled = x_fm ? round_up(Mc, 16) : M;  // tokens whose scales are computed; the rest are 0
#pragma omp for schedule(static) nowait  // disjoint from the scales computed next
  for (int t = scaled; t < Mp; ++t) sx[t] = inv[t] = 0.0f;
  reset_absmax(out, round_up(Mc, 16));
  if (x_fm) {
    if (x_absmax)
      token_scales_parts(x_absmax, omp_get_num_threads(), ld_x, scaled, sx, inv);
    else
      token_scales_fm(x, K, ld_x, scaled, sx, inv);
    if (w.layout == kGather)
      pack_u8_fm(x, K, ld_x, scaled, Mp, inv, xq);
    else
      pack_u8x4_fm(x, K, ld_x, scaled, Mp, inv, xq);
  } else {
    token_scales(x, M, K, sx, inv);
    if (w.layout == kGather) pack_u8(x, M, K, Mp, inv, xq); else pack_u8x4(x, M, K, Mp, inv, xq);
  }
  int b_lo, b_hi;
  balanced_range(w.quad_ptr, w.n_out, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
  const TileSession tiles(w.layout == kDense && amx_usable(K) && b_lo < b_hi);
  Output tiles_out = out;
  if (post.residual) tiles_out.absmax = nullptr;  // the LayerNorm keeps the maxima of what it writes
  alignas(64) float tile[kRowBlock * kTokenTile];
  for (int b = b_lo; b < b_hi; ++b) {
    const int o0 = b * kRowBlock, n_rows = std::min(kRowBlock, w.n_out - o0);
    for (int t0 = 0; t0 < Mc; t0 += kTokenTile) {
      const int n_tok = std::min(kTokenTile, Mc - t0), n_pos = round_up(n_tok, 64);
      const uint8_t* xs = w.layout == kGather ? xq + t0 : xq + (size_t)t0 * 4;
      Dequant d[kRowBlock];
      for (int r = 0; r < n_rows; ++r) d[r] = Dequant{kActZero * w.w_sum[o0 + r], w.w_scale[o0 + r], sx + t0};
      if (w.layout == kDense)  // row o's quads start at quad_ptr[o] = o * K4
        dense_i8_tile(w.w + w.quad_ptr[o0], (K + 3) / 4, n_rows, d, xs, Mp, round_up(n_tok, 16 * kDenseVecs), tile,
                      tiles.active);
      else
        for (int r = 0; r < n_rows; ++r) {
          const int o = o0 + r, q0 = w.quad_ptr[o], nq = w.quad_ptr[o + 1] - q0;
          float* dst = tile + r * kTokenTile;
#ifdef POFA_VNNI
          if (w.layout == kBlocks)
            (n_pos > 64 ? row_i8_blocks<2> : row_i8_blocks<1>)(xs, Mp, w.cols + 4 * q0, w.w + q0, nq, d[r], dst);
#ifdef POFA_GATHER16
          else if (n_tok <= 16)
            row_i8_gather16(xs, Mp, w.cols + 4 * q0, w.w + q0, nq, d[r], dst);
#endif
          else
            (n_pos > 64 ? row_i8_gather<2> : row_i8_gather<1>)(xs, Mp, w.cols + 4 * q0, w.w + q0, nq, d[r], dst);
#elif defined(POFA_AVX2)
          row_i8_avx2(xs, Mp, w.layout, w.cols + 4 * q0, w.w + q0, nq, n_pos, d[r], dst);
#else
          row_i8_portable(xs, Mp, w.layout, w.cols + 4 * q0, w.w + q0, nq, n_pos, d[r], dst);
#endif
        }
      store_tile(tile, n_rows, n_tok, round_up(n_tok, 16), t0, o0, w.bias, act, tiles_out);
    }
  }
  // ends with a barrier
  post_op(out, M, round_up(Mc, 16), post, b_lo * kRowBlock, std::min(b_hi * kRowBlock, w.n_out));
}

}  // namespace pofa
