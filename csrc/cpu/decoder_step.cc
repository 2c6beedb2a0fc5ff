// The fused KV-cached decoder: one call runs every layer for T new positions per row (prefill:
// the prompt; step: T = 1), then the final norms and lm_head on each row's last position.
// Orchestration only: the arithmetic is the per-ISA kernels of cpu/kernels.h, chosen once per call.
//
// Per layer, as ClvpDecoderLayer.forward (x is the residual stream, (B*T, C)):
//   h = input_layernorm(x)
//   q, k, v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv      one parallel region for the three products
//   cache[l, :, :, length:length+T] = k, v               (B, T, C) -> (B, H, T, D), stored in the cache dtype
//   a = softmax(q k^T / sqrt(D), causal, key_mask) v     q is scaled before the product, as q_proj(h) * scale
//   x += a Wo^T + bo
//   h = post_attention_layernorm(x)
//   x += gelu_new(h Wfc + bfc) Wproj + bproj             Conv1D weights, gelu_new fused into c_fc's epilogue
// then  logits = lm_head(final_norm(decoder.layer_norm(x[:, T-1])))  (ClvpDecoder.layer_norm, ClvpForCausalLM)
#include "cpu/decoder_step.h"

#include <cmath>

#include "cpu/dispatch.h"

namespace pyclvp::cpu {
namespace {

LinearJob job(float* y, const float* x, const WeightView& w, const float* b, int64_t N, int64_t Cin, int64_t Cout,
              bool accumulate = false, Act act = Act::NONE, int64_t ldy = 0) {
  LinearJob j;
  j.y = y;
  j.x = x;
  j.w = w;
  j.b = b;
  j.N = N;
  j.Cin = Cin;
  j.Cout = Cout;
  j.ldx = Cin;
  j.ldy = ldy ? ldy : Cout;
  j.accumulate = accumulate;
  j.act = act;
  return j;
}

// The products of one phase, on the kernel of their weights' dtype (int8 ones: linear_q8). The jobs of a phase
// share a dtype (a model's matrices are all int8 or all float, but a matrix whose Cin is not a multiple of 32
// stays float), so this is one call in practice; a mixed phase runs as two.
template <CpuIsa ISA>
void run_linear(const LinearJob* jobs, int n) {  // n <= 3 (q, k, v)
  LinearJob q8[3], fl[3];
  int nq = 0, nf = 0;
  for (int i = 0; i < n; ++i) (jobs[i].w.dtype == DType::I8 ? q8[nq++] : fl[nf++]) = jobs[i];
  if (nq) linear_q8<ISA>(q8, nq);
  if (nf) linear<ISA>(fl, nf);
}

inline size_t cache_elem_size(DType dt) { return dt == DType::F32 ? 4 : 2; }

// Writes the new keys/values (B, T, 2C) of layer l into the cache at [l, b, h, length + t, :].
template <CpuIsa ISA>
void write_cache(const DecoderModel& m, const KVCache& c, int64_t l, int64_t length, int64_t T, const float* kv) {
  const size_t es = cache_elem_size(c.dtype);
  char* kbase = static_cast<char*>(c.k);
  char* vbase = static_cast<char*>(c.v);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < m.H; ++h) {
        const int64_t off = ((((l * c.B) + b) * m.H + h) * c.S + length + t) * m.D;
        const float* row = kv + (b * T + t) * 2 * m.C + h * m.D;
        store_as<ISA>(kbase + off * es, c.dtype, row, m.D);
        store_as<ISA>(vbase + off * es, c.dtype, row + m.C, m.D);
      }
}

template <CpuIsa ISA>
void forward(const DecoderModel& m, const KVCache& c, int64_t length, int64_t T, DecoderScratch& s, float* logits) {
  const int64_t B = c.B, N = B * T, C = m.C;
  s.h.resize(N * C);
  s.q.resize(N * C);
  s.kv.resize(N * 2 * C);
  s.f.resize(N * m.F);
  s.last.resize(B * C);
  float *x = s.x.data(), *h = s.h.data(), *q = s.q.data(), *kv = s.kv.data(), *f = s.f.data();
  const size_t es = cache_elem_size(c.dtype);
  const int64_t layer_elems = B * m.H * c.S * m.D;

  for (int64_t l = 0; l < m.L; ++l) {
    const DecoderLayer& w = m.layers[l];
    // --- attention block
    layer_norm<ISA>(h, x, w.ln1_g, w.ln1_b, N, C, m.eps);
    const LinearJob qkv[3] = {job(q, h, w.q, w.q_b, N, C, C),
                              job(kv, h, w.k, w.k_b, N, C, C, false, Act::NONE, 2 * C),
                              job(kv + C, h, w.v, w.v_b, N, C, C, false, Act::NONE, 2 * C)};
    run_linear<ISA>(qkv, 3);
    write_cache<ISA>(m, c, l, length, T, kv);

    AttentionArgs a;
    a.q = q;  // (B, T, H, D) read as (B, H, T, D)
    a.q_sb = T * C, a.q_sh = m.D, a.q_st = C;
    a.k = static_cast<const char*>(c.k) + l * layer_elems * es;
    a.v = static_cast<const char*>(c.v) + l * layer_elems * es;
    a.kv_dtype = c.dtype;
    a.k_sb = a.v_sb = m.H * c.S * m.D, a.k_sh = a.v_sh = c.S * m.D, a.k_ss = a.v_ss = m.D;
    a.out = h;  // the attention output reuses h, (B, T, C)
    a.o_sb = T * C, a.o_sh = m.D, a.o_st = C;
    a.key_mask = c.key_mask, a.km_sb = c.S;
    a.causal = true, a.causal_offset = length;
    a.B = B, a.H = m.H, a.T = T, a.S = length + T, a.D = m.D;
    a.scale = 1.0f / std::sqrt(static_cast<float>(m.D));
    attention<ISA>(a);
    const LinearJob out = job(x, h, w.o, w.o_b, N, C, C, true);
    run_linear<ISA>(&out, 1);

    // --- MLP block
    layer_norm<ISA>(h, x, w.ln2_g, w.ln2_b, N, C, m.eps);
    const LinearJob fc = job(f, h, w.fc, w.fc_b, N, C, m.F, false, Act::GELU_NEW);
    run_linear<ISA>(&fc, 1);
    const LinearJob proj = job(x, f, w.proj, w.proj_b, N, m.F, C, true);
    run_linear<ISA>(&proj, 1);
  }

  // --- each row's last position through decoder.layer_norm, final_norm and lm_head
  float* last = s.last.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < C; ++i) last[b * C + i] = x[(b * T + T - 1) * C + i];
  layer_norm<ISA>(last, last, m.lnf_g, m.lnf_b, B, C, m.eps);
  layer_norm<ISA>(last, last, m.final_g, m.final_b, B, C, 1e-5f);
  const LinearJob lm = job(logits, last, m.lm, m.lm_b, B, C, m.V);
  run_linear<ISA>(&lm, 1);
}

}  // namespace

void decoder_forward(CpuIsa isa, const DecoderModel& m, const KVCache& cache, int64_t length, int64_t T,
                     DecoderScratch& s, float* logits) {
  dispatch(isa, [&](auto tag) { forward<decltype(tag)::value>(m, cache, length, T, s, logits); });
}

void decoder_embed(CpuIsa isa, const DecoderModel& m, const int64_t* ids, const int64_t* pos, int64_t B, float* x) {
  const size_t wte_es = m.wte_dtype == DType::F32 ? 4 : 2, wpe_es = m.wpe_dtype == DType::F32 ? 4 : 2;
  dispatch(isa, [&](auto tag) {
    for (int64_t b = 0; b < B; ++b)
      add_rows<decltype(tag)::value>(x + b * m.C, static_cast<const char*>(m.wte) + ids[b] * m.C * wte_es, m.wte_dtype,
                                     static_cast<const char*>(m.wpe) + pos[b] * m.C * wpe_es, m.wpe_dtype, m.C);
  });
}

}  // namespace pyclvp::cpu
