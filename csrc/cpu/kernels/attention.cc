// rotary and attention. Compiled once per ISA (see csrc/cpu/kernels.h for the contracts).
//
// attention works one query row at a time against key tiles of KT keys, with the online softmax
// (ref: Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; FlashAttention's
// outer loop): keep the running max m, the running sum l and the unnormalized output acc (D);
// for each tile of scores s_j: m' = max(m, max_j s_j); acc = acc * e^(m - m') + sum_j e^(s_j - m') v_j;
// l = l * e^(m - m') + sum_j e^(s_j - m'); at the end out = acc / l. So the (T, S) score matrix is
// never materialized. Tasks are (batch, head, block of query rows). Two paths, same arithmetic:
//   attend_row    one row at a time (decode: T == 1), tiles of ROW_KT keys: scores by dot products,
//                 ROW_KU keys at a time, the keys prefetched PF_KEYS ahead and the tile's values
//                 meanwhile (the decode step streams the cache from memory); the values then
//                 accumulated with the output held in registers (ROW_DV vectors) across the tile.
//   attend_block  TQ rows at a time (prefill, encoders): the key tile is transposed once into K^T
//                 (D x KT, float32) and shared by the block; scores are register tiles of RB rows x
//                 2 vectors of keys (per d: 2 loads of K^T, RB broadcasts of q, 2*RB FMAs); the values
//                 are accumulated in register tiles of RB rows x DV vectors of the output (per key:
//                 DV loads of v, RB broadcasts of p, RB*DV FMAs). A task holds ~TQ*(D + KT) + D*KT floats.
// K and V may be stored in float16/bfloat16 (the decoder's KV cache); they are widened on load.
#include <algorithm>
#include <cfloat>
#include <vector>

#include "common/threadpool.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"
#include "cpu/vec_math.h"

namespace pyclvp::cpu {
namespace {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;
using V = Vec<ISA>;
constexpr int W = V::W;
constexpr int SV = 3;           // attend_block: key vectors of a score tile
constexpr int64_t KT = 96;      // keys per tile (whole score tiles: 96 = 4 x 24 (AVX2) = 2 x 48 (AVX-512))
constexpr int64_t TQ = 64;      // query rows per task
constexpr int64_t BLOCK_MIN = 4;  // tasks with at least this many rows take attend_block
constexpr int RB = 4;           // attend_block: rows of a register tile
constexpr int DV = 3;           // attend_block: output vectors of a value tile
constexpr int64_t ROW_KT = 64;  // attend_row: keys per tile (its values, prefetched meanwhile, stay in L1)
constexpr int ROW_KU = 4;       // attend_row: keys scored together
constexpr int ROW_DV = 8;       // attend_row: output vectors held in registers across a tile's values (even)
constexpr int64_t PF_KEYS = 8;  // attend_row: keys prefetched ahead

inline int lanes(int64_t n, int64_t i) { return static_cast<int>(std::min<int64_t>(W, n - i)); }

// A row whose visible keys were all dropped (its running max stayed at finfo.min): the reference's causal
// mask gives the hidden keys finfo.min as well, so its softmax is uniform over all S keys. Adds the hidden
// keys' values, v[s] for s in [s_end, S), to acc (D,) and returns how many (for the row's sum).
template <class KV>
int64_t add_hidden_keys(float* acc, const KV* v, int64_t v_ss, int64_t s_end, int64_t S, int64_t D) {
  for (int64_t s = s_end; s < S; ++s)
    for (int64_t d = 0; d < D; d += W)
      store_n(acc + d, load_n<V>(acc + d, lanes(D, d)) + load_n<V>(v + s * v_ss + d, lanes(D, d)), lanes(D, d));
  return std::max<int64_t>(0, S - s_end);
}

// Asks for the cache lines of one key or value row (D elements) ahead of use. The decode step reads
// each (batch, head)'s keys and values once, from memory: without software prefetch the row loop
// waited on one or two lines at a time (3.5-6 GB/s measured on 16 x 16 heads x 244 keys).
template <class KV>
inline void prefetch_row(const KV* row, int64_t D) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < D * static_cast<int64_t>(sizeof(KV)); b += 64) __builtin_prefetch(p + b);
}

