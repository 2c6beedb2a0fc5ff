// register_decoder(m): DecoderSession, the fused KV-cached speech decoder (csrc/cpu/decoder_step.h).
//
//   s = DecoderSession(config, weights)       config: {"L","C","H","F","V","P","eps"}; weights: checkpoint
//                                             key (relative to `speech_decoder_model.`) -> array; kept alive, not copied
//   s.prefill(embeds, mask, k, v, key_mask, length) -> logits (B, V)   embeds (B, T, C) f32; mask (B, T) bool | None
//   s.step(ids, pos, k, v, key_mask, length)        -> logits (B, V)   ids, pos (B,) int64
//
// k, v, key_mask are the caller's cache arrays (pyclvp/ops/cpu_ops.py CpuDecoderState): k, v
// (L, B, H, S, D) float32 / float16 / uint16 (bfloat16 bits), key_mask (B, S) bool. A call writes
// positions [length, length + T) of them (key_mask from `mask`, or true) and leaves the rest alone.
// Weight matrices may be float32, float16 or uint16 (bfloat16 bits), in either layout (see arrays.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "cpu/decoder_step.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

class DecoderSession {
 public:
  DecoderSession(const py::dict& config, const py::dict& weights) : weights_(weights.attr("copy")()) {
    auto get = [&](const char* key) -> py::handle {
      PYCLVP_CHECK(config.contains(key), "config is missing '", key, "'");
      return config[key];
    };
    m_.L = get("L").cast<int64_t>(), m_.C = get("C").cast<int64_t>(), m_.H = get("H").cast<int64_t>();
    m_.F = get("F").cast<int64_t>(), m_.V = get("V").cast<int64_t>(), m_.P = get("P").cast<int64_t>();
    m_.eps = get("eps").cast<float>();
    PYCLVP_CHECK(m_.L >= 1 && m_.C >= 1 && m_.H >= 1 && m_.F >= 1 && m_.V >= 1 && m_.P >= 1,
                 "config sizes must be positive, got L=", m_.L, " C=", m_.C, " H=", m_.H, " F=", m_.F, " V=", m_.V, " P=", m_.P);
    PYCLVP_CHECK(m_.C % m_.H == 0, "hidden size C=", m_.C, " must be divisible by the head count H=", m_.H);
    m_.D = m_.C / m_.H;
    bind_weights();
  }

  py::array_t<float> prefill(const py::handle& embeds_, const py::handle& mask_, const py::handle& k_,
                             const py::handle& v_, const py::handle& key_mask_, int64_t length) {
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
    return logits;
  }

  py::array_t<float> step(const py::handle& ids_, const py::handle& pos_, const py::handle& k_, const py::handle& v_,
                          const py::handle& key_mask_, int64_t length) {
    py::array ids = int64_vector(ids_, "input_ids", -1);
    const int64_t B = ids.shape(0);
    py::array pos = int64_vector(pos_, "position_ids", B);
    const auto* idp = static_cast<const int64_t*>(ids.data());
    const auto* pp = static_cast<const int64_t*>(pos.data());
    for (int64_t b = 0; b < B; ++b) {
      PYCLVP_CHECK(idp[b] >= 0 && idp[b] < m_.V, "input_ids[", b, "] = ", idp[b], " is outside the vocabulary [0, ", m_.V, ")");
      PYCLVP_CHECK(pp[b] >= 0 && pp[b] < m_.P, "position_ids[", b, "] = ", pp[b],
                   " is outside the position table [0, ", m_.P, ") (max_position_embeddings)");
    }
    cpu::KVCache cache = check_cache(k_, v_, key_mask_, B, length, 1);
    for (int64_t b = 0; b < B; ++b) cache.key_mask[b * cache.S + length] = 1;
    py::array_t<float> logits(std::vector<py::ssize_t>{B, m_.V});
    float* out = logits.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    scratch_.x.resize(B * m_.C);
    cpu::decoder_embed(cpu::active_isa(), m_, idp, pp, B, scratch_.x.data());
    cpu::decoder_forward(cpu::active_isa(), m_, cache, length, 1, scratch_, out);
    return logits;
  }

