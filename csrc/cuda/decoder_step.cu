// The fused KV-cached decoder on the device: orchestration of the kernels of csrc/cuda/kernels.h,
// plus the step's own small kernels (embedding, row gather). Contract in csrc/cuda/decoder_step.h.
//
// Per layer, as ClvpDecoderLayer.forward and csrc/cpu/decoder_step.cc (x is the residual stream, (N, C)):
//   qkv = layer_norm_1(x) [Wq|Wk|Wv]^T + [bq|bk|bv]    one GEMV/GEMM over the stacked (3C, C) weight;
//                                                       for N <= kFuseLnRows the norm is its prologue
//   cache[l, :, :, length:length+T] = k, v              step: attention's prologue; prefill: write_kv
//   a = softmax(q k^T / sqrt(D), causal, key_mask) v
//   x += a Wo^T + bo
//   x += gelu_new(layer_norm_2(x) Wfc^T + bfc) Wproj^T + bproj     gelu_new in c_fc's epilogue
// then logits = lm_head(final_norm(decoder.layer_norm(x[:, T-1])))   both norms in one kernel.
// A step is 3 + 5L launches (7L when B > kFuseLnRows), captured once per state and replayed.
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "cuda/common.cuh"
#include "cuda/decoder_step.h"

namespace pyclvp::cuda {
namespace {

constexpr int64_t kFuseLnRows = 4;  // up to this many rows the layer norms run inside the GEMV
constexpr int kThreads = 256;

__device__ __forceinline__ float load_as(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F16: return to_f32(static_cast<const __half*>(p)[i]);
    case DType::BF16: return to_f32(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// x[b] = wte[ids[b]] + wpe[pos[b]], and key_mask[b, length] = 1.   in = (length, ids (B), pos (B)); one block per row
__global__ void __launch_bounds__(kThreads)
    embed_kernel(float* x, const void* wte, DType wte_dtype, const void* wpe, DType wpe_dtype, const int64_t* in,
                 int64_t B, int64_t C, uint8_t* key_mask, int64_t S) {
  wait_for_previous_kernel();
  const int64_t b = blockIdx.x, id = in[1 + b], pos = in[1 + B + b];
  for (int64_t c = threadIdx.x; c < C; c += kThreads)
    x[b * C + c] = load_as(wte, wte_dtype, id * C + c) + load_as(wpe, wpe_dtype, pos * C + c);
  if (threadIdx.x == 0) key_mask[b * S + in[0]] = 1;
}

// dst[l, r] = src[l, rows[r]] for l < L, r < Bdst; a row is `row` elements of E
template <class E>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(E* dst, const E* src, const int64_t* rows, int64_t L, int64_t Bsrc, int64_t Bdst, int64_t row) {
  wait_for_previous_kernel();
  const int64_t n = L * Bdst * row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t l = i / (Bdst * row), r = (i / row) % Bdst, e = i % row;
    dst[i] = src[(l * Bsrc + rows[r]) * row + e];
  }
}

void gather_rows(void* dst, const void* src, const int64_t* rows, int64_t L, int64_t Bsrc, int64_t Bdst,
                 size_t row_bytes, StreamHandle s) {
  const int64_t total = L * Bdst * static_cast<int64_t>(row_bytes);
  if (total == 0) return;
  if (row_bytes % 16 == 0) {
    const int64_t row = static_cast<int64_t>(row_bytes / 16);
    launch(gather_rows_kernel<uint4>, grid_stride_blocks(total / 16), kThreads, s, static_cast<uint4*>(dst),
           static_cast<const uint4*>(src), rows, L, Bsrc, Bdst, row);
  } else {
    launch(gather_rows_kernel<uint8_t>, grid_stride_blocks(total), kThreads, s, static_cast<uint8_t*>(dst),
           static_cast<const uint8_t*>(src), rows, L, Bsrc, Bdst, static_cast<int64_t>(row_bytes));
  }
}

DeviceBuffer upload_f32(const float* p, int64_t n, StreamHandle s, const char* what) {
  DeviceBuffer d(static_cast<size_t>(n) * 4, what);
  to_device(d.data(), p, static_cast<size_t>(n) * 4, s);
  return d;
}

DeviceBuffer upload_table(const void* p, DType dt, int64_t rows, int64_t C, StreamHandle s, const char* what) {
  const size_t bytes = static_cast<size_t>(rows * C) * dtype_size(dt);
  DeviceBuffer d(bytes, what);
  to_device(d.data(), p, bytes, s);
  return d;
}

HostMatrix host(const cpu::WeightView& w, int64_t Cout, int64_t Cin) { return {w.data, w.dtype, w.kn, Cout, Cin}; }

Activations make_activations(int64_t N, int64_t B, const DeviceModel& m) {
  Activations a;
  const size_t f = sizeof(float);
  a.x = DeviceBuffer(N * m.C * f, "decoder activations x");
  a.h = DeviceBuffer(std::max(N, B) * m.C * f, "decoder activations h");
  a.qkv = DeviceBuffer(N * 3 * m.C * f, "decoder activations qkv");
  a.att = DeviceBuffer(N * m.C * f, "decoder activations att");
  a.f = DeviceBuffer(N * m.F * f, "decoder activations f");
  a.logits = DeviceBuffer(B * m.V * f, "decoder logits");
  return a;
}

LinearArgs product(float* y, const float* x, const DeviceMatrix& w, const DeviceBuffer& b, int64_t N) {
  LinearArgs a;
  a.y = y, a.x = x, a.w = w.buf.data(), a.w_dtype = w.dtype, a.b = b.as<float>();
  a.N = N, a.Cin = w.cols, a.Cout = w.rows, a.ldx = w.cols, a.ldy = w.rows;
  return a;
}

}  // namespace

// One forward over T new positions of B rows: where its buffers are and how it finds the cache length.
struct CudaDecoder::Pass {
  int64_t B = 0, T = 0;
  int64_t length = 0;                  // prefill: the cache length before this pass
  const int64_t* length_dev = nullptr;  // step: the length on the device (in_dev_[0]); K/V stored by attention
  const Activations* act = nullptr;
};

CudaDecoder::CudaDecoder(const cpu::DecoderModel& h, bool use_graph) : use_graph_(use_graph) {
  // every check before the first allocation
  PYCLVP_CHECK(h.L >= 1 && h.C >= 1 && h.H >= 1 && h.F >= 1 && h.V >= 1 && h.P >= 1 && h.C % h.H == 0,
               "bad decoder sizes L=", h.L, " C=", h.C, " H=", h.H, " F=", h.F, " V=", h.V, " P=", h.P);
  PYCLVP_CHECK(h.D <= kAttentionMaxD, "head dim ", h.D, " exceeds the CUDA attention kernel's limit ", kAttentionMaxD);
  PYCLVP_CHECK(static_cast<int64_t>(h.layers.size()) == h.L, "the model has ", h.layers.size(), " layers, expected ", h.L);
  for (const auto& l : h.layers)
    PYCLVP_CHECK(l.q.dtype == l.k.dtype && l.k.dtype == l.v.dtype,
                 "q_proj, k_proj and v_proj weights must share a dtype (they are stacked into one matrix)");
  require_device();
  stream_ = std::make_unique<Stream>();

  const StreamHandle s = stream();
  m_.L = h.L, m_.C = h.C, m_.H = h.H, m_.D = h.D, m_.F = h.F, m_.V = h.V, m_.P = h.P, m_.eps = h.eps;
  const int64_t C = h.C, F = h.F;
  m_.wte = upload_table(h.wte, h.wte_dtype, h.V, C, s, "wte"), m_.wte_dtype = h.wte_dtype;
  m_.wpe = upload_table(h.wpe, h.wpe_dtype, h.P, C, s, "wpe"), m_.wpe_dtype = h.wpe_dtype;
  std::vector<float> qkv_b(3 * C);
  for (const cpu::DecoderLayer& l : h.layers) {
    DeviceLayer d;
    d.ln1_g = upload_f32(l.ln1_g, C, s, "input_layernorm"), d.ln1_b = upload_f32(l.ln1_b, C, s, "input_layernorm");
    d.qkv.buf = DeviceBuffer(static_cast<size_t>(3 * C * C) * dtype_size(l.q.dtype), "qkv_proj");
    d.qkv.dtype = l.q.dtype, d.qkv.rows = 3 * C, d.qkv.cols = C;
    upload_rows(d.qkv, 0, host(l.q, C, C), s);
    upload_rows(d.qkv, C, host(l.k, C, C), s);
    upload_rows(d.qkv, 2 * C, host(l.v, C, C), s);
    const float* biases[3] = {l.q_b, l.k_b, l.v_b};
    for (int i = 0; i < 3; ++i)
      for (int64_t c = 0; c < C; ++c) qkv_b[i * C + c] = biases[i] ? biases[i][c] : 0.0f;
    d.qkv_b = upload_f32(qkv_b.data(), 3 * C, s, "qkv bias");
    sync(s);  // qkv_b (host) is rewritten for the next layer
    d.o = upload_matrix(host(l.o, C, C), s, "out_proj"), d.o_b = upload_f32(l.o_b, C, s, "out_proj bias");
    d.ln2_g = upload_f32(l.ln2_g, C, s, "post_attention_layernorm");
    d.ln2_b = upload_f32(l.ln2_b, C, s, "post_attention_layernorm");
    d.fc = upload_matrix(host(l.fc, F, C), s, "c_fc"), d.fc_b = upload_f32(l.fc_b, F, s, "c_fc bias");
    d.proj = upload_matrix(host(l.proj, C, F), s, "c_proj"), d.proj_b = upload_f32(l.proj_b, C, s, "c_proj bias");
    m_.layers.push_back(std::move(d));
  }
  m_.lnf_g = upload_f32(h.lnf_g, C, s, "layer_norm"), m_.lnf_b = upload_f32(h.lnf_b, C, s, "layer_norm");
  m_.final_g = upload_f32(h.final_g, C, s, "final_norm"), m_.final_b = upload_f32(h.final_b, C, s, "final_norm");
  m_.lm = upload_matrix(host(h.lm, h.V, C), s, "lm_head"), m_.lm_b = upload_f32(h.lm_b, h.V, s, "lm_head bias");
  sync(s);
}

void CudaDecoder::check_owner(const CudaDecoderState& st) const {
  PYCLVP_CHECK(st.owner_ == this, "this decoder state was made by another decoder");
}

std::unique_ptr<CudaDecoderState> CudaDecoder::new_state(int64_t B, int64_t S, DType dtype) const {
  PYCLVP_CHECK(B >= 1 && S >= 1, "a decoder state needs batch >= 1 and max_len >= 1, got ", B, " and ", S);
  const StreamHandle s = stream();
  auto st = std::make_unique<CudaDecoderState>();
  st->owner_ = this, st->B_ = B, st->S_ = S, st->dtype_ = dtype;
  const size_t cache = static_cast<size_t>(m_.L * B * m_.H * S * m_.D) * dtype_size(dtype);
  st->k_ = DeviceBuffer(cache, "the KV cache (k)");
  st->v_ = DeviceBuffer(cache, "the KV cache (v)");
  st->key_mask_ = DeviceBuffer(static_cast<size_t>(B * S), "the key mask");
  fill_bytes(st->k_.data(), 0, cache, s);
  fill_bytes(st->v_.data(), 0, cache, s);
  fill_bytes(st->key_mask_.data(), 0, static_cast<size_t>(B * S), s);
  st->step_ = make_activations(B, B, m_);
  fill_bytes(st->step_.h.data(), 0, static_cast<size_t>(B * m_.C) * 4, s);  // latent() before any call: zeros
  st->in_dev_ = DeviceBuffer(static_cast<size_t>(1 + 2 * B) * 8, "step inputs");
  st->in_host_ = PinnedBuffer(static_cast<size_t>(1 + 2 * B) * 8, "step inputs");
  st->logits_host_ = PinnedBuffer(static_cast<size_t>(B * m_.V) * 4, "step logits");
  st->seen_ = DeviceBuffer(static_cast<size_t>(B * m_.V), "seen tokens");
  fill_bytes(st->seen_.data(), 0, static_cast<size_t>(B * m_.V), s);
  st->u_dev_ = DeviceBuffer(static_cast<size_t>(B) * 8, "uniforms");
  st->pick_dev_ = DeviceBuffer(static_cast<size_t>(B) * 8, "chosen tokens");
  st->pick_host_ = PinnedBuffer(static_cast<size_t>(B) * 8, "uniforms and chosen tokens");
  sync(s);
  return st;
}

void CudaDecoder::enqueue_layers(const CudaDecoderState& st, const Pass& p) const {
  const StreamHandle s = stream();
  const Activations& a = *p.act;
  const int64_t N = p.B * p.T, C = m_.C, D = m_.D, S = st.S_;
  float *x = a.x.as<float>(), *h = a.h.as<float>(), *qkv = a.qkv.as<float>(), *att = a.att.as<float>(),
        *f = a.f.as<float>();
  const bool fuse = N <= kFuseLnRows;
  const size_t layer_bytes = static_cast<size_t>(p.B * m_.H * S * D) * dtype_size(st.dtype_);
  for (int64_t l = 0; l < m_.L; ++l) {
    const DeviceLayer& w = m_.layers[l];
    // --- attention block
    LinearArgs qkv_p = product(qkv, fuse ? x : h, w.qkv, w.qkv_b, N);
    if (fuse) qkv_p.ln_g = w.ln1_g.as<float>(), qkv_p.ln_b = w.ln1_b.as<float>(), qkv_p.ln_eps = m_.eps;
    else layer_norm(h, x, C, w.ln1_g.as<float>(), w.ln1_b.as<float>(), m_.eps, N, C, s);
    linear(qkv_p, s);

    AttentionArgs at;
    at.q = qkv, at.q_sb = p.T * 3 * C, at.q_sh = D, at.q_st = 3 * C;  // (B, T, H, D) read as (B, H, T, D)
    at.k = static_cast<char*>(st.k_.data()) + l * layer_bytes;
    at.v = static_cast<char*>(st.v_.data()) + l * layer_bytes;
    at.kv_dtype = st.dtype_;
    at.k_sb = at.v_sb = m_.H * S * D, at.k_sh = at.v_sh = S * D, at.k_ss = at.v_ss = D;
    at.out = att, at.o_sb = p.T * C, at.o_sh = D, at.o_st = C;
    at.key_mask = st.key_mask_.as<uint8_t>(), at.km_sb = S;
    at.causal = true;
    at.B = p.B, at.H = m_.H, at.T = p.T, at.D = D;
    at.scale = 1.0f / std::sqrt(static_cast<float>(D));
    if (p.length_dev) {
      at.length = p.length_dev, at.new_k = qkv + C, at.new_v = qkv + 2 * C, at.new_ld = 3 * C;
    } else {
      write_kv(at.k, at.v, st.dtype_, S, qkv + C, qkv + 2 * C, 3 * C, p.B, m_.H, p.T, D, p.length, s);
      at.causal_offset = p.length, at.S = p.length + p.T;
    }
    attention(at, s);
    LinearArgs out_p = product(x, att, w.o, w.o_b, N);
    out_p.accumulate = true;
    linear(out_p, s);

    // --- MLP block
    LinearArgs fc_p = product(f, fuse ? x : h, w.fc, w.fc_b, N);
    if (fuse) fc_p.ln_g = w.ln2_g.as<float>(), fc_p.ln_b = w.ln2_b.as<float>(), fc_p.ln_eps = m_.eps;
    else layer_norm(h, x, C, w.ln2_g.as<float>(), w.ln2_b.as<float>(), m_.eps, N, C, s);
    fc_p.act = Act::GELU_NEW;
    linear(fc_p, s);
    LinearArgs proj_p = product(x, f, w.proj, w.proj_b, N);
    proj_p.accumulate = true;
    linear(proj_p, s);
  }
}

// Each row's last position through decoder.layer_norm and final_norm (into h), then lm_head.
void CudaDecoder::enqueue_head(const Pass& p) const {
  const StreamHandle s = stream();
  const Activations& a = *p.act;
  float* last = a.h.as<float>();
  layer_norm(last, a.x.as<float>() + (p.T - 1) * m_.C, p.T * m_.C, m_.lnf_g.as<float>(), m_.lnf_b.as<float>(), m_.eps,
             p.B, m_.C, s, m_.final_g.as<float>(), m_.final_b.as<float>(), 1e-5f);
  linear(product(a.logits.as<float>(), last, m_.lm, m_.lm_b, p.B), s);
}

void CudaDecoder::prefill(CudaDecoderState& st, const float* embeds, const uint8_t* mask, int64_t T,
                          float* logits) const {
  check_owner(st);
  PYCLVP_CHECK(T >= 1 && st.length_ + T <= st.S_, "the cache holds ", st.S_, " positions: cannot write ", T,
               " more after length ", st.length_);
  const StreamHandle s = stream();
  const int64_t B = st.B_, N = B * T;
  const Activations a = make_activations(N, B, m_);
  to_device(a.x.data(), embeds, static_cast<size_t>(N * m_.C) * 4, s);
  to_device_2d(st.key_mask_.as<uint8_t>() + st.length_, st.S_, mask, T, T, B, s);  // key_mask[:, length:length+T]
  Pass p;
  p.B = B, p.T = T, p.length = st.length_, p.act = &a;
  enqueue_layers(st, p);
  enqueue_head(p);
  device_copy(st.step_.h.data(), a.h.data(), static_cast<size_t>(B * m_.C) * 4, s);  // where latent() reads
  to_host(logits, a.logits.data(), static_cast<size_t>(B * m_.V) * 4, s);
  sync(s);
  st.length_ += T;
}

void CudaDecoder::latent(const CudaDecoderState& st, float* out) const {
  check_owner(st);
  const StreamHandle s = stream();
  to_host(out, st.step_.h.data(), static_cast<size_t>(st.B_ * m_.C) * 4, s);  // the head's final norms (B rows)
  sync(s);
}

void CudaDecoder::enqueue_step(CudaDecoderState& st) const {
  const StreamHandle s = stream();
  const int64_t B = st.B_;
  to_device(st.in_dev_.data(), st.in_host_.data(), static_cast<size_t>(1 + 2 * B) * 8, s);
  launch(embed_kernel, grid_x(B, "embed"), kThreads, s, st.step_.x.as<float>(), m_.wte.data(), m_.wte_dtype,
         m_.wpe.data(), m_.wpe_dtype, st.in_dev_.as<int64_t>(), B, m_.C, st.key_mask_.as<uint8_t>(), st.S_);
  Pass p;
  p.B = B, p.T = 1, p.length_dev = st.in_dev_.as<int64_t>(), p.act = &st.step_;
  enqueue_layers(st, p);
  enqueue_head(p);
}

void CudaDecoder::capture_step(CudaDecoderState& st) const {
  const StreamHandle s = stream();
  cudaGraph_t g = nullptr;
  PYCLVP_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    enqueue_step(st);
  } catch (...) {
    cudaStreamEndCapture(s, &g);  // leave the stream usable
    if (g) cudaGraphDestroy(g);
    throw;
  }
  PYCLVP_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  const cudaError_t err = cudaGraphInstantiate(st.graph_.out(), g, 0);
  cudaGraphDestroy(g);
  PYCLVP_CUDA_CHECK(err);
}

void CudaDecoder::launch_step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos) const {
  check_owner(st);
  PYCLVP_CHECK(st.length_ + 1 <= st.S_, "the cache holds ", st.S_, " positions: cannot write 1 more after length ",
               st.length_);
  const int64_t B = st.B_;
  int64_t* in = st.in_host_.as<int64_t>();  // no replay is in flight: every call ends with a sync
  in[0] = st.length_;
  std::memcpy(in + 1, ids, static_cast<size_t>(B) * 8);
  std::memcpy(in + 1 + B, pos, static_cast<size_t>(B) * 8);
  if (use_graph_) {
    if (!st.graph_) capture_step(st);
    st.graph_.launch(stream());
  } else {
    enqueue_step(st);
  }
}

