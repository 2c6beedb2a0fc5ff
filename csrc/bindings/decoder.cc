// register_decoder(m): DecoderSession, the fused KV-cached speech decoder (csrc/cpu/decoder_step.h).
//
//   s = DecoderSession(config, weights)       config: {"L","C","H","F","V","P","eps"}; weights: checkpoint
//                                             key (relative to `speech_decoder_model.`) -> array; held as read-only
//                                             views (not copied): see HeldArrays in arrays.h
//   s.prefill(embeds, mask, k, v, key_mask, length) -> logits (B, V)   embeds (B, T, C) f32; mask (B, T) bool | None
//   s.step(ids, pos, k, v, key_mask, length)        -> logits (B, V)   ids, pos (B,) int64
//   s.latent()                                      -> (B, C): the last prefill's / step's final-normed hidden
//                                                      state of each row's last position (what lm_head read)
//
// k, v, key_mask are the caller's cache arrays (pyclvp/ops/cpu_ops.py CpuDecoderState): k, v
// (L, B, H, S, D) float32 / float16 / uint16 (bfloat16 bits), key_mask (B, S) bool. A call writes
// positions [length, length + T) of them (key_mask from `mask`, or true) and leaves the rest alone.
// Weight matrices may be float32, float16 or uint16 (bfloat16 bits), in either layout (see arrays.h), or int8 with
// their scales under key + "_scale" (decoder_model.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/decoder_model.h"
#include "cpu/decoder_step.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

class DecoderSession {
 public:
  DecoderSession(const py::dict& config, const py::dict& weights)
      : m_(read_decoder_model(config, weights, &held_, /*int8=*/true)) {}

  py::array_t<float> prefill(const py::handle& embeds_, const py::handle& mask_, const py::handle& k_,
                             const py::handle& v_, const py::handle& key_mask_, int64_t length) {
    held_.verify();
    py::array embeds = f32(embeds_, "inputs_embeds", {}, 3);
    const int64_t B = embeds.shape(0), T = embeds.shape(1);
    PYCLVP_CHECK(embeds.shape(2) == m_.C, "inputs_embeds has shape ", shape_str(embeds), ", expected (B, T, ", m_.C, ")");
    PYCLVP_CHECK(T >= 1, "inputs_embeds has no positions");
    cpu::KVCache cache = check_cache(k_, v_, key_mask_, B, length, T);
    if (!mask_.is_none()) {
      PYCLVP_CHECK(py::isinstance<py::array>(mask_), "attention_mask must be a numpy bool array or None");
      py::array mask = py::reinterpret_borrow<py::array>(mask_);
      PYCLVP_CHECK(mask.dtype().is(py::dtype::of<bool>()) && c_contiguous(mask) && mask.ndim() == 2 &&
                       mask.shape(0) == B && mask.shape(1) == T,
                   "attention_mask must be a C-contiguous bool array of shape (", B, ", ", T, "), got ",
                   std::string(py::str(mask.dtype())), " ", shape_str(mask));
      const auto* src = static_cast<const uint8_t*>(mask.data());
      for (int64_t b = 0; b < B; ++b) std::memcpy(cache.key_mask + b * cache.S + length, src + b * T, T);
    } else {
      for (int64_t b = 0; b < B; ++b) std::memset(cache.key_mask + b * cache.S + length, 1, T);
    }
    py::array_t<float> logits(std::vector<py::ssize_t>{B, m_.V});
    float* out = logits.mutable_data();
    const float* src = f32_ptr(embeds);
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    scratch_.x.assign(src, src + B * T * m_.C);
    cpu::decoder_forward(cpu::active_isa(), m_, cache, length, T, scratch_, out);
    last_rows_ = B;
    return logits;
  }

  py::array_t<float> latent() {
    std::lock_guard<std::mutex> lock(mu_);
    PYCLVP_CHECK(last_rows_ > 0, "no prefill or step has run on this session yet");
    py::array_t<float> out(std::vector<py::ssize_t>{last_rows_, m_.C});
    std::memcpy(out.mutable_data(), scratch_.last.data(), static_cast<size_t>(last_rows_ * m_.C) * sizeof(float));
    return out;
  }