// sc[u] = qs . k_u for ROW_KU keys at once (independent accumulators: the dot products overlap)
template <class KV>
void row_dots(const float* qs, const KV* const* k, int64_t D, float* sc) {
  V acc[ROW_KU][2];
  for (int u = 0; u < ROW_KU; ++u) acc[u][0] = acc[u][1] = V::zero();
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    const V q0 = V::load(qs + d), q1 = V::load(qs + d + W);
    for (int u = 0; u < ROW_KU; ++u) {
      V k0, k1;
      V::load2(k[u] + d, k0, k1);
      acc[u][0] = V::fma(q0, k0, acc[u][0]);
      acc[u][1] = V::fma(q1, k1, acc[u][1]);
    }
  }
  for (; d < D; d += W) {  // the rest, one vector at a time (the last one ragged: zero lanes add nothing)
    const V q0 = load_n<V>(qs + d, lanes(D, d));
    for (int u = 0; u < ROW_KU; ++u) acc[u][0] = V::fma(q0, load_n<V>(k[u] + d, lanes(D, d)), acc[u][0]);
  }
  for (int u = 0; u < ROW_KU; ++u) sc[u] = (acc[u][0] + acc[u][1]).reduce_add();
}

// acc[d0 : d0 + ROW_DV*W] = acc * corr + sum_j p[j] v[j][d0 : ...], j < n, in registers across the keys
template <class KV>
void row_values(float* acc, float corr, const float* p, const KV* v, int64_t v_ss, int64_t n, int64_t D, int64_t d0) {
  int m[ROW_DV];  // valid lanes of each output vector (0: past D)
  for (int c = 0; c < ROW_DV; ++c) m[c] = d0 + c * W < D ? lanes(D, d0 + c * W) : 0;
  const V cv = V::set1(corr);
  V o[ROW_DV];
  for (int c = 0; c < ROW_DV; ++c) o[c] = m[c] ? load_n<V>(acc + d0 + c * W, m[c]) * cv : V::zero();
  if (m[ROW_DV - 1] == W) {  // a whole chunk (every d0 chunk but a ragged head dim's last)
    for (int64_t j = 0; j < n; ++j) {
      const V pj = V::set1(p[j]);
      const KV* vr = v + j * v_ss + d0;
      for (int c = 0; c < ROW_DV; c += 2) {
        V v0, v1;
        V::load2(vr + c * W, v0, v1);
        o[c] = V::fma(pj, v0, o[c]);
        o[c + 1] = V::fma(pj, v1, o[c + 1]);
      }
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const V pj = V::set1(p[j]);
      const KV* vr = v + j * v_ss + d0;
      for (int c = 0; c < ROW_DV; ++c)
        if (m[c]) o[c] = V::fma(pj, load_n<V>(vr + c * W, m[c]), o[c]);
    }
  }
  for (int c = 0; c < ROW_DV; ++c)
    if (m[c]) store_n(acc + d0 + c * W, o[c], m[c]);
}

// One query row: out[0:D] = softmax(qs . k_s + mask_s over visible s) @ v   (qs is q * scale)
// Tiles of ROW_KT keys: their scores (ROW_KU keys at a time, prefetching PF_KEYS keys ahead and the
// tile's values), the online softmax update, then the values with the output in registers.
template <class KV>
void attend_row(const AttentionArgs& a, const float* qs, const KV* k, const KV* v, const float* mask,
                const uint8_t* key_mask, int64_t s_end, float* out, float* acc, float* sc) {
  const int64_t D = a.D;
  std::fill(acc, acc + D, 0.0f);
  float m = -FLT_MAX, l = 0.0f;
  for (int64_t s = 0; s < std::min(PF_KEYS, s_end); ++s) prefetch_row(k + s * a.k_ss, D);
  for (int64_t s0 = 0; s0 < s_end; s0 += ROW_KT) {
    const int64_t n = std::min(ROW_KT, s_end - s0);
    for (int64_t j = 0; j < n; j += ROW_KU) {
      const KV* kr[ROW_KU];  // keys past the tile repeat its last (their scores are dropped)
      for (int u = 0; u < ROW_KU; ++u) {
        const int64_t s = s0 + std::min<int64_t>(j + u, n - 1);
        kr[u] = k + s * a.k_ss;
        if (j + u < n) {
          if (s + PF_KEYS < s_end) prefetch_row(k + (s + PF_KEYS) * a.k_ss, D);
          prefetch_row(v + s * a.v_ss, D);
        }
      }
      float d[ROW_KU];
      row_dots(qs, kr, D, d);
      for (int u = 0; u < ROW_KU && j + u < n; ++u) sc[j + u] = d[u];
    }
    float tile_max = -FLT_MAX;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t s = s0 + j;
      if (key_mask && !key_mask[s]) sc[j] = -FLT_MAX;  // as the reference's additive finfo(float32).min
      else if (mask) sc[j] += mask[s];
      tile_max = std::max(tile_max, sc[j]);
    }
    const float m_new = std::max(m, tile_max);
    const V mv = V::set1(m_new);
    const float corr = vexp(V::set1(m - m_new)).reduce_max();  // e^(m - m'), exactly 1 when m == m'
    float tile_sum = 0.0f;
    for (int64_t j = 0; j < n; j += W) {
      const int c = lanes(n, j);
      store_n(sc + j, vexp(load_n<V>(sc + j, c) - mv), c);
    }
    for (int64_t j = 0; j < n; ++j) tile_sum += sc[j];
    l = l * corr + tile_sum;
    for (int64_t d0 = 0; d0 < D; d0 += ROW_DV * W) row_values(acc, corr, sc, v + s0 * a.v_ss, a.v_ss, n, D, d0);
    m = m_new;
  }
  if (m == -FLT_MAX) l += add_hidden_keys(acc, v, a.v_ss, s_end, a.S, D);
  const V inv = V::set1(l > 0.0f ? 1.0f / l : 0.0f);  // no key at all: zeros
  for (int64_t d = 0; d < D; d += W) store_n(out + d, load_n<V>(acc + d, lanes(D, d)) * inv, lanes(D, d));
}

