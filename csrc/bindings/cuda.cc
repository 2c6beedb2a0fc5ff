// register_cuda(m): pyclvp._core.cuda, the CUDA backend's bindings. Compiled only with
// PYCLVP_WITH_CUDA (CMakeLists.txt; without it this file is empty and _core has no `cuda`).
//
//   Weight(w)                      a (Cout, Cin) weight uploaded once: C order is nn.Linear's layout, Fortran
//                                  order a transposed Conv1D weight (transposed on upload); f32 / f16 / uint16
//                                  (bfloat16 bits). pyclvp/ops/cuda_ops.py keeps one per weight array.
//   linear(x, weight, b), layer_norm, rms_norm, group_norm, gelu_new, gelu, gated_gelu, softmax, rotary,
//   attention, conv1d, conv_transpose1d, leaky_relu
//                                  the ops of pyclvp/ops/numpy_ops.py with the arguments of pyclvp._core's CPU
//                                  ops (csrc/bindings/ops.cc): host arrays in, a new host array out
//   DecoderSession(config, weights, use_graph)  the fused decoder (csrc/cuda/decoder_step.h), weights uploaded once;
//                                  use_graph: replay each state's step as a CUDA graph (else eager launches)
//     .new_state(batch, max_len, cache_dtype) -> DecoderState (the KV cache, on the device)
//     .prefill(state, inputs_embeds, attention_mask) -> logits (B, V)
//     .step(state, input_ids, position_ids) -> logits (B, V)
//     .step_pick(state, input_ids, position_ids, pick, u) -> next tokens (B,) int64, chosen on the device
//     .pick_first(state, logits, start, pick, u) -> next tokens (B,): the first choice, from the prefill's logits
//     .select(state, rows) -> DecoderState     .download(state) -> (k, v, key_mask) host copies
//
// Order inside every call: the arguments are checked (ValueError naming the argument: the CPU bindings'
// own checks, csrc/bindings/op_args.h and decoder_model.h), then require_device() (RuntimeError "no CUDA device"),
// then the device work with the GIL released. The ops run on the legacy default stream and
// synchronize before returning; each decoder session has its own stream.
#ifdef PYCLVP_WITH_CUDA
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/decoder_model.h"
#include "bindings/op_args.h"
#include "cpu/decoder_step.h"
#include "cuda/decoder_step.h"
#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/memory.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

using cuda::DeviceBuffer;
constexpr cuda::StreamHandle kOps = nullptr;  // the ops' stream: the legacy default stream

py::array_t<float> empty(std::vector<py::ssize_t> shape) { return py::array_t<float>(shape); }

// An array's memory as plain pointer + size, taken while the GIL is held (py::array's size
// accessors touch Python objects), so the device work can run without it.
struct Host {
  const void* data = nullptr;
  size_t bytes = 0;
};
Host host(const py::array& a) { return {a.data(), static_cast<size_t>(a.nbytes())}; }
struct Out {
  void* data = nullptr;
  size_t bytes = 0;
};
Out out(py::array& a) { return {a.mutable_data(), static_cast<size_t>(a.nbytes())}; }

DeviceBuffer upload(const Host& h, const char* what) {  // h.data == nullptr: an empty buffer (an absent bias)
  if (!h.data) return DeviceBuffer();
  DeviceBuffer d(h.bytes, what);
  cuda::to_device(d.data(), h.data, h.bytes, kOps);
  return d;
}

void download(const Out& o, const DeviceBuffer& d) {  // the call's last step
  cuda::to_host(o.data, d.data(), o.bytes, kOps);
  cuda::sync(kOps);
}

// ---------------------------------------------------------------------------------------------
// Weight

