// rotary and attention. Compiled once per ISA (see csrc/cpu/kernels.h for the contracts).
//
// attention works one query row at a time against key tiles of KT keys, with the online softmax
// (ref: Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; FlashAttention's
// outer loop): keep the running max m, the running sum l and the unnormalized output acc (D);
// for each tile of scores s_j: m' = max(m, max_j s_j); acc = acc * e^(m - m') + sum_j e^(s_j - m') v_j;
// l = l * e^(m - m') + sum_j e^(s_j - m'); at the end out = acc / l. So the (T, S) score matrix is
// never materialized: a task holds D + KT floats. Tasks are (batch, head, block of query rows).
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
constexpr int64_t KT = 128;  // keys per tile
constexpr int64_t TQ = 16;   // query rows per task

inline int lanes(int64_t n, int64_t i) { return static_cast<int>(std::min<int64_t>(W, n - i)); }

template <class KV>
float dot(const float* q, const KV* k, int64_t D) {
  V acc = V::zero();
  for (int64_t d = 0; d < D; d += W) acc = V::fma(load_n<V>(q + d, lanes(D, d)), load_n<V>(k + d, lanes(D, d)), acc);
  return acc.reduce_add();
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
  const V inv = V::set1(s_end > 0 ? 1.0f / l : 0.0f);  // no visible key: zeros
  for (int64_t d = 0; d < D; d += W) store_n(out + d, load_n<V>(acc + d, lanes(D, d)) * inv, lanes(D, d));
}

template <class KV>
void attention_t(const AttentionArgs& a) {
  const int64_t tblocks = (a.T + TQ - 1) / TQ;
  parallel_for(a.B * a.H * tblocks, [&](int64_t task) {
    const int64_t b = task / (a.H * tblocks), h = (task / tblocks) % a.H, tb = task % tblocks;
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
      const float* mask = a.mask ? a.mask + b * a.m_sb + t * a.m_st : nullptr;
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
