// register_ops(m): the op bindings, one per pyclvp/ops/numpy_ops.py function, same name and
// argument order. Each checks its arrays (bindings/op_args.h, shared with the CUDA bindings;
// ValueError naming the argument), allocates the output,
// releases the GIL and dispatches to the active ISA's kernel. pyclvp/ops/cpu_ops.py is the
// Python side: it flattens leading dimensions and converts dtypes before calling these.
#include <array>
#include <cstring>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/arrays.h"
#include "bindings/op_args.h"
#include "common/threadpool.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"

namespace py = pybind11;

namespace pyclvp::bind {
namespace {

using cpu::CpuIsa;

py::array_t<float> empty(std::initializer_list<py::ssize_t> shape) { return py::array_t<float>(std::vector<py::ssize_t>(shape)); }

float* out_ptr(py::array_t<float>& a) { return a.mutable_data(); }

// x (N, Cin) @ w^T (+ b) -> (N, Cout), linear's and linear_q8's one body: w is a float matrix (Cout, Cin), or with
// Q8 the int8 matrix q (Cout, Cin) and its scales (Cout, Cin / 32).
template <bool Q8>
py::array_t<float> run_linear(const py::handle& x_, const py::handle& w_, const py::handle& scale_, const py::handle& b_) {
  py::array x = f32(x_, "x", {}, 2);
  const int64_t N = x.shape(0), Cin = x.shape(1);
  PYCLVP_CHECK((Q8 ? is_int8(w_) : py::isinstance<py::array>(w_)) && py::reinterpret_borrow<py::array>(w_).ndim() == 2,
               Q8 ? "q must be a 2-D numpy int8 array" : "w must be a 2-D numpy array");
  const int64_t Cout = py::reinterpret_borrow<py::array>(w_).shape(0);
  cpu::LinearJob j;
  if constexpr (Q8) j.w = q8_weight(w_, scale_, "q", Cout, Cin);
  else j.w = weight(w_, "w", Cout, Cin);
  j.b = optional_f32(b_, "b", {Cout});
  auto y = empty({N, Cout});
  j.y = out_ptr(y), j.x = f32_ptr(x), j.N = N, j.Cin = Cin, j.Cout = Cout, j.ldx = Cin, j.ldy = Cout;
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    if constexpr (Q8) cpu::linear_q8<isa.value>(&j, 1);
    else cpu::linear<isa.value>(&j, 1);
  });
  return y;
}

// linear(x (N, Cin), w (Cout, Cin), b (Cout,) | None) -> (N, Cout)
py::array_t<float> linear(const py::handle& x_, const py::handle& w_, const py::handle& b_) {
  return run_linear<false>(x_, w_, py::none(), b_);
}

// linear_q8(x (N, Cin), q (Cout, Cin) int8, scale (Cout, Cin / 32), b (Cout,) | None) -> (N, Cout)
py::array_t<float> linear_q8(const py::handle& x_, const py::handle& q_, const py::handle& scale_, const py::handle& b_) {
  return run_linear<true>(x_, q_, scale_, b_);
}

// layer_norm(x (N, C), g (C,), b (C,), eps) -> (N, C)
py::array_t<float> layer_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, float eps) {
  const NormArgs in = layer_norm_args(x_, g_, b_);
  auto y = empty({in.N, in.C});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    cpu::layer_norm<isa.value>(yp, f32_ptr(in.x), f32_ptr(in.g), f32_ptr(in.b), in.N, in.C, eps);
  });
  return y;
}

// rms_norm(x (N, C), g (C,), eps, clamp) -> (N, C)
py::array_t<float> rms_norm(const py::handle& x_, const py::handle& g_, float eps, bool clamp) {
  const NormArgs in = rms_norm_args(x_, g_);
  auto y = empty({in.N, in.C});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::rms_norm<isa.value>(yp, f32_ptr(in.x), f32_ptr(in.g), in.N, in.C, eps, clamp); });
  return y;
}

// group_norm(x (B, C, T), g (C,), b (C,), groups, eps, silu) -> (B, C, T); silu: SiLU of the result, in the same pass
py::array_t<float> group_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, int64_t groups, float eps,
                              bool silu) {
  const GroupNormArgs in = group_norm_args(x_, g_, b_, groups);
  auto y = empty({in.B, in.C, in.T});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    cpu::group_norm<isa.value>(yp, f32_ptr(in.x), f32_ptr(in.g), f32_ptr(in.b), in.B, in.C, in.T, in.G, eps, silu);
  });
  return y;
}

// gelu_new(x) / gelu(x) / silu(x): elementwise, any shape
template <int Which>
py::array_t<float> elementwise(const py::handle& x_) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  float* yp = out_ptr(y);
  const int64_t n = x.size();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    if constexpr (Which == 0) cpu::gelu_new<isa.value>(yp, f32_ptr(x), n);
    else if constexpr (Which == 1) cpu::gelu<isa.value>(yp, f32_ptr(x), n);
    else cpu::silu<isa.value>(yp, f32_ptr(x), n);
  });
  return y;
}