class Weight {
 public:
  explicit Weight(const py::handle& w_) {
    PYCLVP_CHECK(py::isinstance<py::array>(w_) && py::reinterpret_borrow<py::array>(w_).ndim() == 2,
                 "w must be a 2-D numpy array");
    py::array w = py::reinterpret_borrow<py::array>(w_);
    const int64_t Cout = w.shape(0), Cin = w.shape(1);
    const cpu::WeightView v = weight(w, "w", Cout, Cin);
    cuda::require_device();
    py::gil_scoped_release nogil;
    m_ = cuda::upload_matrix({v.data, v.dtype, v.kn, Cout, Cin}, kOps, "a linear weight");
    cuda::sync(kOps);
  }
  const cuda::DeviceMatrix& matrix() const { return m_; }
  py::tuple shape() const { return py::make_tuple(m_.rows, m_.cols); }
  std::string dtype() const { return m_.dtype == DType::F32 ? "float32" : m_.dtype == DType::F16 ? "float16" : "bfloat16"; }

 private:
  cuda::DeviceMatrix m_;
};

// ---------------------------------------------------------------------------------------------
// Ops

// linear(x (N, Cin), weight (Cout, Cin), b (Cout,) | None) -> (N, Cout)
py::array_t<float> linear(const py::handle& x_, const Weight& w, const py::handle& b_) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), Cin = x.shape(1), Cout = w.matrix().rows;
  PYCLVP_CHECK(w.matrix().cols == Cin, "x has shape ", shape_str(x), " but the weight is (", Cout, ", ",
               w.matrix().cols, ")");
  const float* b = optional_f32(b_, "b", {Cout});
  auto y = empty({N, Cout});
  const Host hx = host(x), hb{b, static_cast<size_t>(Cout) * 4};
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), db = upload(hb, "b"), dy(oy.bytes, "y");
  cuda::LinearArgs a;
  a.y = dy.as<float>(), a.x = dx.as<float>(), a.w = w.matrix().buf.data(), a.w_dtype = w.matrix().dtype;
  a.b = db.as<float>(), a.N = N, a.Cin = Cin, a.Cout = Cout, a.ldx = Cin, a.ldy = Cout;
  cuda::linear(a, kOps);
  download(oy, dy);
  return y;
}

// layer_norm(x (N, C), g (C,), b (C,), eps) -> (N, C)
py::array_t<float> layer_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, float eps) {
  const NormArgs in = layer_norm_args(x_, g_, b_);
  auto y = empty({in.N, in.C});
  const Host hx = host(in.x), hg = host(in.g), hb = host(in.b);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dg = upload(hg, "g"), db = upload(hb, "b"), dy(oy.bytes, "y");
  cuda::layer_norm(dy.as<float>(), dx.as<float>(), in.C, dg.as<float>(), db.as<float>(), eps, in.N, in.C, kOps);
  download(oy, dy);
  return y;
}

// rms_norm(x (N, C), g (C,), eps, clamp) -> (N, C)
py::array_t<float> rms_norm(const py::handle& x_, const py::handle& g_, float eps, bool clamp) {
  const NormArgs in = rms_norm_args(x_, g_);
  auto y = empty({in.N, in.C});
  const Host hx = host(in.x), hg = host(in.g);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dg = upload(hg, "g"), dy(oy.bytes, "y");
  cuda::rms_norm(dy.as<float>(), dx.as<float>(), dg.as<float>(), eps, clamp, in.N, in.C, kOps);
  download(oy, dy);
  return y;
}

// group_norm(x (B, C, T), g (C,), b (C,), groups, eps) -> (B, C, T)
py::array_t<float> group_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, int64_t groups,
                              float eps) {
  const GroupNormArgs in = group_norm_args(x_, g_, b_, groups);
  auto y = empty({in.B, in.C, in.T});
  const Host hx = host(in.x), hg = host(in.g), hb = host(in.b);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dg = upload(hg, "g"), db = upload(hb, "b"), dy(oy.bytes, "y");
  cuda::group_norm(dy.as<float>(), dx.as<float>(), dg.as<float>(), db.as<float>(), in.G, eps, in.B, in.C, in.T, kOps);
  download(oy, dy);
  return y;
}

