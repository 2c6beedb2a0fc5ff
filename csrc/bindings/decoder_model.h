// The speech decoder's arguments as both decoder bindings take them (csrc/bindings/decoder.cc for
// the CPU core, csrc/bindings/cuda_decoder.cc for the CUDA one): the model from (config, weights), and a
// step's token ids and positions. Every check raises ValueError naming the key or argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/arrays.h"
#include "cpu/decoder_step.h"

namespace pyclvp::bind {

// config: {"L","C","H","F","V","P","eps"}; weights: checkpoint key (relative to `speech_decoder_model.`)
// -> array. The model points into the arrays: with `held`, each array it points into is held there
// (HeldArrays, arrays.h); without, the caller keeps `weights` alive while the model is used.
// A matrix may be int8 (pyclvp/io/q8.py) when `int8` is true: the array under its key is q (Cout, Cin) int8 in
// either case (a Conv1D weight quantized transposed), its scales under the key + "_scale" (the name of
// pyclvp/io/q8.py SCALE_SUFFIX); a binding without int8 kernels (CUDA) refuses them.
// (Its checks name "decoder": inside the lambdas below, PYCLVP_CHECK's __func__ would be "operator()".)
inline cpu::DecoderModel read_decoder_model(const py::dict& config, const py::dict& weights,
                                           HeldArrays* held = nullptr, bool int8 = false) {
  auto number = [&](const char* key, bool integer) -> py::handle {  // an int (not a bool), or any real
    if (!config.contains(key)) fail("decoder", "config is missing '", key, "'");
    py::handle v = config[key];
    const bool is_int = PyIndex_Check(v.ptr()) && !py::isinstance<py::bool_>(v);
    if (!(is_int || (!integer && py::isinstance<py::float_>(v))))
      fail("decoder", "config '", key, "' must be ", integer ? "an integer" : "a number", ", got ",
           std::string(py::repr(v)));
    return v;
  };
  auto size = [&](const char* key) { return number(key, true).cast<int64_t>(); };
  cpu::DecoderModel m;
  m.L = size("L"), m.C = size("C"), m.H = size("H"), m.F = size("F"), m.V = size("V"), m.P = size("P");
  m.eps = number("eps", false).cast<float>();
  PYCLVP_CHECK(m.L >= 1 && m.C >= 1 && m.H >= 1 && m.F >= 1 && m.V >= 1 && m.P >= 1,
               "config sizes must be positive, got L=", m.L, " C=", m.C, " H=", m.H, " F=", m.F, " V=", m.V, " P=", m.P);
  PYCLVP_CHECK(m.C % m.H == 0, "hidden size C=", m.C, " must be divisible by the head count H=", m.H);
  m.D = m.C / m.H;

  auto obj = [&](const std::string& key, bool optional = false) -> py::handle {
    if (!weights.contains(key.c_str()) || weights[key.c_str()].is_none()) {
      if (!optional) fail("decoder", "weights is missing '", key, "'");
      return py::handle();
    }
    py::handle h = weights[key.c_str()];
    if (held && py::isinstance<py::array>(h)) held->hold(py::reinterpret_borrow<py::array>(h), key);
    return h;
  };
  auto vec = [&](const std::string& key, int64_t n, bool optional = false) -> const float* {
    py::handle h = obj(key, optional);
    return h ? f32_ptr(f32(h, key.c_str(), {n})) : nullptr;
  };
  auto q8_w = [&](const std::string& key, py::handle q, int64_t Cout, int64_t Cin) {
    if (!int8) fail("decoder", "weight '", key, "' is int8: this backend has no int8 kernels (load the model with float weights)");
    return q8_weight(q, obj(key + "_scale"), key, Cout, Cin);
  };
  auto linear_w = [&](const std::string& key, int64_t Cout, int64_t Cin) {
    py::handle h = obj(key);
    return is_int8(h) ? q8_w(key, h, Cout, Cin) : weight(h, key.c_str(), Cout, Cin);
  };
  auto conv_w = [&](const std::string& key, int64_t Cin, int64_t Cout) {
    py::handle h = obj(key);
    return is_int8(h) ? q8_w(key, h, Cout, Cin) : conv1d_weight(h, key.c_str(), Cin, Cout);
  };
  auto tab = [&](const std::string& key, int64_t rows, DType& dtype) {
    return table(obj(key), key.c_str(), rows, m.C, dtype).data();
  };

  const int64_t C = m.C, F = m.F;
  m.wte = tab("model.decoder.input_embeds_layer.weight", m.V, m.wte_dtype);
  m.wpe = tab("model.decoder.position_embeds_layer.weight", m.P, m.wpe_dtype);
  for (int64_t i = 0; i < m.L; ++i) {
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
    m.layers.push_back(l);
  }
  m.lnf_g = vec("model.decoder.layer_norm.weight", C), m.lnf_b = vec("model.decoder.layer_norm.bias", C);
  m.final_g = vec("final_norm.weight", C), m.final_b = vec("final_norm.bias", C);
  m.lm = linear_w("lm_head.weight", m.V, C), m.lm_b = vec("lm_head.bias", m.V);
  return m;
}

// A step's input_ids and position_ids: (B,) int64 each (B from the ids when B < 0), ids in [0, V),
// positions in [0, P).
struct StepInputs {
  StepInputs(const py::handle& ids_, const py::handle& pos_, int64_t B, int64_t V, int64_t P)
      : ids_a(int64_vector(ids_, "input_ids", B)), pos_a(int64_vector(pos_, "position_ids", ids_a.shape(0))) {
    this->B = ids_a.shape(0);
    ids = static_cast<const int64_t*>(ids_a.data()), pos = static_cast<const int64_t*>(pos_a.data());
    for (int64_t b = 0; b < this->B; ++b) {
      PYCLVP_CHECK(ids[b] >= 0 && ids[b] < V, "input_ids[", b, "] = ", ids[b], " is outside the vocabulary [0, ", V, ")");
      PYCLVP_CHECK(pos[b] >= 0 && pos[b] < P, "position_ids[", b, "] = ", pos[b],
                   " is outside the position table [0, ", P, ") (max_position_embeddings)");
    }
  }
  py::array ids_a, pos_a;
  int64_t B = 0;
  const int64_t* ids = nullptr;
  const int64_t* pos = nullptr;
};

}  // namespace pyclvp::bind
