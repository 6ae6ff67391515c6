// int8 sparse weight x int8 activations, int32 accumulation, fp32 out:
//   y[t][o] = act(sx[t] * sw[o] * (sum_k W8[o][k] * (xq[t][k] + 128) - 128 * sum_k W8[o][k]) + b[o])
// Weights: per output row, non-zeros grouped four at a time ("quads": 4 column indices + 4 int8
// values packed in one int32; a short last quad is padded with zero weights).
//
// Two layouts of the activations, chosen per layer when the weights are packed:
//  - gather (unstructured): xt[k][t] bytes. A quad's four feature rows are loaded (64 tokens each)
//    and byte-interleaved with two levels of unpack, giving for every token the 4 bytes that one
//    vpdpbusd multiplies with the 4 broadcast weights. The unpacks leave tokens in a fixed
//    permuted order inside each 64-token group; the epilogue writes each token to its own row.
//  - blocks (1x4 block-sparse, columns 4j..4j+3): xp[j][t] already holds the 4 bytes per token,
//    so each quad is one load + one vpdpbusd per 16 tokens, no shuffles.
#include "epilogue.h"
#include "pack.h"

namespace pofa {

enum Layout { kGather = 0, kBlocks = 1 };

// Token held at position p of a 64-token group after the gather kernel's unpacks: accumulator j,
// 128-bit lane L, element i holds token 16L + 4j + i, i.e. the 2-bit fields L and j swap.
inline int gather_token(int p) { return (p & ~0x3C) | (((p >> 4) & 3) << 2) | (((p >> 2) & 3) << 4); }

struct Dequant {  // per row: y = (acc - zero) * scale * sx[position]
  int32_t zero;
  float scale;
  const float* sx;  // per position of the tile
};

#ifdef POFA_VNNI
template <int NA>
static inline void dequant_store(const __m512i* acc, const Dequant& d, float* out) {
  const __m512i zero = _mm512_set1_epi32(d.zero);
  const __m512 s = _mm512_set1_ps(d.scale);
  for (int i = 0; i < NA; ++i) {
    const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i], zero));
    _mm512_storeu_ps(out + 16 * i, _mm512_mul_ps(v, _mm512_mul_ps(s, _mm512_loadu_ps(d.sx + 16 * i))));
  }
}

// NV = number of 64-token vectors in the tile (1 or 2); out[] gets 64*NV floats in gather order.
template <int NV>
static void row_i8_gather(const uint8_t* xt, int Mp, const uint16_t* qc, const int32_t* qw, int nq, const Dequant& d,
                          float* out) {
  __m512i acc[4 * NV];
  for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_setzero_si512();
  for (int q = 0; q < nq; ++q) {
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
  dequant_store<4 * NV>(acc, d, out);
}

template <int NV>
static void row_i8_blocks(const uint8_t* xp, int Mp, const uint16_t* qc, const int32_t* qw, int nq, const Dequant& d,
                          float* out) {
  __m512i acc[4 * NV];
  for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_setzero_si512();
  for (int q = 0; q < nq; ++q) {
    const uint8_t* r = xp + (size_t)(qc[4 * q] >> 2) * Mp * 4;
    const __m512i w = _mm512_set1_epi32(qw[q]);
    for (int i = 0; i < 4 * NV; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_loadu_si512(r + 64 * i), w);
  }
  dequant_store<4 * NV>(acc, d, out);
}
#endif

// Portable path (also the reference the VNNI path is tested against): natural token order.
static void row_i8_portable(const uint8_t* x, int Mp, int layout, const uint16_t* qc, const int32_t* qw, int nq,
                            int n_pos, const Dequant& d, float* out) {
  int32_t acc[kTokenTile] = {};
  for (int q = 0; q < nq; ++q) {
    const int8_t* w = (const int8_t*)&qw[q];
    for (int j = 0; j < 4; ++j) {
      if (w[j] == 0) continue;
      const uint8_t* r = layout == kBlocks ? x + (size_t)(qc[4 * q] >> 2) * Mp * 4 + j : x + (size_t)qc[4 * q + j] * Mp;
      const int step = layout == kBlocks ? 4 : 1;
      for (int p = 0; p < n_pos; ++p) acc[p] += w[j] * (int)r[step * p];
    }
  }
  for (int p = 0; p < n_pos; ++p) out[p] = (float)(acc[p] - d.zero) * d.scale * d.sx[p];
}

}  // namespace pofa

