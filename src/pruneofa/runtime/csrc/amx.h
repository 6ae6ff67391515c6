// AMX int8 tiles for the dense int8 layout (Intel Sapphire Rapids and later: `amx_int8`, `amx_tile`).
//
// The dense layout already is what the tiles want, so no repacking: a weight row o is K int8
// bytes in order (qw[o * K4 ..], 4 per int32), and the activations xp[k/4][t] hold 4 bytes of
// features 4(k/4).. per token, which is AMX's "VNNI" operand layout. One TDPBSUD multiplies
// A = 16 weight rows x 64 features (signed) by B = 16 feature quads x 16 tokens (unsigned, x + 128)
// into C = 16 rows x 16 tokens of int32: the very integer sums the VNNI kernel forms, so the
// dequantised outputs are bit-identical (tests/runtime/test_kernels.py).
//
// Tiles are used only where three things hold, checked at run time: the build targets AMX, Linux
// grants the process the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, kernel >= 5.16), and the switch
// is on (PRUNEOFA_AMX=0 or pofa_set_amx(0) turn it off, e.g. to time the VNNI kernel beside it).
// A team that uses tiles configures them on each thread for the whole layer and releases them at the
// end, so code between our calls (oneDNN uses AMX too) never sees our configuration.
#pragma once
#include <atomic>
#include "common.h"

#if defined(POFA_VNNI) && defined(__AMX_INT8__) && defined(__AMX_TILE__)
#define POFA_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace pofa {

// How many thread-layer sessions have used tiles since the library loaded: `pruneofa bench` reads it around
// a call to say whether tiles ran (a one-token layer, say, takes the dot-product path instead).
inline std::atomic<long long>& tile_sessions() {
  static std::atomic<long long> count{0};
  return count;
}

#ifdef POFA_AMX
constexpr int kAmxK4 = 16;  // feature quads per tile step (64 features: one row of A)

inline bool amx_granted() {
  static const bool granted = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // <asm/prctl.h>, <asm/fpu/xstate.h>
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

inline std::atomic<int>& amx_switch() {
  static std::atomic<int> on{[] {
    const char* env = std::getenv("PRUNEOFA_AMX");
    return env && env[0] == '0' ? 0 : 1;
  }()};
  return on;
}

inline bool amx_on() { return amx_switch().load(std::memory_order_relaxed) && amx_granted(); }

// A dense int8 layer of K input features runs on tiles (whole 64-feature steps only).
inline bool amx_usable(int K) { return amx_on() && K % (4 * kAmxK4) == 0; }

// Tiles 0-3: C (16 rows x 16 tokens int32, four token groups); 4: A (weights); 5-7: B (activations).
struct TileSession {
  explicit TileSession(bool use) : active(use) {
    if (!active) return;
    tile_sessions().fetch_add(1, std::memory_order_relaxed);
    struct alignas(64) {
      uint8_t palette = 1, start_row = 0, reserved[14] = {};
      uint16_t colsb[16] = {};
      uint8_t rows[16] = {};
    } cfg;
    for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
  }
  ~TileSession() {
    if (active) _tile_release();
  }
  TileSession(const TileSession&) = delete;
  TileSession& operator=(const TileSession&) = delete;
  const bool active;
};

// G (2 or 4) groups of 16 tokens: C tiles 0..G-1 = sum over K of A x B.
template <int G>
inline void amx_accumulate(const uint8_t* w, size_t w_stride, int K4, const uint8_t* x, size_t x_stride) {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (G == 4) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int kb = 0; kb < K4; kb += kAmxK4, w += 4 * kAmxK4, x += kAmxK4 * x_stride) {
    _tile_loadd(4, w, w_stride);
    _tile_loadd(5, x, x_stride);
    _tile_loadd(6, x + 64, x_stride);
    _tile_dpbsud(0, 4, 5);
    _tile_dpbsud(1, 4, 6);
    if constexpr (G == 4) {
      _tile_loadd(7, x + 128, x_stride);
      _tile_loadd(5, x + 192, x_stride);
      _tile_dpbsud(2, 4, 7);
      _tile_dpbsud(3, 4, 5);
    }
  }
}

#else
inline bool amx_granted() { return false; }
inline bool amx_on() { return false; }
inline bool amx_usable(int) { return false; }
struct TileSession {
  explicit TileSession(bool) {}
  const bool active = false;
};
#endif

}  // namespace pofa