// gated_gelu(x (N, 2F)) -> (N, F)
py::array_t<float> gated_gelu(const py::handle& x_) {
  const RowsArgs in = gated_gelu_args(x_);
  auto y = empty({in.N, in.C / 2});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::gated_gelu<isa.value>(yp, f32_ptr(in.x), in.N, in.C / 2); });
  return y;
}

// softmax(x (N, C)) over the last axis -> (N, C)
py::array_t<float> softmax(const py::handle& x_) {
  const RowsArgs in = softmax_args(x_);
  auto y = empty({in.N, in.C});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::softmax<isa.value>(yp, f32_ptr(in.x), in.N, in.C); });
  return y;
}

// rotary(x (M, T, D), cos (T, R), sin (T, R)) -> (M, T, D)
py::array_t<float> rotary(const py::handle& x_, const py::handle& cos_, const py::handle& sin_) {
  const RotaryArgs in = rotary_args(x_, cos_, sin_);
  auto y = empty({in.M, in.T, in.D});
  float* yp = out_ptr(y);
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    cpu::rotary<isa.value>(yp, f32_ptr(in.x), f32_ptr(in.cos), f32_ptr(in.sin), in.M, in.T, in.D, in.R);
  });
  return y;
}

// attention(q (B,H,T,D), k (B,H,S,D), v (B,H,S,D), mask (B|1, H|1, T|1, S) | None, scale, causal) -> (B,H,T,D);
// the mask may be any view with contiguous rows
py::array_t<float> attention(const py::handle& q_, const py::handle& k_, const py::handle& v_, const py::handle& mask_,
                             float scale, bool causal) {
  const AttentionInputs in = attention_args(q_, k_, v_, mask_, Layout::Rows);
  auto out = empty({in.B, in.H, in.T, in.D});
  cpu::AttentionArgs a;
  set_attention_layout(a, in, scale, causal);
  a.q = f32_ptr(in.q), a.k = in.k.data(), a.v = in.v.data(), a.out = out_ptr(out);
  a.mask = in.masked ? f32_ptr(in.mask) : nullptr;
  if (out.size() == 0) return out;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::attention<isa.value>(a); });
  return out;
}

// A packed conv_transpose1d weight (pack_conv_transpose1d): kPackHead floats holding, bit for bit, the int64
// header {ISA, Cin, Cout, K, stride, padding, dilation, packed size}, then the kernel's packed floats.
constexpr int64_t kPackHead = 16;

std::array<int64_t, 8> pack_header(CpuIsa isa, const cpu::ConvArgs& a, int64_t n) {
  return {static_cast<int64_t>(isa), a.Cin, a.Cout, a.K, a.stride, a.padding, a.dilation, n};
}

int64_t packed_size(CpuIsa isa, const cpu::ConvArgs& a) {
  int64_t n = 0;
  cpu::dispatch(isa, [&](auto i) { n = cpu::conv_transpose1d_packed_size<i.value>(a); });
  return n;
}

// transpose_weight(w (Cin, Cout) C order, f32 / f16 / u16 = bf16) -> its (Cout, Cin) copy, same dtype, C order
py::array transpose_weight(const py::handle& w_) {
  PYCLVP_CHECK(py::isinstance<py::array>(w_), "w must be a numpy array, got ", std::string(Py_TYPE(w_.ptr())->tp_name));
  py::array w = py::reinterpret_borrow<py::array>(w_);
  const int elem = weight_dtype(w, "w") == DType::F32 ? 4 : 2;
  PYCLVP_CHECK(w.ndim() == 2 && c_contiguous(w), "w must be a C-contiguous 2-D array, got shape ", shape_str(w));
  const int64_t Cin = w.shape(0), Cout = w.shape(1);
  py::array out(w.dtype(), std::vector<py::ssize_t>{Cout, Cin});
  if (out.size() == 0) return out;
  void* dst = out.mutable_data();
  const void* src = w.data();
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::transpose_weight<isa.value>(dst, src, Cin, Cout, elem); });
  return out;
}