// gelu_new(x) / gelu(x): elementwise, any shape
template <int Which>
py::array_t<float> elementwise(const py::handle& x_) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t n = x.size();
  const Host hx = host(x);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  if constexpr (Which == 0) cuda::gelu_new(dy.as<float>(), dx.as<float>(), n, kOps);
  else cuda::gelu(dy.as<float>(), dx.as<float>(), n, kOps);
  download(oy, dy);
  return y;
}

// gated_gelu(x (N, 2F)) -> (N, F)
py::array_t<float> gated_gelu(const py::handle& x_) {
  const RowsArgs in = gated_gelu_args(x_);
  auto y = empty({in.N, in.C / 2});
  const Host hx = host(in.x);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  cuda::gated_gelu(dy.as<float>(), dx.as<float>(), in.N, in.C / 2, kOps);
  download(oy, dy);
  return y;
}

// softmax(x (N, C)) over the last axis -> (N, C)
py::array_t<float> softmax(const py::handle& x_) {
  const RowsArgs in = softmax_args(x_);
  auto y = empty({in.N, in.C});
  const Host hx = host(in.x);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  cuda::softmax(dy.as<float>(), dx.as<float>(), in.N, in.C, kOps);
  download(oy, dy);
  return y;
}

// rotary(x (M, T, D), cos (T, R), sin (T, R)) -> (M, T, D)
py::array_t<float> rotary(const py::handle& x_, const py::handle& cos_, const py::handle& sin_) {
  const RotaryArgs in = rotary_args(x_, cos_, sin_);
  auto y = empty({in.M, in.T, in.D});
  const Host hx = host(in.x), hc = host(in.cos), hs = host(in.sin);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dc = upload(hc, "cos"), ds = upload(hs, "sin"), dy(oy.bytes, "y");
  cuda::rotary(dy.as<float>(), dx.as<float>(), dc.as<float>(), ds.as<float>(), in.M, in.T, in.D, in.R, kOps);
  download(oy, dy);
  return y;
}

// attention(q (B,H,T,D), k (B,H,S,D), v (B,H,S,D), mask (B|1, 1, T|1, S) | None, scale, causal) -> (B,H,T,D)
py::array_t<float> attention(const py::handle& q_, const py::handle& k_, const py::handle& v_, const py::handle& mask_,
                             float scale, bool causal) {
  const AttentionInputs in = attention_args(q_, k_, v_, mask_);
  PYCLVP_CHECK(in.D <= cuda::kAttentionMaxD, "the head dim D = ", in.D, " exceeds the CUDA attention kernel's limit ",
               cuda::kAttentionMaxD);
  cuda::AttentionArgs a;
  set_attention_layout(a, in, scale, causal);
  auto o = empty({in.B, in.H, in.T, in.D});
  const Host hq = host(in.q), hk = host(in.k), hv = host(in.v), hm = in.masked ? host(in.mask) : Host{};
  const Out oo = out(o);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dq = upload(hq, "q"), dk = upload(hk, "k"), dv = upload(hv, "v"), dm = upload(hm, "mask");
  DeviceBuffer dout(oo.bytes, "out");
  a.q = dq.as<float>(), a.k = dk.data(), a.v = dv.data(), a.out = dout.as<float>(), a.mask = dm.as<float>();
  cuda::attention(a, kOps);
  download(oo, dout);
  return o;
}

