// amx_emu.h: the AMX tile intrinsics the deform kernel uses (_tile_loadconfig, _tile_loadd, _tile_stored,
// _tile_zero, _tile_dpbusd, _tile_release) on plain per-thread memory, after the Intel SDM's definitions
// (palette 1: 8 tiles of at most 16 rows x 64 bytes). tests/isa_emu force-includes it, after
// simde_avx512.h, into plugins/deform/deform_cpu_amx.cpp. What hardware would fault on (an unconfigured
// or oversized tile, a reserved byte set, tdpbusd shapes that do not chain, a tile used after
// _tile_release) aborts the process with a line naming it, so the child pytest fails.
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>  // GCC's own _tile_* macros first: the definitions below replace them

namespace gt_amx_emu {

constexpr int kTiles = 8, kMaxRows = 16, kMaxColsb = 64;

struct State {
    bool configured = false;
    uint16_t colsb[kTiles] = {0};
    uint8_t rows[kTiles] = {0};
    alignas(64) uint8_t data[kTiles][kMaxRows][kMaxColsb];
};

inline State& state()
{
    static thread_local State s;
    return s;
}

[[noreturn]] inline void fail(const char* what, int tile = -1)
{
    fprintf(stderr, "AMX emulation: %s (tile %d)\n", what, tile);
    abort();
}

inline void loadconfig(const void* cfg)
{
    const uint8_t* b = static_cast<const uint8_t*>(cfg);
    if (b[0] != 1) fail("ldtilecfg: palette_id must be 1");
    if (b[1] != 0) fail("ldtilecfg: start_row must be 0");
    for (int i = 2; i < 16; ++i)
        if (b[i] != 0) fail("ldtilecfg: reserved bytes 2-15 must be 0");
    for (int i = 16 + 2 * kTiles; i < 48; ++i)
        if (b[i] != 0) fail("ldtilecfg: colsb of tiles 8-15 must be 0");
    for (int i = 48 + kTiles; i < 64; ++i)
        if (b[i] != 0) fail("ldtilecfg: rows of tiles 8-15 must be 0");
    State& s = state();
    for (int t = 0; t < kTiles; ++t) {
        memcpy(&s.colsb[t], b + 16 + 2 * t, 2);
        s.rows[t] = b[48 + t];
        if (s.rows[t] > kMaxRows || s.colsb[t] > kMaxColsb) fail("ldtilecfg: tile larger than 16 x 64 bytes", t);
        if ((s.rows[t] == 0) != (s.colsb[t] == 0)) fail("ldtilecfg: rows and colsb must both be 0 or both set", t);
    }
    s.configured = true;
    memset(s.data, 0, sizeof s.data);
}

inline State& use(int t)
{
    State& s = state();
    if (!s.configured) fail("tile used without a tile configuration (or after tilerelease)", t);
    if (t < 0 || t >= kTiles || s.rows[t] == 0) fail("tile not configured", t);
    return s;
}

inline void loadd(int t, const void* base, long stride)
{
    State& s = use(t);
    memset(s.data[t], 0, sizeof s.data[t]);
    for (int r = 0; r < s.rows[t]; ++r) memcpy(s.data[t][r], static_cast<const uint8_t*>(base) + r * stride, s.colsb[t]);
}

inline void stored(int t, void* base, long stride)
{
    State& s = use(t);
    for (int r = 0; r < s.rows[t]; ++r) memcpy(static_cast<uint8_t*>(base) + r * stride, s.data[t][r], s.colsb[t]);
}

inline void zero(int t) { memset(use(t).data[t], 0, sizeof state().data[t]); }

// C[m][n] += sum_{k, i < 4} u8 A[m][4k + i] * s8 B[k][4n + i], int32 wrapping
inline void dpbusd(int c, int a, int b)
{
    State& s = use(c);
    use(a);
    use(b);
    if (s.rows[a] != s.rows[c] || s.colsb[a] / 4 != s.rows[b] || s.colsb[b] != s.colsb[c] || s.colsb[a] % 4 != 0 ||
        s.colsb[c] % 4 != 0)
        fail("tdpbusd: tile shapes do not chain (rows A = rows C, colsb A / 4 = rows B, colsb B = colsb C)", c);
    for (int m = 0; m < s.rows[c]; ++m)
        for (int n = 0; n < s.colsb[c] / 4; ++n) {
            uint32_t acc;
            memcpy(&acc, s.data[c][m] + 4 * n, 4);
            for (int k = 0; k < s.colsb[a] / 4; ++k)
                for (int i = 0; i < 4; ++i)
                    acc += (uint32_t)((int32_t)s.data[a][m][4 * k + i] * (int32_t)(int8_t)s.data[b][k][4 * n + i]);
            memcpy(s.data[c][m] + 4 * n, &acc, 4);
        }
}

inline void release() { state().configured = false; }

}  // namespace gt_amx_emu

#undef _tile_loadconfig
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#undef _tile_release
#define _tile_loadconfig(cfg) gt_amx_emu::loadconfig(cfg)
#define _tile_loadd(t, base, stride) gt_amx_emu::loadd((t), (base), (long)(stride))
#define _tile_stored(t, base, stride) gt_amx_emu::stored((t), (base), (long)(stride))
#define _tile_zero(t) gt_amx_emu::zero(t)
#define _tile_dpbusd(c, a, b) gt_amx_emu::dpbusd((c), (a), (b))
#define _tile_release() gt_amx_emu::release()

// deform_cpu_amx.cpp compiles its kernels only under these (set by -mamx-tile -mamx-int8)
#define __AMX_TILE__ 1
#define __AMX_INT8__ 1