// conv1d(x (B, Cin, T), w (Cout, Cin, K), b (Cout,) | None, stride, padding, dilation, leaky_slope, residual)
//   -> (B, Cout, To)
// conv_transpose1d(x (B, Cin, T), w (Cin, Cout, K), b, stride, padding, output_padding, dilation, leaky_slope, packed)
//   -> (B, Cout, To); packed: None, or pack_conv_transpose1d(w, stride, padding, dilation) under the active ISA (checked)
template <bool Transposed>
py::array_t<float> conv(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                        int64_t padding, int64_t output_padding, int64_t dilation, const py::handle& leaky_slope_,
                        const py::handle& residual_, const py::handle& packed_) {
  ConvInputs in = conv_args(x_, w_, b_, stride, padding, dilation, output_padding, Transposed, leaky_slope_, residual_);
  cpu::ConvArgs& a = in.a;
  py::array packed;
  const CpuIsa isa = cpu::active_isa();
  if (Transposed && !packed_.is_none()) {
    packed = f32(packed_, "packed", {}, 1);
    const int64_t n = packed_size(isa, a);
    std::array<int64_t, 8> head{};
    if (packed.shape(0) == kPackHead + n) std::memcpy(head.data(), f32_ptr(packed), sizeof(head));
    PYCLVP_CHECK(packed.shape(0) == kPackHead + n && head == pack_header(isa, a, n),
                 "packed was not made by pack_conv_transpose1d for this w, stride, padding, dilation and ISA (",
                 cpu::isa_name(isa), ")");
    a.wp = f32_ptr(packed) + kPackHead;
  }
  auto y = empty({a.B, a.Cout, a.To});
  a.y = out_ptr(y), a.x = f32_ptr(in.x), a.w = f32_ptr(in.w), a.b = in.biased ? f32_ptr(in.b) : nullptr;
  a.residual = in.has_residual ? f32_ptr(in.residual) : nullptr;
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(isa, [&](auto i) {
    if constexpr (Transposed) cpu::conv_transpose1d<i.value>(a);
    else cpu::conv1d<i.value>(a);
  });
  return y;
}

// pack_conv_transpose1d(w (Cin, Cout, K), stride, padding, dilation) -> (kPackHead + n,) f32 for conv_transpose1d's
// `packed`: the weight in the active ISA's phase tiles (csrc/cpu/kernels/conv.cc), made once for an immutable w.
py::array_t<float> pack_conv_transpose1d(const py::handle& w_, int64_t stride, int64_t padding, int64_t dilation) {
  py::array w = f32(w_, "w", {}, 3);
  PYCLVP_CHECK(w.shape(2) >= 1, "w has shape ", shape_str(w), ": no taps");
  constexpr int64_t kBig = int64_t(1) << 40;  // as conv_args
  PYCLVP_CHECK(stride >= 1 && dilation >= 1 && padding >= 0 && stride < kBig && dilation < kBig && padding < kBig,
               "stride = ", stride, " and dilation = ", dilation, " must be in [1, 2^40), padding = ", padding,
               " in [0, 2^40)");
  cpu::ConvArgs a;
  a.Cin = w.shape(0), a.Cout = w.shape(1), a.K = w.shape(2);
  a.stride = stride, a.padding = padding, a.dilation = dilation;
  a.w = f32_ptr(w);
  const CpuIsa isa = cpu::active_isa();
  const int64_t n = packed_size(isa, a);
  auto out = empty({static_cast<py::ssize_t>(kPackHead + n)});
  float* p = out_ptr(out);
  const auto head = pack_header(isa, a, n);
  std::fill(p, p + kPackHead, 0.0f);
  std::memcpy(p, head.data(), sizeof(head));
  py::gil_scoped_release nogil;
  cpu::dispatch(isa, [&](auto i) { cpu::conv_transpose1d_pack<i.value>(p + kPackHead, a); });
  return out;
}

py::array_t<float> conv1d(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                          int64_t padding, int64_t dilation, const py::handle& leaky_slope_, const py::handle& residual_) {
  return conv<false>(x_, w_, b_, stride, padding, 0, dilation, leaky_slope_, residual_, py::none());
}

py::array_t<float> conv_transpose1d(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                                    int64_t padding, int64_t output_padding, int64_t dilation,
                                    const py::handle& leaky_slope_, const py::handle& packed_) {
  return conv<true>(x_, w_, b_, stride, padding, output_padding, dilation, leaky_slope_, py::none(), packed_);
}

// location_variable_conv(x (B, Cin, T), kernels (B, Cin, Cout, K, L), bias (B, Cout, L), hop) -> (B, Cout, T)
py::array_t<float> location_variable_conv(const py::handle& x_, const py::handle& k_, const py::handle& b_, int64_t hop) {
  const LvcInputs in = lvc_args(x_, k_, b_, hop);
  auto y = empty({in.B, in.Cout, in.T});
  float* yp = out_ptr(y);
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) {
    cpu::location_variable_conv<isa.value>(yp, f32_ptr(in.x), f32_ptr(in.kernels), f32_ptr(in.bias), in.B, in.Cin,
                                            in.Cout, in.K, in.L, in.hop);
  });
  return y;
}