// ---------------------------------------------------------------------------------------------
// attend_block: rows [t0, t1) of one (batch, head)

struct BlockBufs {
  std::vector<float> qs, kt, p, acc, m, l;  // (TQ, D), (D, KT), (TQ, KT), (TQ, D), (TQ,), (TQ,)
};

// kt[d][j] = k[s0 + j][d] widened, for j < n (zeros up to a whole score tile)
template <class KV>
void pack_kt(float* kt, const KV* k, int64_t k_ss, int64_t s0, int64_t n, int64_t D) {
  float row[W];
  const int64_t nr = (n + SV * W - 1) / (SV * W) * (SV * W);  // whole score tiles
  for (int64_t j = 0; j < nr; ++j) {
    if (j >= n) {
      for (int64_t d = 0; d < D; ++d) kt[d * KT + j] = 0.0f;
      continue;
    }
    const KV* src = k + (s0 + j) * k_ss;
    for (int64_t d = 0; d < D; d += W) {
      const int m = lanes(D, d);
      load_n<V>(src + d, m).store(row);
      for (int i = 0; i < m; ++i) kt[(d + i) * KT + j] = row[i];
    }
  }
}

// p[r][j0:j0+SV*W] = qs[r] . kt[:, j0:j0+SV*W] for the RB rows r0.. (rows past t1 repeat the last, unused)
void block_scores(const float* qs, const float* kt, float* p, int64_t D, int64_t r0, int64_t rows, int64_t j0) {
  V acc[RB][SV];
  const float* q[RB];
  for (int r = 0; r < RB; ++r) {
    q[r] = qs + std::min<int64_t>(r0 + r, rows - 1) * D;
    for (int c = 0; c < SV; ++c) acc[r][c] = V::zero();
  }
  for (int64_t d = 0; d < D; ++d) {
    V kv[SV];
    for (int c = 0; c < SV; ++c) kv[c] = V::load(kt + d * KT + j0 + c * W);
    for (int r = 0; r < RB; ++r) {
      const V qv = V::set1(q[r][d]);
      for (int c = 0; c < SV; ++c) acc[r][c] = V::fma(qv, kv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < RB && r0 + r < rows; ++r)
    for (int c = 0; c < SV; ++c) acc[r][c].store(p + (r0 + r) * KT + j0 + c * W);
}

// acc[r][d0:d0+DV*W] += sum_j p[r][j] v[s0 + j][d0:...] for the RB rows r0.., keys j < n
template <class KV>
void block_values(const BlockBufs& bb, float* acc, const KV* v, int64_t v_ss, int64_t s0, int64_t n, int64_t D,
                  int64_t r0, int64_t rows, int64_t d0) {
  const int nv = static_cast<int>(std::min<int64_t>(DV, (D - d0 + W - 1) / W));
  int m[DV];
  for (int c = 0; c < DV; ++c) m[c] = c < nv ? lanes(D, d0 + c * W) : 0;
  V o[RB][DV];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < DV; ++c)
      o[r][c] = r0 + r < rows && m[c] ? load_n<V>(acc + (r0 + r) * D + d0 + c * W, m[c]) : V::zero();
  const float* pr[RB];
  for (int r = 0; r < RB; ++r) pr[r] = bb.p.data() + std::min<int64_t>(r0 + r, rows - 1) * KT;
  for (int64_t j = 0; j < n; ++j) {
    const KV* vr = v + (s0 + j) * v_ss + d0;
    V vv[DV];
    for (int c = 0; c < DV; ++c) vv[c] = m[c] ? load_n<V>(vr + c * W, m[c]) : V::zero();
    for (int r = 0; r < RB; ++r) {
      const V pv = V::set1(pr[r][j]);
      for (int c = 0; c < DV; ++c) o[r][c] = V::fma(pv, vv[c], o[r][c]);
    }
  }
  for (int r = 0; r < RB && r0 + r < rows; ++r)
    for (int c = 0; c < DV; ++c)
      if (m[c]) store_n(acc + (r0 + r) * D + d0 + c * W, o[r][c], m[c]);
}

template <class KV>
void attend_block(const AttentionArgs& a, int64_t b, int64_t h, int64_t t0, int64_t t1, BlockBufs& bb) {
  const int64_t D = a.D, rows = t1 - t0;
  const KV* k = static_cast<const KV*>(a.k) + b * a.k_sb + h * a.k_sh;
  const KV* v = static_cast<const KV*>(a.v) + b * a.v_sb + h * a.v_sh;
  const uint8_t* km = a.key_mask ? a.key_mask + b * a.km_sb : nullptr;
  bb.qs.resize(TQ * D), bb.kt.resize(D * KT), bb.p.resize(TQ * KT), bb.acc.assign(TQ * D, 0.0f);
  bb.m.assign(TQ, -FLT_MAX), bb.l.assign(TQ, 0.0f);
  const V scale = V::set1(a.scale);
  int64_t end[TQ];  // visible keys of each row
  for (int64_t r = 0; r < rows; ++r) {
    const float* q = a.q + b * a.q_sb + h * a.q_sh + (t0 + r) * a.q_st;
    for (int64_t d = 0; d < D; d += W) store_n(bb.qs.data() + r * D + d, load_n<V>(q + d, lanes(D, d)) * scale, lanes(D, d));
    end[r] = a.causal ? std::clamp<int64_t>(t0 + r + a.causal_offset + 1, 0, a.S) : a.S;
  }
  const int64_t s_end = *std::max_element(end, end + rows);
  for (int64_t s0 = 0; s0 < s_end; s0 += KT) {
    const int64_t n = std::min(KT, s_end - s0);
    pack_kt(bb.kt.data(), k, a.k_ss, s0, n, D);
    for (int64_t r0 = 0; r0 < rows; r0 += RB)
      for (int64_t j0 = 0; j0 < n; j0 += SV * W) block_scores(bb.qs.data(), bb.kt.data(), bb.p.data(), D, r0, rows, j0);
    for (int64_t r = 0; r < rows; ++r) {  // mask, online softmax update, probabilities (0 past the row's end)
      float* p = bb.p.data() + r * KT;
      const int64_t e = std::clamp<int64_t>(end[r] - s0, 0, n), ev = e / W * W;  // visible keys; in whole vectors
      const float* mask = a.mask ? a.mask + b * a.m_sb + h * a.m_sh + (t0 + r) * a.m_st + s0 : nullptr;
      float mx = -FLT_MAX;
      if (km) {
        for (int64_t j = 0; j < e; ++j) {
          float x = p[j];
          if (!km[s0 + j]) x = -FLT_MAX;  // as the reference's additive finfo(float32).min
          else if (mask) x += mask[j];
          p[j] = x;
          mx = std::max(mx, x);
        }
      } else {
        V vmx = V::set1(-FLT_MAX);
        for (int64_t j = 0; j < ev; j += W) {
          V x = V::load(p + j);
          if (mask) x = x + V::load(mask + j);
          x.store(p + j);
          vmx = V::max(x, vmx);
        }
        mx = vmx.reduce_max();
        for (int64_t j = ev; j < e; ++j) {
          if (mask) p[j] += mask[j];
          mx = std::max(mx, p[j]);
        }
      }
      const float m_new = std::max(bb.m[r], mx), corr = e ? vexp(V::set1(bb.m[r] - m_new)).reduce_max() : 1.0f;
      V vsum = V::zero();
      for (int64_t j = 0; j < ev; j += W) {
        const V e_ = vexp(V::load(p + j) - V::set1(m_new));
        e_.store(p + j);
        vsum = vsum + e_;
      }
      float sum = vsum.reduce_add();
      if (ev < e) {  // the ragged last vector of visible keys
        const int c = lanes(e, ev);
        store_n(p + ev, vexp(load_n<V>(p + ev, c) - V::set1(m_new)), c);
        for (int64_t j = ev; j < e; ++j) sum += p[j];
      }
      std::fill(p + e, p + n, 0.0f);  // past the row's end
      if (e) {
        bb.l[r] = bb.l[r] * corr + sum, bb.m[r] = m_new;
        float* acc = bb.acc.data() + r * D;
        for (int64_t d = 0; d < D; d += W) store_n(acc + d, load_n<V>(acc + d, lanes(D, d)) * V::set1(corr), lanes(D, d));
      }
    }
    for (int64_t r0 = 0; r0 < rows; r0 += RB)
      for (int64_t d0 = 0; d0 < D; d0 += DV * W) block_values(bb, bb.acc.data(), v, a.v_ss, s0, n, D, r0, rows, d0);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* out = a.out + b * a.o_sb + h * a.o_sh + (t0 + r) * a.o_st;
    if (bb.m[r] == -FLT_MAX) bb.l[r] += add_hidden_keys(bb.acc.data() + r * D, v, a.v_ss, end[r], a.S, D);
    const V inv = V::set1(bb.l[r] > 0.0f ? 1.0f / bb.l[r] : 0.0f);  // no key at all: zeros
    for (int64_t d = 0; d < D; d += W) store_n(out + d, load_n<V>(bb.acc.data() + r * D + d, lanes(D, d)) * inv, lanes(D, d));
  }
}

template <class KV>
void attention_t(const AttentionArgs& a) {
  const int64_t tblocks = (a.T + TQ - 1) / TQ;
  parallel_for(a.B * a.H * tblocks, [&](int64_t task) {
    const int64_t b = task / (a.H * tblocks), h = (task / tblocks) % a.H, tb = task % tblocks;
    if (std::min(a.T, (tb + 1) * TQ) - tb * TQ >= BLOCK_MIN) {
      thread_local BlockBufs bb;
      return attend_block<KV>(a, b, h, tb * TQ, std::min(a.T, (tb + 1) * TQ), bb);
    }
    std::vector<float> buf(2 * a.D + ROW_KT);
    float *qs = buf.data(), *acc = qs + a.D, *sc = acc + a.D;
    const KV* k = static_cast<const KV*>(a.k) + b * a.k_sb + h * a.k_sh;
    const KV* v = static_cast<const KV*>(a.v) + b * a.v_sb + h * a.v_sh;
    const uint8_t* km = a.key_mask ? a.key_mask + b * a.km_sb : nullptr;
    const V scale = V::set1(a.scale);
    for (int64_t t = tb * TQ; t < std::min(a.T, (tb + 1) * TQ); ++t) {
      const float* q = a.q + b * a.q_sb + h * a.q_sh + t * a.q_st;
      for (int64_t d = 0; d < a.D; d += W) store_n(qs + d, load_n<V>(q + d, lanes(a.D, d)) * scale, lanes(a.D, d));
      const int64_t s_end = a.causal ? std::clamp<int64_t>(t + a.causal_offset + 1, 0, a.S) : a.S;
      const float* mask = a.mask ? a.mask + b * a.m_sb + h * a.m_sh + t * a.m_st : nullptr;
      attend_row(a, qs, k, v, mask, km, s_end, a.out + b * a.o_sb + h * a.o_sh + t * a.o_st, acc, sc);
    }
  });
}

}  // namespace

