// The ops' Python arguments, checked once for both cores: each *_args() takes what the binding got,
// raises ValueError naming the argument, and returns the float32 C-contiguous host arrays with their
// sizes. csrc/bindings/ops.cc runs the CPU kernels on them, csrc/bindings/cuda_ops.cc the CUDA ones.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>

#include "bindings/arrays.h"

namespace pyclvp::bind {

struct RowsArgs {  // x (N, C)
  py::array x;
  int64_t N = 0, C = 0;
};

inline RowsArgs rows_args(const py::handle& x_) {
  RowsArgs a;
  a.x = f32(x_, "x", {}, 2);
  a.N = a.x.shape(0), a.C = a.x.shape(1);
  return a;
}

// softmax: x (N, C), C >= 1
inline RowsArgs softmax_args(const py::handle& x_) {
  RowsArgs a = rows_args(x_);
  PYCLVP_CHECK(a.C >= 1, "x's last dimension must not be empty");
  return a;
}

// gated_gelu: x (N, 2F) -> (N, F); C is 2F
inline RowsArgs gated_gelu_args(const py::handle& x_) {
  RowsArgs a = rows_args(x_);
  PYCLVP_CHECK(a.C % 2 == 0, "x's last dimension must be even (h | gate), got ", a.C);
  return a;
}

struct NormArgs {  // x (N, C), g (C,), b (C,) (none for rms_norm)
  py::array x, g, b;
  int64_t N = 0, C = 0;
};

inline NormArgs layer_norm_args(const py::handle& x_, const py::handle& g_, const py::handle& b_) {
  const RowsArgs r = rows_args(x_);
  return {r.x, f32(g_, "g", {r.C}), f32(b_, "b", {r.C}), r.N, r.C};
}

inline NormArgs rms_norm_args(const py::handle& x_, const py::handle& g_) {
  const RowsArgs r = rows_args(x_);
  return {r.x, f32(g_, "g", {r.C}), py::array(), r.N, r.C};
}

struct GroupNormArgs {  // x (B, C, T), g (C,), b (C,), G groups dividing C
  py::array x, g, b;
  int64_t B = 0, C = 0, T = 0, G = 0;
};

inline GroupNormArgs group_norm_args(const py::handle& x_, const py::handle& g_, const py::handle& b_, int64_t groups) {
  GroupNormArgs a;
  a.x = f32(x_, "x", {}, 3);
  a.B = a.x.shape(0), a.C = a.x.shape(1), a.T = a.x.shape(2), a.G = groups;
  PYCLVP_CHECK(groups >= 1 && a.C % groups == 0, "groups must be >= 1 and divide the channel count ", a.C, ", got ",
               groups);
  a.g = f32(g_, "g", {a.C}), a.b = f32(b_, "b", {a.C});
  return a;
}

struct RotaryArgs {  // x (M, T, D), cos, sin (T, R), R even and <= D
  py::array x, cos, sin;
  int64_t M = 0, T = 0, D = 0, R = 0;
};

inline RotaryArgs rotary_args(const py::handle& x_, const py::handle& cos_, const py::handle& sin_) {
  RotaryArgs a;
  a.x = f32(x_, "x", {}, 3);
  a.M = a.x.shape(0), a.T = a.x.shape(1), a.D = a.x.shape(2);
  a.cos = f32(cos_, "cos", {a.T, -1});
  a.R = a.cos.shape(1);
  a.sin = f32(sin_, "sin", {a.T, a.R});
  PYCLVP_CHECK(a.R % 2 == 0 && a.R <= a.D, "the rotary width R = ", a.R, " must be even and <= the head dim ", a.D);
  return a;
}

struct AttentionInputs {  // q (B,H,T,D), k, v (B,H,S,D), mask (B|1, H|1, T|1, S) or none
  py::array q, k, v, mask;
  bool masked = false;
  int64_t B = 0, H = 0, T = 0, S = 0, D = 0;
};

// layout: Layout::Rows lets q, k, v and the mask be any views with contiguous rows (the kernels index them by
// strides): q, k, v as slices of one fused projection, the mask as a relative-position bias that is a sliding window
// over one vector per head, never materialized. Layout::C: all C-contiguous (what a device upload needs).
inline AttentionInputs attention_args(const py::handle& q_, const py::handle& k_, const py::handle& v_,
                                      const py::handle& mask_, Layout layout = Layout::C) {
  AttentionInputs a;
  a.q = f32(q_, "q", {}, 4, layout);
  a.B = a.q.shape(0), a.H = a.q.shape(1), a.T = a.q.shape(2), a.D = a.q.shape(3);
  a.k = f32(k_, "k", {a.B, a.H, -1, a.D}, -1, layout);
  a.S = a.k.shape(2);
  a.v = f32(v_, "v", {a.B, a.H, a.S, a.D}, -1, layout);
  a.masked = !mask_.is_none();
  if (a.masked) {
    a.mask = f32(mask_, "mask", {}, 4, layout);
    const py::array& m = a.mask;
    PYCLVP_CHECK((m.shape(0) == a.B || m.shape(0) == 1) && (m.shape(1) == a.H || m.shape(1) == 1) &&
                     (m.shape(2) == a.T || m.shape(2) == 1) && m.shape(3) == a.S,
                 "mask has shape ", shape_str(m), ", expected (", a.B, " or 1, ", a.H, " or 1, ", a.T, " or 1, ", a.S, ")");
  }
  return a;
}

// conv1d / conv_transpose1d: x (B, Cin, T), w (Cout, Cin, K) or, transposed, (Cin, Cout, K), b (Cout,) or none,
// leaky_slope: None or a number (x is read as leaky_relu(x, leaky_slope)), residual (conv1d only): None or (B, Cout, To).
// Returns the checked arrays and sizes (ConvArgs' pointers unset: the caller sets them, y included).
struct ConvInputs {
  py::array x, w, b, residual;
  bool biased = false, has_residual = false;
  cpu::ConvArgs a;  // sizes, hyperparameters, the activation
};

inline ConvInputs conv_args(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                            int64_t padding, int64_t dilation, int64_t output_padding, bool transposed,
                            const py::handle& leaky_slope_ = py::none(), const py::handle& residual_ = py::none()) {
  ConvInputs in;
  cpu::ConvArgs& a = in.a;
  in.x = f32(x_, "x", {}, 3);
  a.B = in.x.shape(0), a.Cin = in.x.shape(1), a.T = in.x.shape(2);
  in.w = f32(w_, "w", {}, 3);
  const int cin_axis = transposed ? 0 : 1;
  PYCLVP_CHECK(in.w.shape(cin_axis) == a.Cin, "w has shape ", shape_str(in.w), ", expected dimension ", cin_axis, " = ",
               a.Cin, " (x's channels)");
  a.Cout = in.w.shape(1 - cin_axis), a.K = in.w.shape(2);
  PYCLVP_CHECK(a.K >= 1, "w has shape ", shape_str(in.w), ": no taps");
  in.biased = !b_.is_none();
  if (in.biased) in.b = f32(b_, "b", {a.Cout});
  PYCLVP_CHECK(stride >= 1 && dilation >= 1 && padding >= 0, "stride = ", stride, " and dilation = ", dilation,
               " must be >= 1, padding = ", padding, " >= 0");
  // Sizes past 2^40 would overflow the products below; no real input comes near.
  constexpr int64_t kBig = int64_t(1) << 40;
  PYCLVP_CHECK(stride < kBig && padding < kBig && dilation < kBig && a.T < kBig && a.K < kBig && output_padding < kBig,
               "stride, padding, dilation, output_padding and the sizes must be < 2^40");
  a.stride = stride, a.padding = padding, a.dilation = dilation;
  if (transposed) {
    PYCLVP_CHECK(output_padding >= 0 && output_padding < std::max(stride, dilation), "output_padding = ", output_padding,
                 " must be >= 0 and smaller than stride (", stride, ") or dilation (", dilation, ")");
    a.output_padding = output_padding;
    a.To = (a.T - 1) * stride - 2 * padding + dilation * (a.K - 1) + output_padding + 1;
  } else {
    const int64_t span = a.T + 2 * padding - dilation * (a.K - 1) - 1;  // floor division: span may be negative
    a.To = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  }
  PYCLVP_CHECK(a.To >= 1, "output length To = ", a.To, " < 1 (T = ", a.T, ", K = ", a.K, ", padding = ", padding,
               ", dilation = ", dilation, ", stride = ", stride, ")");
  a.leaky = !leaky_slope_.is_none();
  if (a.leaky) {
    PYCLVP_CHECK((py::isinstance<py::float_>(leaky_slope_) || py::isinstance<py::int_>(leaky_slope_)) &&
                     !py::isinstance<py::bool_>(leaky_slope_),
                 "leaky_slope must be None or a number, got ", std::string(Py_TYPE(leaky_slope_.ptr())->tp_name));
    a.slope = py::cast<float>(leaky_slope_);
  }
  in.has_residual = !residual_.is_none();
  if (in.has_residual) {
    in.residual = f32(residual_, "residual", {}, 3);
    const py::array& r = in.residual;
    PYCLVP_CHECK(r.shape(0) == a.B && r.shape(1) == a.Cout && r.shape(2) == a.To, "residual has shape ", shape_str(r),
                 ", expected (", a.B, ", ", a.Cout, ", ", a.To, ")");
  }
  return in;
}

// location_variable_conv: x (B, Cin, T), kernels (B, Cin, Cout, K, L), bias (B, Cout, L), hop; K odd, T = L hop.
struct LvcInputs {
  py::array x, kernels, bias;
  int64_t B = 0, Cin = 0, Cout = 0, K = 0, L = 0, T = 0, hop = 0;
};

inline LvcInputs lvc_args(const py::handle& x_, const py::handle& k_, const py::handle& b_, int64_t hop) {
  LvcInputs in;
  in.x = f32(x_, "x", {}, 3);
  in.B = in.x.shape(0), in.Cin = in.x.shape(1), in.T = in.x.shape(2);
  in.kernels = f32(k_, "kernels", {in.B, in.Cin, -1, -1, -1});
  in.Cout = in.kernels.shape(2), in.K = in.kernels.shape(3), in.L = in.kernels.shape(4);
  in.bias = f32(b_, "bias", {in.B, in.Cout, in.L});
  PYCLVP_CHECK(in.K % 2 == 1 && hop >= 1 && in.T == in.L * hop, "location_variable_conv needs an odd kernel size (got K = ",
               in.K, ") and T = L * hop (got T = ", in.T, ", L = ", in.L, ", hop = ", hop, ")");
  in.hop = hop;
  return in;
}

// The kernel's AttentionArgs (cpu:: or cuda::, which share these fields) for the checked q, k, v and mask by their
// strides (in elements; 0 on a size-1 axis: only its index 0 is read, and the mask broadcasts there) and a contiguous
// out; the caller sets the pointers. With causal, the last query sees every key (a prompt continuing a cache).
template <class Args>
void set_attention_layout(Args& a, const AttentionInputs& in, float scale, bool causal) {
  const int64_t H = in.H, T = in.T, S = in.S, D = in.D;
  const auto stride = [](const py::array& x, int i) {
    return x.shape(i) == 1 ? 0 : static_cast<int64_t>(x.strides(i) / static_cast<py::ssize_t>(sizeof(float)));
  };
  a.q_sb = stride(in.q, 0), a.q_sh = stride(in.q, 1), a.q_st = stride(in.q, 2);
  a.kv_dtype = DType::F32;
  a.k_sb = stride(in.k, 0), a.k_sh = stride(in.k, 1), a.k_ss = stride(in.k, 2);
  a.v_sb = stride(in.v, 0), a.v_sh = stride(in.v, 1), a.v_ss = stride(in.v, 2);
  a.o_sb = H * T * D, a.o_sh = T * D, a.o_st = D;
  if (in.masked) {  // (B|1, H|1, T|1, S): a size-1 axis broadcasts
    a.m_sb = stride(in.mask, 0), a.m_sh = stride(in.mask, 1), a.m_st = stride(in.mask, 2);
  }
  a.causal = causal, a.causal_offset = S - T;
  a.B = in.B, a.H = H, a.T = T, a.S = S, a.D = D, a.scale = scale;
}

}  // namespace pyclvp::bind