// conv1d(x (B, Cin, T), w (Cout, Cin, K), b | None, stride, padding, dilation) -> (B, Cout, To)
// conv_transpose1d(x (B, Cin, T), w (Cin, Cout, K), b | None, stride, padding, output_padding, dilation) -> (B, Cout, To)
template <bool Transposed>
py::array_t<float> conv(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                        int64_t padding, int64_t output_padding, int64_t dilation) {
  const ConvInputs in = conv_args(x_, w_, b_, stride, padding, dilation, output_padding, Transposed);
  const cpu::ConvArgs& c = in.a;
  auto y = empty({c.B, c.Cout, c.To});
  const Host hx = host(in.x), hw = host(in.w), hb = in.biased ? host(in.b) : Host{};
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dw = upload(hw, "w"), db = upload(hb, "b"), dy(oy.bytes, "y");
  cuda::ConvArgs a;
  a.y = dy.as<float>(), a.x = dx.as<float>(), a.w = dw.as<float>(), a.b = in.biased ? db.as<float>() : nullptr;
  a.B = c.B, a.Cin = c.Cin, a.Cout = c.Cout, a.T = c.T, a.K = c.K, a.To = c.To;
  a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation, a.output_padding = c.output_padding;
  if constexpr (Transposed) cuda::conv_transpose1d(a, kOps);
  else cuda::conv1d(a, kOps);
  download(oy, dy);
  return y;
}

py::array_t<float> conv1d(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                          int64_t padding, int64_t dilation) {
  return conv<false>(x_, w_, b_, stride, padding, 0, dilation);
}

// leaky_relu(x, slope): elementwise, any shape
py::array_t<float> leaky_relu(const py::handle& x_, float slope) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t n = x.size();
  const Host hx = host(x);
  const Out oy = out(y);
  cuda::require_device();
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  cuda::leaky_relu(dy.as<float>(), dx.as<float>(), n, slope, kOps);
  download(oy, dy);
  return y;
}

// ---------------------------------------------------------------------------------------------
// The fused decoder

DType cache_dtype(const std::string& name) {
  if (name == "float32") return DType::F32;
  if (name == "float16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  fail(__func__, "unknown cache dtype '", name, "'; choose float32, float16 or bfloat16");
}

py::dtype numpy_dtype(DType dt) {
  return dt == DType::F32 ? py::dtype::of<float>() : dt == DType::F16 ? py::dtype("float16") : py::dtype::of<uint16_t>();
}

// A step's checked ids and positions (decoder_model.h), for a state of B rows with room for one more.
StepInputs step_inputs(const cuda::DeviceModel& m, const cuda::CudaDecoderState& st, const py::handle& ids,
                       const py::handle& pos) {
  StepInputs in(ids, pos, st.batch(), m.V, m.P);
  PYCLVP_CHECK(st.length() + 1 <= st.max_len(), "the cache holds ", st.max_len(),
               " positions: cannot write 1 more after length ", st.length());
  return in;
}

// The device token choice's options: a dict with penalty, suppress, do_sample, temperature, top_k,
// top_p (None or in (0, 1]); pyclvp/ops/cuda_decoder.py builds it from GenerationOptions.
cuda::Pick pick_options(const py::dict& d, int64_t V) {
  for (const char* key : {"penalty", "suppress", "do_sample", "temperature", "top_k", "top_p"})
    PYCLVP_CHECK(d.contains(key), "pick options are missing '", key, "'");
  cuda::Pick p;
  const double penalty = d["penalty"].cast<double>(), temperature = d["temperature"].cast<double>();
  p.suppress = d["suppress"].cast<int64_t>(), p.do_sample = d["do_sample"].cast<bool>(), p.top_k = d["top_k"].cast<int64_t>();
  PYCLVP_CHECK(penalty > 0, "penalty must be > 0, got ", penalty);  // as GenerationOptions (NaN fails too)
  PYCLVP_CHECK(!p.do_sample || temperature > 0, "temperature must be > 0 when sampling, got ", temperature);
  PYCLVP_CHECK(p.suppress >= -1 && p.suppress < V, "suppress must be -1 or a token id in [0, ", V, "), got ", p.suppress);
  PYCLVP_CHECK(p.top_k >= 0, "top_k must be >= 0, got ", p.top_k);
  p.penalty = static_cast<float>(penalty), p.temperature = static_cast<float>(temperature);
  if (!d["top_p"].is_none()) {
    const double top_p = d["top_p"].cast<double>();
    PYCLVP_CHECK(top_p > 0 && top_p <= 1, "top_p must lie in (0, 1], got ", top_p);
    p.top_p = top_p < 1, p.top_p_remove = static_cast<float>(1 - top_p);  // as generate.apply_top_p: float32(1 - p)
  }
  return p;
}

// u: (B,) float64 in [0, 1) when sampling (else ignored; may be None).
const double* uniforms(const py::handle& obj, const cuda::Pick& pick, int64_t B) {
  if (!pick.do_sample) return nullptr;
  PYCLVP_CHECK(py::isinstance<py::array>(obj), "u must be a numpy float64 array when sampling");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.dtype().is(py::dtype::of<double>()) && c_contiguous(a) && a.ndim() == 1 && a.shape(0) == B,
               "u must be a C-contiguous float64 array of shape (", B, ",), got ", std::string(py::str(a.dtype())), " ",
               shape_str(a));
  const auto* u = static_cast<const double*>(a.data());
  for (int64_t b = 0; b < B; ++b) PYCLVP_CHECK(u[b] >= 0 && u[b] < 1, "u[", b, "] = ", u[b], " is outside [0, 1)");
  return u;
}

