// register_ops(m): the op bindings, one per pyclvp/ops/numpy_ops.py function, same name and
// argument order. Each checks its arrays (ValueError naming the argument), allocates the output,
// releases the GIL and dispatches to the active ISA's kernel. pyclvp/ops/cpu_ops.py is the
// Python side: it flattens leading dimensions and converts dtypes before calling these.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/arrays.h"
#include "common/threadpool.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

using cpu::CpuIsa;

py::array_t<float> empty(std::initializer_list<py::ssize_t> shape) { return py::array_t<float>(std::vector<py::ssize_t>(shape)); }

float* out_ptr(py::array_t<float>& a) { return a.mutable_data(); }

// linear(x (N, Cin), w (Cout, Cin), b (Cout,) | None) -> (N, Cout)
py::array_t<float> linear(const py::handle& x_, const py::handle& w_, const py::handle& b_) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), Cin = x.shape(1);
  PYCLVP_CHECK(py::isinstance<py::array>(w_) && py::reinterpret_borrow<py::array>(w_).ndim() == 2, "w must be a 2-D numpy array");
  const int64_t Cout = py::reinterpret_borrow<py::array>(w_).shape(0);
  cpu::LinearJob j;
  j.w = weight(w_, "w", Cout, Cin);
  j.b = optional_f32(b_, "b", {Cout});
  auto y = empty({N, Cout});
  j.y = out_ptr(y), j.x = f32_ptr(x), j.N = N, j.Cin = Cin, j.Cout = Cout, j.ldx = Cin, j.ldy = Cout;
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::linear<isa.value>(&j, 1); });
  return y;
}

// layer_norm(x (N, C), g (C,), b (C,), eps) -> (N, C)
py::array_t<float> layer_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, float eps) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), C = x.shape(1);
  const float* g = f32_ptr(f32(g_, "g", {C}));
  const float* b = f32_ptr(f32(b_, "b", {C}));
  auto y = empty({N, C});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::layer_norm<isa.value>(yp, f32_ptr(x), g, b, N, C, eps); });
  return y;
}

// rms_norm(x (N, C), g (C,), eps) -> (N, C)
py::array_t<float> rms_norm(const py::handle& x_, const py::handle& g_, float eps) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), C = x.shape(1);
  const float* g = f32_ptr(f32(g_, "g", {C}));
  auto y = empty({N, C});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::rms_norm<isa.value>(yp, f32_ptr(x), g, N, C, eps); });
  return y;
}

// group_norm(x (B, C, T), g (C,), b (C,), groups, eps) -> (B, C, T)
py::array_t<float> group_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, int64_t groups, float eps) {
  py::array x = f32(x_, "x", {}, 3);
  const int64_t B = x.shape(0), C = x.shape(1), T = x.shape(2);
  PYCLVP_CHECK(groups >= 1 && C % groups == 0, "groups must be >= 1 and divide the channel count ", C, ", got ", groups);
  const float* g = f32_ptr(f32(g_, "g", {C}));
  const float* b = f32_ptr(f32(b_, "b", {C}));
  auto y = empty({B, C, T});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::group_norm<isa.value>(yp, f32_ptr(x), g, b, B, C, T, groups, eps); });
  return y;
}

// gelu_new(x) / gelu(x): elementwise, any shape
template <int Which>
py::array_t<float> elementwise(const py::handle& x_) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  float* yp = out_ptr(y);
  const int64_t n = x.size();
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    if constexpr (Which == 0) cpu::gelu_new<isa.value>(yp, f32_ptr(x), n);
    else cpu::gelu<isa.value>(yp, f32_ptr(x), n);
  });
  return y;
}

// gated_gelu(x (N, 2F)) -> (N, F)
py::array_t<float> gated_gelu(const py::handle& x_) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), F2 = x.shape(1);
  PYCLVP_CHECK(F2 % 2 == 0, "x's last dimension must be even (h | gate), got ", F2);
  auto y = empty({N, F2 / 2});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::gated_gelu<isa.value>(yp, f32_ptr(x), N, F2 / 2); });
  return y;
}

// softmax(x (N, C)) over the last axis -> (N, C)
py::array_t<float> softmax(const py::handle& x_) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), C = x.shape(1);
  PYCLVP_CHECK(C >= 1, "x's last dimension must not be empty");
  auto y = empty({N, C});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::softmax<isa.value>(yp, f32_ptr(x), N, C); });
  return y;
}