using namespace pofa;

extern "C" int pofa_has_vnni() {
#ifdef POFA_VNNI
  return 1;
#else
  return 0;
#endif
}

extern "C" void pofa_spmm_i8(const float* x, int M, int K, int N, const int32_t* quad_ptr, const uint16_t* quad_cols,
                             const int32_t* quad_w, const float* w_scale, const int32_t* w_sum, const float* bias,
                             int act, int layout, const float* residual, const float* ln_gamma, const float* ln_beta,
                             float ln_eps, float* y, int threads) {
  const int Mp = round_up(M, 64);
  const int K4 = (K + 3) / 4;
#ifdef POFA_VNNI
  const bool permuted = layout == kGather;
#else
  const bool permuted = false;
#endif
  uint8_t* xq = (uint8_t*)scratch(0).get((size_t)(layout == kBlocks ? 4 * K4 : K) * Mp);
  // per-token scale and inverse, then the scales again in tile position order
  float* sx = (float*)scratch(1).get(3 * (size_t)Mp * sizeof(float));
  float* inv = sx + Mp;
  float* sx_pos = inv + Mp;
  int token_of[kTokenTile];  // shared with the team (a thread_local would not be)
  for (int p = 0; p < kTokenTile; ++p) token_of[p] = permuted ? gather_token(p & 63) | (p & 64) : p;
#pragma omp parallel num_threads(threads)
  {
    token_scales(x, M, K, sx, inv);
#pragma omp for schedule(static)
    for (int p = 0; p < Mp; ++p) {
      const int t = (p & ~(kTokenTile - 1)) + token_of[p & (kTokenTile - 1)];
      sx_pos[p] = t < M ? sx[t] : 0.0f;
    }
    if (layout == kBlocks) pack_u8x4(x, M, K, Mp, inv, xq); else pack_u8(x, M, K, Mp, inv, xq);
    int b_lo, b_hi;
    balanced_range(quad_ptr, N, omp_get_thread_num(), omp_get_num_threads(), &b_lo, &b_hi);
    alignas(64) float tile[kRowBlock * kTokenTile] = {};
    for (int b = b_lo; b < b_hi; ++b) {
      const int o0 = b * kRowBlock, n_rows = std::min(kRowBlock, N - o0);
      for (int t0 = 0; t0 < M; t0 += kTokenTile) {
        const int n_tok = std::min(kTokenTile, M - t0);
        const int n_pos = round_up(n_tok, 64);
        const uint8_t* xs = layout == kBlocks ? xq + (size_t)t0 * 4 : xq + t0;
        for (int r = 0; r < n_rows; ++r) {
          const int o = o0 + r, q0 = quad_ptr[o], nq = quad_ptr[o + 1] - q0;
          const Dequant d{128 * w_sum[o], w_scale[o], sx_pos + t0};
          float* out = tile + r * kTokenTile;
#ifdef POFA_VNNI
          if (layout == kBlocks)
            (n_pos > 64 ? row_i8_blocks<2> : row_i8_blocks<1>)(xs, Mp, quad_cols + 4 * q0, quad_w + q0, nq, d, out);
          else
            (n_pos > 64 ? row_i8_gather<2> : row_i8_gather<1>)(xs, Mp, quad_cols + 4 * q0, quad_w + q0, nq, d, out);
#else
          row_i8_portable(xs, Mp, layout, quad_cols + 4 * q0, quad_w + q0, nq, n_pos, d, out);
#endif
        }
        store_tile(tile, n_rows, n_pos, token_of, n_tok, bias ? bias + o0 : nullptr, act, y + (size_t)t0 * N + o0, N);
      }
    }
    if (residual) {
#pragma omp barrier
      add_layer_norm(y, M, N, AddLayerNorm{residual, ln_gamma, ln_beta, ln_eps});
    }
  }
}