void CudaDecoder::step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos, float* logits) const {
  launch_step(st, ids, pos);
  const StreamHandle s = stream();
  const size_t bytes = static_cast<size_t>(st.B_ * m_.V) * 4;
  to_host(st.logits_host_.data(), st.step_.logits.data(), bytes, s);
  sync(s);
  std::memcpy(logits, st.logits_host_.data(), bytes);
  st.length_ += 1;
}

void CudaDecoder::step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos, const Pick& pick,
                       const double* u, int64_t* next) const {
  launch_step(st, ids, pos);
  choose(st, -1, pick, u, next);
  st.length_ += 1;
}

void CudaDecoder::pick_first(CudaDecoderState& st, const float* logits, int64_t start, const Pick& pick,
                             const double* u, int64_t* next) const {
  check_owner(st);
  PYCLVP_CHECK(start >= 0 && start < m_.V, "start token ", start, " is outside the vocabulary [0, ", m_.V, ")");
  to_device(st.step_.logits.data(), logits, static_cast<size_t>(st.B_ * m_.V) * 4, stream());
  choose(st, start, pick, u, next);
}

// The token choice over st.step_.logits (csrc/cuda/sampling.cu), then the ids to the host.
void CudaDecoder::choose(CudaDecoderState& st, int64_t start, const Pick& pick, const double* u, int64_t* next) const {
  const StreamHandle s = stream();
  const int64_t B = st.B_;
  SampleArgs a;
  a.logits = st.step_.logits.as<float>(), a.seen = st.seen_.as<uint8_t>(), a.out = st.pick_dev_.as<int64_t>();
  a.B = B, a.V = m_.V, a.start = start, a.pick = pick;
  if (pick.do_sample) {
    std::memcpy(st.pick_host_.data(), u, static_cast<size_t>(B) * 8);  // the pinned buffer: uniforms in ...
    to_device(st.u_dev_.data(), st.pick_host_.data(), static_cast<size_t>(B) * 8, s);
    a.u = st.u_dev_.as<double>();
  }
  sample(a, s);
  to_host(st.pick_host_.data(), st.pick_dev_.data(), static_cast<size_t>(B) * 8, s);  // ... then tokens out
  sync(s);
  std::memcpy(next, st.pick_host_.data(), static_cast<size_t>(B) * 8);
  for (int64_t r = 0; r < B; ++r)  // as pyclvp/decoding.py's sample()
    PYCLVP_CHECK(next[r] >= 0, "cannot sample row ", r, ": its processed logits hold NaN or overflowed to inf ",
                 "(a temperature too small for float32, or NaN logits)");
}

