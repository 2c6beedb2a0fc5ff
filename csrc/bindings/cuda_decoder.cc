// register_cuda_decoder(c): pyclvp._core.cuda.DecoderSession, the fused decoder on the device (csrc/cuda/decoder_step.h);
// registered by register_cuda (bindings/cuda_ops.cc). Compiled only with PYCLVP_WITH_CUDA.
//
//   DecoderSession(config, weights, use_graph)  weights uploaded once; use_graph: replay each state's step as a
//                                  CUDA graph (else eager launches)
//     .new_state(batch, max_len, cache_dtype) -> DecoderState (the KV cache, on the device)
//     .prefill(state, inputs_embeds, attention_mask) -> logits (B, V)
//     .step(state, input_ids, position_ids) -> logits (B, V)
//     .latent(state) -> (B, C): the last prefill's / step's final-normed hidden states (each row's last position)
//     .step_pick(state, input_ids, position_ids, pick, u) -> next tokens (B,) int64, chosen on the device
//     .pick_first(state, logits, start, pick, u) -> next tokens (B,): the first choice, from the prefill's logits
//     .select(state, rows) -> DecoderState     .download(state) -> (k, v, key_mask) host copies
//
// Arguments are checked first (ValueError naming the argument: decoder_model.h, arrays.h), then the device
// work runs with the GIL released, one call at a time per session (its own stream).
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
#include "cpu/decoder_step.h"
#include "cuda/decoder_step.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

py::array_t<float> empty(std::vector<py::ssize_t> shape) { return py::array_t<float>(shape); }


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

  py::array_t<float> latent(cuda::CudaDecoderState& st) {
    auto out = empty({st.batch(), dec_->model().C});
    float* o = out.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    dec_->latent(st, o);
    return out;
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

void register_cuda_decoder(py::module_& c) {
  py::class_<cuda::CudaDecoderState>(c, "DecoderState", "a batch's KV cache on the device (see DecoderSession)")
      .def_property_readonly("batch", &cuda::CudaDecoderState::batch)
      .def_property_readonly("max_len", &cuda::CudaDecoderState::max_len)
      .def_property_readonly("length", &cuda::CudaDecoderState::length)
      .def_property_readonly("cache_dtype", [](const cuda::CudaDecoderState& s) { return dtype_name(s.dtype()); });
  py::class_<DecoderSession>(c, "DecoderSession",
                             "the fused KV-cached CLVP speech decoder on the device; see csrc/bindings/cuda_decoder.cc")
      .def(py::init<const py::dict&, const py::dict&, bool>(), py::arg("config"), py::arg("weights"),
           py::arg("use_graph") = true)
      .def("new_state", &DecoderSession::new_state, py::arg("batch"), py::arg("max_len"), py::arg("cache_dtype"),
           py::keep_alive<0, 1>())
      .def("prefill", &DecoderSession::prefill, py::arg("state"), py::arg("inputs_embeds"), py::arg("attention_mask"))
      .def("step", &DecoderSession::step, py::arg("state"), py::arg("input_ids"), py::arg("position_ids"))
      .def("latent", &DecoderSession::latent, py::arg("state"))
      .def("step_pick", &DecoderSession::step_pick, py::arg("state"), py::arg("input_ids"), py::arg("position_ids"),
           py::arg("pick"), py::arg("u"))
      .def("pick_first", &DecoderSession::pick_first, py::arg("state"), py::arg("logits"), py::arg("start"),
           py::arg("pick"), py::arg("u"))
      .def("select", &DecoderSession::select, py::arg("state"), py::arg("rows"), py::keep_alive<0, 1>())
      .def("download", &DecoderSession::download, py::arg("state"));
}

}  // namespace pyclvp::bind
#endif  // PYCLVP_WITH_CUDA