template <>
void rotary<ISA>(float* y, const float* x, const float* cos, const float* sin, int64_t M, int64_t T, int64_t D,
                 int64_t R) {
  // y[:R/2] = x1 cos1 - x2 sin1;  y[R/2:R] = x2 cos2 + x1 sin2  (x1 = x[:R/2], x2 = x[R/2:R]; rotate_half)
  const int64_t half = R / 2;
  parallel_for(M, [&](int64_t mi) {
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = x + (mi * T + t) * D;
      float* yr = y + (mi * T + t) * D;
      const float *c = cos + t * R, *s = sin + t * R;
      for (int64_t i = 0; i < half; i += W) {
        const int k = lanes(half, i);
        const V x1 = load_n<V>(xr + i, k), x2 = load_n<V>(xr + half + i, k);
        const V y1 = x1 * load_n<V>(c + i, k) - x2 * load_n<V>(s + i, k);
        const V y2 = V::fma(x2, load_n<V>(c + half + i, k), x1 * load_n<V>(s + half + i, k));
        store_n(yr + i, y1, k);
        store_n(yr + half + i, y2, k);
      }
      if (yr != xr) std::copy(xr + R, xr + D, yr + R);
    }
  });
}

template <>
void attention<ISA>(const AttentionArgs& a) {
  switch (a.kv_dtype) {
    case DType::F16: return attention_t<f16_t>(a);
    case DType::BF16: return attention_t<bf16_t>(a);
    default: return attention_t<float>(a);
  }
}

}  // namespace pyclvp::cpu