std::unique_ptr<CudaDecoderState> CudaDecoder::select(const CudaDecoderState& st, const int64_t* rows,
                                                      int64_t n) const {
  check_owner(st);
  for (int64_t i = 0; i < n; ++i)
    PYCLVP_CHECK(rows[i] >= 0 && rows[i] < st.B_, "rows[", i, "] = ", rows[i], " is outside [0, ", st.B_, ")");
  auto out = new_state(n, st.S_, st.dtype_);
  out->length_ = st.length_;
  const StreamHandle s = stream();
  DeviceBuffer idx(static_cast<size_t>(n) * 8, "selected rows");
  to_device(idx.data(), rows, static_cast<size_t>(n) * 8, s);
  const size_t row_bytes = static_cast<size_t>(m_.H * st.S_ * m_.D) * dtype_size(st.dtype_);
  gather_rows(out->k_.data(), st.k_.data(), idx.as<int64_t>(), m_.L, st.B_, n, row_bytes, s);
  gather_rows(out->v_.data(), st.v_.data(), idx.as<int64_t>(), m_.L, st.B_, n, row_bytes, s);
  gather_rows(out->key_mask_.data(), st.key_mask_.data(), idx.as<int64_t>(), 1, st.B_, n,
              static_cast<size_t>(st.S_), s);
  gather_rows(out->seen_.data(), st.seen_.data(), idx.as<int64_t>(), 1, st.B_, n, static_cast<size_t>(m_.V), s);
  sync(s);  // before idx is freed
  return out;
}

void CudaDecoder::download(const CudaDecoderState& st, void* k, void* v, uint8_t* key_mask) const {
  check_owner(st);
  const StreamHandle s = stream();
  to_host(k, st.k_.data(), st.k_.bytes(), s);
  to_host(v, st.v_.data(), st.v_.bytes(), s);
  to_host(key_mask, st.key_mask_.data(), st.key_mask_.bytes(), s);
  sync(s);
}

}  // namespace pyclvp::cuda
