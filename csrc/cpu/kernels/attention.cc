// rotary and attention. Compiled once per ISA (see csrc/cpu/kernels.h for the contracts).
//
// attention works one query row at a time against key tiles of KT keys, with the online softmax
// (ref: Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; FlashAttention's
// outer loop): keep the running max m, the running sum l and the unnormalized output acc (D);
// for each tile of scores s_j: m' = max(m, max_j s_j); acc = acc * e^(m - m') + sum_j e^(s_j - m') v_j;
// l = l * e^(m - m') + sum_j e^(s_j - m'); at the end out = acc / l. So the (T, S) score matrix is
// never materialized. Tasks are (batch, head, block of query rows). Two paths, same arithmetic:
//   attend_row    one row at a time (decode: T == 1): scores by dot products, the tile's values
//                 accumulated into the row's output.
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
constexpr int64_t KT = 128;     // keys per tile
constexpr int64_t TQ = 32;      // query rows per task
constexpr int64_t BLOCK_MIN = 4;  // tasks with at least this many rows take attend_block
constexpr int RB = 4;           // attend_block: rows of a register tile
constexpr int DV = 3;           // attend_block: output vectors of a value tile

inline int lanes(int64_t n, int64_t i) { return static_cast<int>(std::min<int64_t>(W, n - i)); }

template <class KV>
float dot(const float* q, const KV* k, int64_t D) {
  V acc = V::zero();
  for (int64_t d = 0; d < D; d += W) acc = V::fma(load_n<V>(q + d, lanes(D, d)), load_n<V>(k + d, lanes(D, d)), acc);
  return acc.reduce_add();
}

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

// One query row: out[0:D] = softmax(qs . k_s + mask_s over visible s) @ v   (qs is q * scale)
template <class KV>
void attend_row(const AttentionArgs& a, const float* qs, const KV* k, const KV* v, const float* mask,
                const uint8_t* key_mask, int64_t s_end, float* out, float* acc, float* sc) {
  const int64_t D = a.D;
  std::fill(acc, acc + D, 0.0f);
  float m = -FLT_MAX, l = 0.0f;
  for (int64_t s0 = 0; s0 < s_end; s0 += KT) {
    const int64_t n = std::min(KT, s_end - s0);
    float tile_max = -FLT_MAX;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t s = s0 + j;
      float x;
      if (key_mask && !key_mask[s]) {
        x = -FLT_MAX;  // as the reference's additive finfo(float32).min
      } else {
        x = dot(qs, k + s * a.k_ss, D);
        if (mask) x += mask[s];
      }
      sc[j] = x;
      tile_max = std::max(tile_max, x);
    }
    const float m_new = std::max(m, tile_max);
    const V mv = V::set1(m_new);
    const float corr = vexp(V::set1(m - m_new)).reduce_max();  // e^(m - m'), exactly 1 when m == m'
    float tile_sum = 0.0f;
    for (int64_t j = 0; j < n; j += W) {
      const int c = lanes(n, j);
      const V p = vexp(load_n<V>(sc + j, c) - mv);
      store_n(sc + j, p, c);
    }
    for (int64_t j = 0; j < n; ++j) tile_sum += sc[j];
    l = l * corr + tile_sum;
    const V cv = V::set1(corr);
    for (int64_t d = 0; d < D; d += W) store_n(acc + d, load_n<V>(acc + d, lanes(D, d)) * cv, lanes(D, d));
    for (int64_t j = 0; j < n; ++j) {
      const V p = V::set1(sc[j]);
      const KV* vr = v + (s0 + j) * a.v_ss;
      for (int64_t d = 0; d < D; d += W) {
        const int c = lanes(D, d);
        store_n(acc + d, V::fma(p, load_n<V>(vr + d, c), load_n<V>(acc + d, c)), c);
      }
    }
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

// kt[d][j] = k[s0 + j][d] widened, for j < n (zeros up to a whole vector)
template <class KV>
void pack_kt(float* kt, const KV* k, int64_t k_ss, int64_t s0, int64_t n, int64_t D) {
  float row[W];
  const int64_t nr = (n + W - 1) / W * W;
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

// p[r][j0:j0+2W] = qs[r] . kt[:, j0:j0+2W] for the RB rows r0.. (rows past t1 repeat the last, unused)
void block_scores(const float* qs, const float* kt, float* p, int64_t D, int64_t r0, int64_t rows, int64_t j0) {
  V acc[RB][2];
  const float* q[RB];
  for (int r = 0; r < RB; ++r) q[r] = qs + std::min<int64_t>(r0 + r, rows - 1) * D, acc[r][0] = acc[r][1] = V::zero();
  for (int64_t d = 0; d < D; ++d) {
    const V k0 = V::load(kt + d * KT + j0), k1 = V::load(kt + d * KT + j0 + W);
    for (int r = 0; r < RB; ++r) {
      const V qv = V::set1(q[r][d]);
      acc[r][0] = V::fma(qv, k0, acc[r][0]);
      acc[r][1] = V::fma(qv, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < RB && r0 + r < rows; ++r) {
    acc[r][0].store(p + (r0 + r) * KT + j0);
    acc[r][1].store(p + (r0 + r) * KT + j0 + W);
  }
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
      for (int64_t j0 = 0; j0 < n; j0 += 2 * W) block_scores(bb.qs.data(), bb.kt.data(), bb.p.data(), D, r0, rows, j0);
    for (int64_t r = 0; r < rows; ++r) {  // mask, online softmax update, probabilities (0 past the row's end)
      float* p = bb.p.data() + r * KT;
      const int64_t e = std::clamp<int64_t>(end[r] - s0, 0, n);
      const float* mask = a.mask ? a.mask + b * a.m_sb + h * a.m_sh + (t0 + r) * a.m_st + s0 : nullptr;
      float mx = -FLT_MAX;
      for (int64_t j = 0; j < e; ++j) {
        float x = p[j];
        if (km && !km[s0 + j]) x = -FLT_MAX;  // as the reference's additive finfo(float32).min
        else if (mask) x += mask[j];
        p[j] = x;
        mx = std::max(mx, x);
      }
      const float m_new = std::max(bb.m[r], mx), corr = e ? vexp(V::set1(bb.m[r] - m_new)).reduce_max() : 1.0f;
      float sum = 0.0f;
      for (int64_t j = 0; j < n; j += W) {
        const int c = lanes(n, j);
        V e_ = vexp(load_n<V>(p + j, c) - V::set1(m_new));
        store_n(p + j, e_, c);
      }
      for (int64_t j = e; j < n; ++j) p[j] = 0.0f;
      for (int64_t j = 0; j < e; ++j) sum += p[j];
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
    std::vector<float> buf(2 * a.D + KT);
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