// rotary(x (M, T, D), cos (T, R), sin (T, R)) -> (M, T, D)
py::array_t<float> rotary(const py::handle& x_, const py::handle& cos_, const py::handle& sin_) {
  py::array x = f32(x_, "x", {}, 3);
  const int64_t M = x.shape(0), T = x.shape(1), D = x.shape(2);
  py::array cos = f32(cos_, "cos", {T, -1});
  const int64_t R = cos.shape(1);
  py::array sin = f32(sin_, "sin", {T, R});
  PYCLVP_CHECK(R % 2 == 0 && R <= D, "the rotary width R = ", R, " must be even and <= the head dim ", D);
  auto y = empty({M, T, D});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::rotary<isa.value>(yp, f32_ptr(x), f32_ptr(cos), f32_ptr(sin), M, T, D, R); });
  return y;
}

// attention(q (B,H,T,D), k (B,H,S,D), v (B,H,S,D), mask (B|1, 1, T|1, S) | None, scale, causal) -> (B,H,T,D)
py::array_t<float> attention(const py::handle& q_, const py::handle& k_, const py::handle& v_, const py::handle& mask_,
                             float scale, bool causal) {
  py::array q = f32(q_, "q", {}, 4);
  const int64_t B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3);
  py::array k = f32(k_, "k", {B, H, -1, D});
  const int64_t S = k.shape(2);
  py::array v = f32(v_, "v", {B, H, S, D});
  cpu::AttentionArgs a;
  if (!mask_.is_none()) {
    py::array m = f32(mask_, "mask", {}, 4);
    PYCLVP_CHECK((m.shape(0) == B || m.shape(0) == 1) && m.shape(1) == 1 && (m.shape(2) == T || m.shape(2) == 1) &&
                     m.shape(3) == S,
                 "mask has shape ", shape_str(m), ", expected (", B, " or 1, 1, ", T, " or 1, ", S, ")");
    a.mask = f32_ptr(m);
    a.m_sb = m.shape(0) == 1 ? 0 : m.shape(2) * S;
    a.m_st = m.shape(2) == 1 ? 0 : S;
  }
  auto out = empty({B, H, T, D});
  a.q = f32_ptr(q), a.q_sb = H * T * D, a.q_sh = T * D, a.q_st = D;
  a.k = k.data(), a.v = v.data(), a.kv_dtype = DType::F32;
  a.k_sb = a.v_sb = H * S * D, a.k_sh = a.v_sh = S * D, a.k_ss = a.v_ss = D;
  a.out = out_ptr(out), a.o_sb = H * T * D, a.o_sh = T * D, a.o_st = D;
  a.causal = causal, a.causal_offset = S - T;  // the last query sees every key (a prompt continuing a cache)
  a.B = B, a.H = H, a.T = T, a.S = S, a.D = D, a.scale = scale;
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::attention<isa.value>(a); });
  return out;
}

}  // namespace

void register_ops(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
        "x (N, Cin) f32, w (Cout, Cin) f32/f16/u16=bf16 (C order: nn.Linear; F order: Conv1D transposed), b (Cout,) -> (N, Cout)");
  m.def("layer_norm", &layer_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("eps"), "x (N, C), g (C,), b (C,) -> (N, C)");
  m.def("rms_norm", &rms_norm, py::arg("x"), py::arg("g"), py::arg("eps"), "x (N, C), g (C,) -> (N, C)");
  m.def("group_norm", &group_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("groups"), py::arg("eps"),
        "x (B, C, T), g (C,), b (C,) -> (B, C, T)");
  m.def("gelu_new", &elementwise<0>, py::arg("x"), "elementwise GPT-2 tanh GELU, any shape (C order)");
  m.def("gelu", &elementwise<1>, py::arg("x"), "elementwise exact (erf) GELU, any shape (C order)");
  m.def("gated_gelu", &gated_gelu, py::arg("x"), "x (N, 2F) -> x[:, :F] * gelu(x[:, F:]) (N, F)");
  m.def("softmax", &softmax, py::arg("x"), "x (N, C) -> softmax over the last axis (N, C)");
  m.def("rotary", &rotary, py::arg("x"), py::arg("cos"), py::arg("sin"), "x (M, T, D), cos/sin (T, R) -> (M, T, D)");
  m.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
        py::arg("scale") = 1.0f, py::arg("causal") = false,
        "q (B,H,T,D), k/v (B,H,S,D), additive mask (B|1,1,T|1,S) -> (B,H,T,D); online softmax, never (T, S) at once");
  m.def("get_num_threads", &num_threads, "threads the kernels use (PYCLVP_NUM_THREADS or the CPU count)");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "use n threads (>= 1) from the next kernel call on");
}

}  // namespace pyclvp::bind
