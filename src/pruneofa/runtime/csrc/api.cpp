// The C entry points (ctypes): one Linear layer per call, or a whole encoder per call.
#include "attention_i8.h"
#include "gemv.h"

using namespace pofa;

// The kernel set this build runs: "avx512-vnni", "avx512", "avx2" or "portable" (common.h).
extern "C" const char* pofa_kernel_isa() { return kKernelIsa; }

// The longest sequence pofa_encoder takes (attention.h); callers ask rather than keep a copy.
extern "C" int pofa_max_seq() { return kMaxSeq; }

// AMX tiles for the dense int8 layout: 1 if this build has them, the OS grants them and the switch is on.
extern "C" int pofa_amx() { return amx_on() ? 1 : 0; }

// Turn the AMX tiles on or off for later calls (for timing the VNNI kernel beside them); returns pofa_amx().
extern "C" int pofa_set_amx(int on) {
#ifdef POFA_AMX
  amx_switch().store(on ? 1 : 0);
#endif
  (void)on;
  return pofa_amx();
}

// Thread-layer sessions that ran on AMX tiles since the library loaded (read it around a call).
extern "C" long long pofa_tile_sessions() { return tile_sessions().load(); }

extern "C" int pofa_has_vnni() {
#ifdef POFA_VNNI
  return 1;
#else
  return 0;
#endif
}

// x: token-major [M][K] (x_fm = 0) or feature-major [K][ld_x] (x_fm = 1). y: token-major [M][N]
// (y_fm = 0) or feature-major [N][ld_y] (y_fm = 1; fp32: all ld_y columns computed, padding included;
// int8: the first round_up(M, 16), the rest left as they were).
// residual (y's layout) non-null: y = LayerNorm(y + residual) with ln_gamma, ln_beta, ln_eps; ln_sum_out
// non-null also gets y + residual (it may be the residual itself). act: Activation (common.h).
// A few token-major tokens (a decoder's step) take the dot-product path (gemv.h).
extern "C" void pofa_spmm_f32(const float* x, int x_fm, int ld_x, int M, int K, int N, const int32_t* row_ptr,
                              const uint16_t* cols, const float* vals, const float* bias, int act,
                              const float* residual, const float* ln_gamma, const float* ln_beta, float ln_eps,
                              float* ln_sum_out, float* y, int y_fm, int ld_y, int threads) {
  const CsrView w{K, N, row_ptr, cols, vals, bias};
  AddLayerNorm post{residual, ln_gamma, ln_beta, ln_eps, ln_sum_out};
  if (!x_fm && !y_fm && gemv_serves(M, false)) {
#pragma omp parallel num_threads(threads)
    {
      gemv_f32_team(w, act, x, M, y);
      if (residual) post_op(Output{y, 0, 0, N}, M, M, post, 0, 0);
    }
    return;
  }
  const int Mc = y_fm ? ld_y : M;
  float* xt = x_fm ? nullptr : (float*)scratch(0).get((size_t)K * round_up(Mc, 16) * sizeof(float));
  if (residual && y_fm) post.stats = (float*)scratch(2).get(layer_norm_stats_floats(N, ld_y) * sizeof(float));
#pragma omp parallel num_threads(threads)
  spmm_f32_team(w, act, x, x_fm, ld_x, M, xt, Output{y, y_fm, ld_y, N}, post);
}

extern "C" void pofa_spmm_i8(const float* x, int x_fm, int ld_x, int M, int K, int N, const int32_t* quad_ptr,
                             const uint16_t* quad_cols, const int32_t* quad_w, const float* w_scale,
                             const int32_t* w_sum, const float* bias, int act, int layout, const float* residual,
                             const float* ln_gamma, const float* ln_beta, float ln_eps, float* ln_sum_out, float* y, int y_fm,
                             int ld_y, int threads) {
  const QuadView w{K, N, quad_ptr, quad_cols, quad_w, w_scale, w_sum, layout, bias};
  AddLayerNorm post{residual, ln_gamma, ln_beta, ln_eps, ln_sum_out};
  if (!x_fm && !y_fm && gemv_serves(M, layout == kDense)) {
    uint8_t* xq = (uint8_t*)scratch(0).get(gemv_i8_scratch_bytes(K, M) * threads);
#pragma omp parallel num_threads(threads)
    {
      gemv_i8_team(w, act, x, M, xq, y);
      if (residual) post_op(Output{y, 0, 0, N}, M, M, post, 0, 0);
    }
    return;
  }
  const int Mc = y_fm ? ld_y : M;
  uint8_t* xq = (uint8_t*)scratch(0).get(i8_scratch_bytes(K, Mc));
  float* sx = (float*)scratch(1).get(2 * (size_t)round_up(Mc, 64) * sizeof(float));
  if (residual && y_fm) post.stats = (float*)scratch(2).get(layer_norm_stats_floats(N, ld_y) * sizeof(float));
#pragma omp parallel num_threads(threads)
  spmm_i8_team(w, act, x, x_fm, ld_x, M, xq, sx, Output{y, y_fm, ld_y, N}, post);
}