class DecoderSession {
 public:
  DecoderSession(const py::dict& config, const py::dict& weights, bool use_graph) {
    const cpu::DecoderModel host = read_decoder_model(config, weights);  // points into `weights`
    py::gil_scoped_release nogil;
    dec_ = std::make_unique<cuda::CudaDecoder>(host, use_graph);
  }

  std::unique_ptr<cuda::CudaDecoderState> new_state(int64_t batch, int64_t max_len, const std::string& dtype) {
    const DType dt = cache_dtype(dtype);
    PYCLVP_CHECK(batch >= 1 && max_len >= 1, "new_state needs batch >= 1 and max_len >= 1, got ", batch, " and ", max_len);
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    return dec_->new_state(batch, max_len, dt);
  }

  py::array_t<float> prefill(cuda::CudaDecoderState& st, const py::handle& embeds_, const py::handle& mask_) {
    const cuda::DeviceModel& m = dec_->model();
    py::array embeds = f32(embeds_, "inputs_embeds", {}, 3);
    const int64_t B = st.batch(), T = embeds.shape(1);
    PYCLVP_CHECK(embeds.shape(0) == B && embeds.shape(2) == m.C, "inputs_embeds has shape ", shape_str(embeds),
                 ", expected (", B, ", T, ", m.C, ") for a state of ", B, " rows");
    PYCLVP_CHECK(T >= 1, "inputs_embeds has no positions");
    PYCLVP_CHECK(st.length() + T <= st.max_len(), "the cache holds ", st.max_len(), " positions: cannot write ", T,
                 " more after length ", st.length());
    std::vector<uint8_t> mask(static_cast<size_t>(B * T), 1);
    if (!mask_.is_none()) {
      PYCLVP_CHECK(py::isinstance<py::array>(mask_), "attention_mask must be a numpy bool array or None");
      py::array a = py::reinterpret_borrow<py::array>(mask_);
      PYCLVP_CHECK(a.dtype().is(py::dtype::of<bool>()) && c_contiguous(a) && a.ndim() == 2 && a.shape(0) == B &&
                       a.shape(1) == T,
                   "attention_mask must be a C-contiguous bool array of shape (", B, ", ", T, "), got ",
                   std::string(py::str(a.dtype())), " ", shape_str(a));
      std::memcpy(mask.data(), a.data(), mask.size());
    }
    auto logits = empty({B, m.V});
    float* out = logits.mutable_data();
    const float* src = f32_ptr(embeds);
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    dec_->prefill(st, src, mask.data(), T, out);
    return logits;
  }