 private:
  py::handle weight_obj(const std::string& key, bool optional = false) {
    if (!weights_.contains(key.c_str()) || weights_[key.c_str()].is_none()) {
      PYCLVP_CHECK(optional, "weights is missing '", key, "'");
      return py::handle();
    }
    return weights_[key.c_str()];
  }
  const float* vec(const std::string& key, int64_t n, bool optional = false) {
    py::handle h = weight_obj(key, optional);
    return h ? f32_ptr(f32(h, key.c_str(), {n})) : nullptr;
  }
  cpu::WeightView linear_w(const std::string& key, int64_t Cout, int64_t Cin) {
    return weight(weight_obj(key), key.c_str(), Cout, Cin);
  }
  cpu::WeightView conv_w(const std::string& key, int64_t Cin, int64_t Cout) {
    return conv1d_weight(weight_obj(key), key.c_str(), Cin, Cout);
  }

  void bind_weights() {
    const int64_t C = m_.C, F = m_.F;
    m_.wte = table(weight_obj("model.decoder.input_embeds_layer.weight"), "model.decoder.input_embeds_layer.weight", m_.V,
                   C, m_.wte_dtype).data();
    m_.wpe = table(weight_obj("model.decoder.position_embeds_layer.weight"), "model.decoder.position_embeds_layer.weight",
                   m_.P, C, m_.wpe_dtype).data();
    for (int64_t i = 0; i < m_.L; ++i) {
      const std::string p = "model.decoder.layers." + std::to_string(i) + ".";
      cpu::DecoderLayer l;
      l.ln1_g = vec(p + "input_layernorm.weight", C), l.ln1_b = vec(p + "input_layernorm.bias", C);
      l.q = linear_w(p + "attn.q_proj.weight", C, C), l.q_b = vec(p + "attn.q_proj.bias", C, true);
      l.k = linear_w(p + "attn.k_proj.weight", C, C), l.k_b = vec(p + "attn.k_proj.bias", C, true);
      l.v = linear_w(p + "attn.v_proj.weight", C, C), l.v_b = vec(p + "attn.v_proj.bias", C, true);
      l.o = linear_w(p + "attn.out_proj.weight", C, C), l.o_b = vec(p + "attn.out_proj.bias", C);
      l.ln2_g = vec(p + "post_attention_layernorm.weight", C), l.ln2_b = vec(p + "post_attention_layernorm.bias", C);
      l.fc = conv_w(p + "mlp.c_fc.weight", C, F), l.fc_b = vec(p + "mlp.c_fc.bias", F);
      l.proj = conv_w(p + "mlp.c_proj.weight", F, C), l.proj_b = vec(p + "mlp.c_proj.bias", C);
      m_.layers.push_back(l);
    }
    m_.lnf_g = vec("model.decoder.layer_norm.weight", C), m_.lnf_b = vec("model.decoder.layer_norm.bias", C);
    m_.final_g = vec("final_norm.weight", C), m_.final_b = vec("final_norm.bias", C);
    m_.lm = linear_w("lm_head.weight", m_.V, C), m_.lm_b = vec("lm_head.bias", m_.V);
  }

  static py::array int64_vector(const py::handle& obj, const char* name, int64_t n) {
    PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy int64 array");
    py::array a = py::reinterpret_borrow<py::array>(obj);
    PYCLVP_CHECK(a.dtype().is(py::dtype::of<int64_t>()) && c_contiguous(a) && a.ndim() == 1 && (n < 0 || a.shape(0) == n),
                 name, " must be a C-contiguous int64 array of shape (", n < 0 ? std::string("B") : std::to_string(n),
                 ",), got ", std::string(py::str(a.dtype())), " ", shape_str(a));
    return a;
  }

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
    PYCLVP_CHECK(length >= 0 && length + T <= S, "the cache holds ", S, " positions: cannot write ", T,
                 " more after length ", length);
    PYCLVP_CHECK(!(k.data() == v.data() && S * m_.D > 0), "cache k and v must be different arrays");
    c.k = k.mutable_data(), c.v = v.mutable_data(), c.key_mask = static_cast<uint8_t*>(km.mutable_data());
    c.B = B, c.S = S;
    return c;
  }

  py::dict weights_;  // keeps every bound array alive (the session holds raw pointers into them)
  cpu::DecoderModel m_;
  cpu::DecoderScratch scratch_;
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
           py::arg("key_mask"), py::arg("length"));
}

}  // namespace pyclvp::bind