// BERT's embeddings, token-major y[B*S][H]: LayerNorm((word[id] + type[type id]) + position[s]) per token, the
// additions in BertEmbeddings' order (types null: type 0). Returns 0, or 1 for an id outside [0, vocab), 2 for a
// type id outside [0, n_types), 3 for a sequence longer than the position table (nothing written then).
extern "C" int pofa_bert_embeddings(const float* word, int vocab, const float* type, int n_types, const float* position,
                                    int n_positions, const float* gamma, const float* beta, float eps,
                                    const int64_t* ids, const int64_t* types, int B, int S, int H, float* y,
                                    int threads) {
  const int M = B * S;
  if (S > n_positions) return 3;
  for (int t = 0; t < M; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) return 1;
    if (types && (types[t] < 0 || types[t] >= n_types)) return 2;
  }
  const AddLayerNorm ln{nullptr, gamma, beta, eps};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < M; ++t) {
    float* row = y + (size_t)t * H;
    const float* w = word + (size_t)ids[t] * H;
    const float* k = type + (size_t)(types ? types[t] : 0) * H;
#pragma omp simd
    for (int i = 0; i < H; ++i) row[i] = w[i] + k[i];
    add_layer_norm_row(row, position + (size_t)(t % S) * H, H, ln, nullptr);
  }
  return 0;
}

// ---- whole encoder ----

struct MatrixDesc {  // one projection: fp32 CSR (kind 0) or int8 quads (kind 1, any Layout, dense included)
  int kind, n_in, n_out;
  const int32_t* ptr;     // row_ptr / quad_ptr
  const uint16_t* cols;
  const void* vals;       // float values / packed int8 quads
  const float* w_scale;   // int8 only
  const int32_t* w_sum;   // int8 only
  int layout;             // int8 only
  const float* bias;
  int act;
};

struct LayerDesc {  // one BERT layer: h = LN2(FFN(h1) + h1), h1 = LN1(O(attention(QKV(h))) + h)
  MatrixDesc qkv, attn_out, ffn_in, ffn_out;
  const float *ln1_gamma, *ln1_beta;
  float ln1_eps;
  const float *ln2_gamma, *ln2_beta;
  float ln2_eps;
  int head_dim;
  float scale;
  int attention_int8;  // 1: int8 attention (VNNI; needs head_dim % 4 == 0), 0: fp32
};

namespace {

struct Workspace {
  uint8_t* xq;
  float* sx;
};

void matmul(const MatrixDesc& m, const float* x, int x_fm, int ld_x, int M, Workspace& ws, const Output& out,
            const AddLayerNorm& post, const float* x_absmax) {
  if (m.kind == 0)
    spmm_f32_team(CsrView{m.n_in, m.n_out, m.ptr, m.cols, (const float*)m.vals, m.bias}, m.act, x, x_fm, ld_x, M,
                  nullptr, out, post);
  else
    spmm_i8_team(QuadView{m.n_in, m.n_out, m.ptr, m.cols, (const int32_t*)m.vals, m.w_scale, m.w_sum, m.layout, m.bias},
                 m.act, x, x_fm, ld_x, M, ws.xq, ws.sx, out, post, x_absmax);
}

}  // namespace