// leaky_relu(x, slope): elementwise, any shape
py::array_t<float> leaky_relu(const py::handle& x_, float slope) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  float* yp = out_ptr(y);
  const int64_t n = x.size();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  cpu::dispatch(cpu::active_isa(), [&](auto isa) { cpu::leaky_relu<isa.value>(yp, f32_ptr(x), n, slope); });
  return y;
}

}  // namespace

void register_ops(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
        "x (N, Cin) f32, w (Cout, Cin) f32/f16/u16=bf16 (C order: nn.Linear; F order: Conv1D transposed), b (Cout,) -> (N, Cout)");
  m.def("linear_q8", &linear_q8, py::arg("x"), py::arg("q"), py::arg("scale"), py::arg("b") = py::none(),
        "x (N, Cin) f32, q (Cout, Cin) int8 (C order), scale (Cout, Cin / 32) f32, b (Cout,) -> (N, Cout): "
        "linear with W = q * scale per block of 32 input channels");
  m.def("transpose_weight", &transpose_weight, py::arg("w"),
        "w (Cin, Cout) f32/f16/u16=bf16, C order -> its (Cout, Cin) copy in C order: a Conv1D weight in the layout "
        "linear reads fastest");
  m.def("layer_norm", &layer_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("eps"), "x (N, C), g (C,), b (C,) -> (N, C)");
  m.def("rms_norm", &rms_norm, py::arg("x"), py::arg("g"), py::arg("eps"), py::arg("clamp") = false,
        "x (N, C), g (C,) -> (N, C); clamp: Tortoise's RMSNorm (norm clamped at eps) instead of transformers'");
  m.def("group_norm", &group_norm, py::arg("x"), py::arg("g"), py::arg("b"), py::arg("groups"), py::arg("eps"),
        py::arg("silu") = false, "x (B, C, T), g (C,), b (C,) -> (B, C, T); silu: SiLU of the result in the same pass");
  m.def("gelu_new", &elementwise<0>, py::arg("x"), "elementwise GPT-2 tanh GELU, any shape (C order)");
  m.def("gelu", &elementwise<1>, py::arg("x"), "elementwise exact (erf) GELU, any shape (C order)");
  m.def("silu", &elementwise<2>, py::arg("x"), "elementwise x * sigmoid(x), any shape (C order)");
  m.def("gated_gelu", &gated_gelu, py::arg("x"), "x (N, 2F) -> x[:, :F] * gelu(x[:, F:]) (N, F)");
  m.def("softmax", &softmax, py::arg("x"), "x (N, C) -> softmax over the last axis (N, C)");
  m.def("rotary", &rotary, py::arg("x"), py::arg("cos"), py::arg("sin"), "x (M, T, D), cos/sin (T, R) -> (M, T, D)");
  m.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
        py::arg("scale") = 1.0f, py::arg("causal") = false,
        "q (B,H,T,D), k/v (B,H,S,D), additive mask (B|1,H|1,T|1,S) -> (B,H,T,D); online softmax, never (T, S) at once");
  m.def("conv1d", &conv1d, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("leaky_slope") = py::none(),
        py::arg("residual") = py::none(),
        "x (B, Cin, T), w (Cout, Cin, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv1d, groups=1, of"
        " leaky_relu(x, leaky_slope) unless None, plus residual (B, Cout, To) unless None");
  m.def("conv_transpose1d", &conv_transpose1d, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
        py::arg("stride") = 1, py::arg("padding") = 0, py::arg("output_padding") = 0, py::arg("dilation") = 1,
        py::arg("leaky_slope") = py::none(), py::arg("packed") = py::none(),
        "x (B, Cin, T), w (Cin, Cout, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv_transpose1d, groups=1,"
        " of leaky_relu(x, leaky_slope) unless None; packed: None or pack_conv_transpose1d(w, stride, padding,"
        " dilation) (w's tiles, made once)");
  m.def("pack_conv_transpose1d", &pack_conv_transpose1d, py::arg("w"), py::arg("stride") = 1, py::arg("padding") = 0,
        py::arg("dilation") = 1,
        "w (Cin, Cout, K) -> (16 + n,) f32: w packed for conv_transpose1d(..., packed=) under the active ISA");
  m.def("location_variable_conv", &location_variable_conv, py::arg("x"), py::arg("kernels"), py::arg("bias"),
        py::arg("hop"), "x (B, Cin, L hop), kernels (B, Cin, Cout, K, L), bias (B, Cout, L) -> (B, Cout, L hop): UnivNet's LVC");
  m.def("leaky_relu", &leaky_relu, py::arg("x"), py::arg("slope") = 0.01f, "elementwise x > 0 ? x : x * slope, any shape");
  m.def("get_num_threads", &num_threads, "threads the kernels use (PYCLVP_NUM_THREADS or the CPU count)");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "use n threads (>= 1) from the next kernel call on");
}

}  // namespace pyclvp::bind