  py::array_t<float> step(cuda::CudaDecoderState& st, const py::handle& ids_, const py::handle& pos_) {
    const StepInputs in = step_inputs(dec_->model(), st, ids_, pos_);
    auto logits = empty({st.batch(), dec_->model().V});
    float* out = logits.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    dec_->step(st, in.ids, in.pos, out);
    return logits;
  }

  py::array_t<int64_t> step_pick(cuda::CudaDecoderState& st, const py::handle& ids_, const py::handle& pos_,
                                 const py::dict& pick_, const py::handle& u_) {
    const StepInputs in = step_inputs(dec_->model(), st, ids_, pos_);
    const cuda::Pick pick = pick_options(pick_, dec_->model().V);
    const double* u = uniforms(u_, pick, st.batch());
    py::array_t<int64_t> next(st.batch());
    int64_t* out = next.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    dec_->step(st, in.ids, in.pos, pick, u, out);
    return next;
  }

  py::array_t<int64_t> pick_first(cuda::CudaDecoderState& st, const py::handle& logits_, int64_t start,
                                  const py::dict& pick_, const py::handle& u_) {
    const int64_t B = st.batch(), V = dec_->model().V;
    const float* logits = f32_ptr(f32(logits_, "logits", {B, V}));
    PYCLVP_CHECK(start >= 0 && start < V, "start token ", start, " is outside the vocabulary [0, ", V, ")");
    const cuda::Pick pick = pick_options(pick_, V);
    const double* u = uniforms(u_, pick, B);
    py::array_t<int64_t> next(B);
    int64_t* out = next.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    dec_->pick_first(st, logits, start, pick, u, out);
    return next;
  }

  std::unique_ptr<cuda::CudaDecoderState> select(const cuda::CudaDecoderState& st, const py::handle& rows_) {
    py::array rows = int64_vector(rows_, "rows", -1);
    const int64_t n = rows.shape(0);
    PYCLVP_CHECK(n >= 1, "select needs at least one row");
    const auto* r = static_cast<const int64_t*>(rows.data());
    for (int64_t i = 0; i < n; ++i)
      PYCLVP_CHECK(r[i] >= 0 && r[i] < st.batch(), "rows[", i, "] = ", r[i], " is outside [0, ", st.batch(), ")");
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    return dec_->select(st, r, n);
  }

  py::tuple download(const cuda::CudaDecoderState& st) {
    const cuda::DeviceModel& m = dec_->model();
    const std::vector<py::ssize_t> shape{m.L, st.batch(), m.H, st.max_len(), m.D};
    py::array k(numpy_dtype(st.dtype()), shape), v(numpy_dtype(st.dtype()), shape);
    py::array_t<bool> km(std::vector<py::ssize_t>{st.batch(), st.max_len()});
    void *kp = k.mutable_data(), *vp = v.mutable_data();
    auto* kmp = reinterpret_cast<uint8_t*>(km.mutable_data());
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      dec_->download(st, kp, vp, kmp);
    }
    return py::make_tuple(k, v, km);
  }

 private:
  std::unique_ptr<cuda::CudaDecoder> dec_;
  std::mutex mu_;  // one call at a time per session (one stream)
};

std::string dtype_name(DType dt) { return dt == DType::F32 ? "float32" : dt == DType::F16 ? "float16" : "bfloat16"; }

}  // namespace