// x: token-major input [B*S][H]; y: token-major output [B*S][H] (may alias x). Inside, activations are
// feature-major [features][ld], ld = round_up(B*S, 64). mask: additive, kind 0 none, 1 per key
// [B][S], 2 full key-major [B][S_key][S_query]. A layer's attention width (heads x head_dim, a third of
// its QKV outputs) may be below H: a compacted model with heads removed.
extern "C" void pofa_encoder(const LayerDesc* layers, int n_layers, const float* x, float* y, int B, int S, int H,
                             const float* mask, int mask_kind, int threads) {
  const int M = B * S, ld = round_up(M, 64);
  int widest = 0, widest_attn = 0;
  for (int l = 0; l < n_layers; ++l) {
    widest = std::max(widest, layers[l].ffn_in.n_out);
    widest_attn = std::max(widest_attn, layers[l].qkv.n_out / 3);
  }
  const size_t n_act = (size_t)ld * (H + 3 * widest_attn + widest_attn + H + widest);  // h, qkv, ctx, h1, f
  const size_t xq_bytes = i8_scratch_bytes(std::max(widest, 3 * std::max(H, widest_attn)), ld);
  size_t attn_per_thread = attention_f32_scratch_floats(S);
#ifdef POFA_VNNI
  for (int l = 0; l < n_layers; ++l)
    if (layers[l].attention_int8)
      attn_per_thread = std::max(attn_per_thread, attention_i8_scratch_floats(S, layers[l].head_dim));
#endif
  const size_t sx_floats = 2 * (size_t)ld, attn_floats = (size_t)threads * attn_per_thread;
  const size_t absmax_floats = 3 * (size_t)threads * ld;  // running maxima of h, h1, f (int8 only)
  const size_t ln_floats = layer_norm_stats_floats(H, ld);
  float* base = (float*)scratch(2).get((n_act + sx_floats + attn_floats + absmax_floats + ln_floats) * sizeof(float) +
                                       xq_bytes + 64);
  float *h = base, *qkv = h + (size_t)H * ld, *ctx = qkv + (size_t)3 * widest_attn * ld;
  float* h1 = ctx + (size_t)widest_attn * ld;
  float* f = h1 + (size_t)H * ld;
  Workspace ws{nullptr, f + (size_t)widest * ld};
  float* attn = ws.sx + sx_floats;
  float* am_h = attn + attn_floats;
  float *am_h1 = am_h + (size_t)threads * ld, *am_f = am_h1 + (size_t)threads * ld;
  float* ln_stats = am_f + (size_t)threads * ld;
  ws.xq = (uint8_t*)(((uintptr_t)(ln_stats + ln_floats) + 63) & ~(uintptr_t)63);  // 64-byte aligned rows
  const Mask masks{mask, mask ? mask_kind : 0};
#pragma omp parallel num_threads(threads)
  {
    pack_f32(x, M, H, ld, h);  // to feature-major, padding tokens zero
    for (int l = 0; l < n_layers; ++l) {
      const LayerDesc& L = layers[l];
      const AddLayerNorm none{nullptr, nullptr, nullptr, 0.0f};
      // int8 layers pass the running maxima of h1, f and h on to their consumers (fp32: no use)
      const bool track = L.ffn_in.kind == 1 && L.ffn_out.kind == 1 && L.qkv.kind == 1;
      const bool h_tracked = track && l > 0 && layers[l - 1].ffn_out.kind == 1 && layers[l - 1].qkv.kind == 1 &&
                             layers[l - 1].ffn_in.kind == 1;
      const int A = L.qkv.n_out / 3;  // attention width
      matmul(L.qkv, h, 1, ld, M, ws, Output{qkv, 1, ld, L.qkv.n_out}, none, h_tracked ? am_h : nullptr);
      if (L.attention_int8)
        attention_i8_team(qkv, ctx, ld, B, S, A, L.head_dim, L.scale, masks, attn);
      else
        attention_f32_team(qkv, ctx, ld, B, S, A, L.head_dim, L.scale, masks, attn);
      matmul(L.attn_out, ctx, 1, ld, M, ws, Output{h1, 1, ld, H, track ? am_h1 : nullptr},
             AddLayerNorm{h, L.ln1_gamma, L.ln1_beta, L.ln1_eps, nullptr, ln_stats}, nullptr);
      matmul(L.ffn_in, h1, 1, ld, M, ws, Output{f, 1, ld, L.ffn_in.n_out, track ? am_f : nullptr}, none,
             track ? am_h1 : nullptr);
      matmul(L.ffn_out, f, 1, ld, M, ws, Output{h, 1, ld, H, track ? am_h : nullptr},
             AddLayerNorm{h1, L.ln2_gamma, L.ln2_beta, L.ln2_eps, nullptr, ln_stats}, track ? am_f : nullptr);
    }
    unpack_f32(h, H, ld, M, y);
  }
}