  py::array_t<float> step(const py::handle& ids_, const py::handle& pos_, const py::handle& k_, const py::handle& v_,
                          const py::handle& key_mask_, int64_t length) {
    held_.verify();
    const StepInputs in(ids_, pos_, -1, m_.V, m_.P);
    const int64_t B = in.B;
    const int64_t *idp = in.ids, *pp = in.pos;
    cpu::KVCache cache = check_cache(k_, v_, key_mask_, B, length, 1);
    for (int64_t b = 0; b < B; ++b) cache.key_mask[b * cache.S + length] = 1;
    py::array_t<float> logits(std::vector<py::ssize_t>{B, m_.V});
    float* out = logits.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    scratch_.x.resize(B * m_.C);
    cpu::decoder_embed(cpu::active_isa(), m_, idp, pp, B, scratch_.x.data());
    cpu::decoder_forward(cpu::active_isa(), m_, cache, length, 1, scratch_, out);
    last_rows_ = B;
    return logits;
  }

 private:
  // The caller's cache arrays: shapes, dtypes, writability, and room for T more positions.
  cpu::KVCache check_cache(const py::handle& k_, const py::handle& v_, const py::handle& km_, int64_t B, int64_t length,
                           int64_t T) {
    PYCLVP_CHECK(py::isinstance<py::array>(k_) && py::isinstance<py::array>(v_) && py::isinstance<py::array>(km_),
                 "the cache (k, v, key_mask) must be numpy arrays");
    py::array k = py::reinterpret_borrow<py::array>(k_), v = py::reinterpret_borrow<py::array>(v_),
              km = py::reinterpret_borrow<py::array>(km_);
    PYCLVP_CHECK(k.ndim() == 5 && k.shape(0) == m_.L && k.shape(1) == B && k.shape(2) == m_.H && k.shape(4) == m_.D,
                 "cache k has shape ", shape_str(k), ", expected (L=", m_.L, ", B=", B, ", H=", m_.H, ", S, D=", m_.D, ")");
    const int64_t S = k.shape(3);
    PYCLVP_CHECK(v.ndim() == 5 && v.shape(0) == m_.L && v.shape(1) == B && v.shape(2) == m_.H && v.shape(3) == S &&
                     v.shape(4) == m_.D,
                 "cache v has shape ", shape_str(v), ", expected the shape of k ", shape_str(k));
    PYCLVP_CHECK(k.dtype().is(v.dtype()), "cache k and v must have the same dtype");
    cpu::KVCache c;
    c.dtype = weight_dtype(k, "cache k");
    PYCLVP_CHECK(c_contiguous(k) && c_contiguous(v) && k.writeable() && v.writeable(),
                 "cache k and v must be writeable C-contiguous arrays");
    PYCLVP_CHECK(km.dtype().is(py::dtype::of<bool>()) && km.ndim() == 2 && km.shape(0) == B && km.shape(1) == S &&
                     c_contiguous(km) && km.writeable(),
                 "cache key_mask must be a writeable C-contiguous bool array of shape (", B, ", ", S, "), got ",
                 std::string(py::str(km.dtype())), " ", shape_str(km));
    PYCLVP_CHECK(length >= 0 && length <= S && T <= S - length, "the cache holds ", S, " positions: cannot write ", T,
                 " more after length ", length);
    PYCLVP_CHECK(!overlap(k, v) && !overlap(k, km) && !overlap(v, km), "cache k, v and key_mask must not share memory");
    c.k = k.mutable_data(), c.v = v.mutable_data(), c.key_mask = static_cast<uint8_t*>(km.mutable_data());
    c.B = B, c.S = S;
    return c;
  }

  static bool overlap(const py::array& a, const py::array& b) {  // contiguous arrays: their byte ranges
    const char *a0 = static_cast<const char*>(a.data()), *b0 = static_cast<const char*>(b.data());
    return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
  }

  HeldArrays held_;  // exactly the arrays m_ points into, held (declared before m_: filled while m_ is built)
  cpu::DecoderModel m_;
  cpu::DecoderScratch scratch_;
  int64_t last_rows_ = 0;  // rows of the last call, whose latents scratch_.last holds
  std::mutex mu_;  // one call at a time per session (the scratch is shared)
};

}  // namespace

void register_decoder(py::module_& m) {
  py::class_<DecoderSession>(m, "DecoderSession",
                             "The fused KV-cached CLVP speech decoder; see csrc/bindings/decoder.cc for the contract")
      .def(py::init<const py::dict&, const py::dict&>(), py::arg("config"), py::arg("weights"))
      .def("prefill", &DecoderSession::prefill, py::arg("inputs_embeds"), py::arg("attention_mask"), py::arg("k"),
           py::arg("v"), py::arg("key_mask"), py::arg("length"))
      .def("step", &DecoderSession::step, py::arg("input_ids"), py::arg("position_ids"), py::arg("k"), py::arg("v"),
           py::arg("key_mask"), py::arg("length"))
      .def("latent", &DecoderSession::latent);
}

}  // namespace pyclvp::bind