void register_cuda(py::module_& m) {
  auto c = m.def_submodule("cuda", "the CUDA backend's kernels and fused decoder; use pyclvp.ops.get_ops('cuda')");
  c.def("device_count", &cuda::device_count, "CUDA devices the runtime reports (0 without a driver)");

  py::class_<Weight>(c, "Weight", "a (Cout, Cin) weight matrix uploaded to the device once")
      .def(py::init<const py::handle&>(), py::arg("w"))
      .def_property_readonly("shape", &Weight::shape)
      .def_property_readonly("dtype", &Weight::dtype);
  c.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("b") = py::none(),
        "x (N, Cin) f32, weight: a Weight (Cout, Cin), b (Cout,) | None -> (N, Cout)");
  c.def("layer_norm", &layer_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("eps"), "x (N, C), g (C,), b (C,) -> (N, C)");
  c.def("rms_norm", &rms_norm, py::arg("x"), py::arg("g"), py::arg("eps"), py::arg("clamp") = false,
        "x (N, C), g (C,) -> (N, C); clamp: Tortoise's RMSNorm (norm clamped at eps) instead of transformers'");
  c.def("group_norm", &group_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("groups"), py::arg("eps"),
        "x (B, C, T), g (C,), b (C,) -> (B, C, T)");
  c.def("gelu_new", &elementwise<0>, py::arg("x"), "elementwise GPT-2 tanh GELU, any shape (C order)");
  c.def("gelu", &elementwise<1>, py::arg("x"), "elementwise exact (erf) GELU, any shape (C order)");
  c.def("gated_gelu", &gated_gelu, py::arg("x"), "x (N, 2F) -> x[:, :F] * gelu(x[:, F:]) (N, F)");
  c.def("softmax", &softmax, py::arg("x"), "x (N, C) -> softmax over the last axis (N, C)");
  c.def("rotary", &rotary, py::arg("x"), py::arg("cos"), py::arg("sin"), "x (M, T, D), cos/sin (T, R) -> (M, T, D)");
  c.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
        py::arg("scale") = 1.0f, py::arg("causal") = false,
        "q (B,H,T,D), k/v (B,H,S,D), additive mask (B|1,1,T|1,S) -> (B,H,T,D); D <= 128");
  c.def("conv1d", &conv1d, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("dilation") = 1,
        "x (B, Cin, T), w (Cout, Cin, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv1d, groups=1");
  c.def("conv_transpose1d", &conv<true>, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("output_padding") = 0, py::arg("dilation") = 1,
        "x (B, Cin, T), w (Cin, Cout, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv_transpose1d, groups=1");
  c.def("leaky_relu", &leaky_relu, py::arg("x"), py::arg("slope") = 0.01f, "elementwise x > 0 ? x : x * slope, any shape");

  py::class_<cuda::CudaDecoderState>(c, "DecoderState", "a batch's KV cache on the device (see DecoderSession)")
      .def_property_readonly("batch", &cuda::CudaDecoderState::batch)
      .def_property_readonly("max_len", &cuda::CudaDecoderState::max_len)
      .def_property_readonly("length", &cuda::CudaDecoderState::length)
      .def_property_readonly("cache_dtype", [](const cuda::CudaDecoderState& s) { return dtype_name(s.dtype()); });
  py::class_<DecoderSession>(c, "DecoderSession",
                             "the fused KV-cached CLVP speech decoder on the device; see csrc/bindings/cuda.cc")
      .def(py::init<const py::dict&, const py::dict&, bool>(), py::arg("config"), py::arg("weights"),
           py::arg("use_graph") = true)
      .def("new_state", &DecoderSession::new_state, py::arg("batch"), py::arg("max_len"), py::arg("cache_dtype"),
           py::keep_alive<0, 1>())
      .def("prefill", &DecoderSession::prefill, py::arg("state"), py::arg("inputs_embeds"), py::arg("attention_mask"))
      .def("step", &DecoderSession::step, py::arg("state"), py::arg("input_ids"), py::arg("position_ids"))
      .def("step_pick", &DecoderSession::step_pick, py::arg("state"), py::arg("input_ids"), py::arg("position_ids"),
           py::arg("pick"), py::arg("u"))
      .def("pick_first", &DecoderSession::pick_first, py::arg("state"), py::arg("logits"), py::arg("start"),
           py::arg("pick"), py::arg("u"))
      .def("select", &DecoderSession::select, py::arg("state"), py::arg("rows"), py::keep_alive<0, 1>())
      .def("download", &DecoderSession::download, py::arg("state"));
}

}  // namespace pyclvp::bind
#endif  // PYCLVP_WITH_CUDA
