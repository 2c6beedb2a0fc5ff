// register_cuda(m): pyclvp._core.cuda, the CUDA backend's bindings: the ops here, the fused decoder in
// bindings/cuda_decoder.cc (the CPU side splits the same way: ops.cc, decoder.cc). Compiled only with
// PYCLVP_WITH_CUDA (CMakeLists.txt; without it these files are empty and _core has no `cuda`).
//
//   Weight(w)                      a (Cout, Cin) weight uploaded once: C order is nn.Linear's layout, Fortran
//                                  order a transposed Conv1D weight (transposed on upload); f32 / f16 / uint16
//                                  (bfloat16 bits). pyclvp/ops/cuda_ops.py keeps one per weight array.
//   linear(x, weight, b), layer_norm, rms_norm, group_norm, gelu_new, gelu, silu, gated_gelu, softmax, rotary,
//   attention, conv1d, conv_transpose1d, location_variable_conv, leaky_relu
//                                  the ops of pyclvp/ops/numpy_ops.py with the arguments of pyclvp._core's CPU
//                                  ops (csrc/bindings/ops.cc): host arrays in, a new host array out
//   DecoderSession                 see bindings/cuda_decoder.cc
//
// Order inside every call: the arguments are checked (ValueError naming the argument: the CPU bindings'
// own checks, csrc/bindings/op_args.h), then require_device() (RuntimeError "no CUDA device"), then the
// device work with the GIL released. The ops run on the legacy default stream and synchronize before returning.
#ifdef PYCLVP_WITH_CUDA
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/op_args.h"
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dg = upload(hg, "g"), dy(oy.bytes, "y");
  cuda::rms_norm(dy.as<float>(), dx.as<float>(), dg.as<float>(), eps, clamp, in.N, in.C, kOps);
  download(oy, dy);
  return y;
}

// group_norm(x (B, C, T), g (C,), b (C,), groups, eps, silu) -> (B, C, T)
py::array_t<float> group_norm(const py::handle& x_, const py::handle& g_, const py::handle& b_, int64_t groups,
                              float eps, bool silu) {
  const GroupNormArgs in = group_norm_args(x_, g_, b_, groups);
  auto y = empty({in.B, in.C, in.T});
  const Host hx = host(in.x), hg = host(in.g), hb = host(in.b);
  const Out oy = out(y);
  cuda::require_device();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dg = upload(hg, "g"), db = upload(hb, "b"), dy(oy.bytes, "y");
  cuda::group_norm(dy.as<float>(), dx.as<float>(), dg.as<float>(), db.as<float>(), in.G, eps, silu, in.B, in.C, in.T,
                   kOps);
  download(oy, dy);
  return y;
}

// gelu_new(x) / gelu(x) / silu(x): elementwise, any shape
template <int Which>
py::array_t<float> elementwise(const py::handle& x_) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t n = x.size();
  const Host hx = host(x);
  const Out oy = out(y);
  cuda::require_device();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  if constexpr (Which == 0) cuda::gelu_new(dy.as<float>(), dx.as<float>(), n, kOps);
  else if constexpr (Which == 1) cuda::gelu(dy.as<float>(), dx.as<float>(), n, kOps);
  else cuda::silu(dy.as<float>(), dx.as<float>(), n, kOps);
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
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
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dc = upload(hc, "cos"), ds = upload(hs, "sin"), dy(oy.bytes, "y");
  cuda::rotary(dy.as<float>(), dx.as<float>(), dc.as<float>(), ds.as<float>(), in.M, in.T, in.D, in.R, kOps);
  download(oy, dy);
  return y;
}

// attention(q (B,H,T,D), k (B,H,S,D), v (B,H,S,D), mask (B|1, H|1, T|1, S) | None, scale, causal) -> (B,H,T,D)
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
  if (o.size() == 0) return o;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dq = upload(hq, "q"), dk = upload(hk, "k"), dv = upload(hv, "v"), dm = upload(hm, "mask");
  DeviceBuffer dout(oo.bytes, "out");
  a.q = dq.as<float>(), a.k = dk.data(), a.v = dv.data(), a.out = dout.as<float>(), a.mask = dm.as<float>();
  cuda::attention(a, kOps);
  download(oo, dout);
  return o;
}

// conv1d(x (B, Cin, T), w (Cout, Cin, K), b | None, stride, padding, dilation, leaky_slope, residual) -> (B, Cout, To)
// conv_transpose1d(x (B, Cin, T), w (Cin, Cout, K), b | None, stride, padding, output_padding, dilation, leaky_slope)
//   -> (B, Cout, To)
template <bool Transposed>
py::array_t<float> conv(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                        int64_t padding, int64_t output_padding, int64_t dilation, const py::handle& leaky_slope_,
                        const py::handle& residual_) {
  const ConvInputs in = conv_args(x_, w_, b_, stride, padding, dilation, output_padding, Transposed, leaky_slope_,
                                  residual_);
  const cpu::ConvArgs& c = in.a;
  auto y = empty({c.B, c.Cout, c.To});
  const Host hx = host(in.x), hw = host(in.w), hb = in.biased ? host(in.b) : Host{};
  const Host hr = in.has_residual ? host(in.residual) : Host{};
  const Out oy = out(y);
  cuda::require_device();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dw = upload(hw, "w"), db = upload(hb, "b"), dr = upload(hr, "residual");
  DeviceBuffer dy(oy.bytes, "y");
  cuda::ConvArgs a;
  a.y = dy.as<float>(), a.x = dx.as<float>(), a.w = dw.as<float>(), a.b = in.biased ? db.as<float>() : nullptr;
  a.B = c.B, a.Cin = c.Cin, a.Cout = c.Cout, a.T = c.T, a.K = c.K, a.To = c.To;
  a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation, a.output_padding = c.output_padding;
  a.residual = in.has_residual ? dr.as<float>() : nullptr, a.leaky = c.leaky, a.slope = c.slope;
  if constexpr (Transposed) cuda::conv_transpose1d(a, kOps);
  else cuda::conv1d(a, kOps);
  download(oy, dy);
  return y;
}

py::array_t<float> conv1d(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                          int64_t padding, int64_t dilation, const py::handle& leaky_slope_, const py::handle& residual_) {
  return conv<false>(x_, w_, b_, stride, padding, 0, dilation, leaky_slope_, residual_);
}

py::array_t<float> conv_transpose1d(const py::handle& x_, const py::handle& w_, const py::handle& b_, int64_t stride,
                                    int64_t padding, int64_t output_padding, int64_t dilation,
                                    const py::handle& leaky_slope_) {
  return conv<true>(x_, w_, b_, stride, padding, output_padding, dilation, leaky_slope_, py::none());
}

// location_variable_conv(x (B, Cin, T), kernels (B, Cin, Cout, K, L), bias (B, Cout, L), hop) -> (B, Cout, T)
py::array_t<float> location_variable_conv(const py::handle& x_, const py::handle& k_, const py::handle& b_, int64_t hop) {
  const LvcInputs in = lvc_args(x_, k_, b_, hop);
  auto y = empty({in.B, in.Cout, in.T});
  const Host hx = host(in.x), hk = host(in.kernels), hb = host(in.bias);
  const Out oy = out(y);
  cuda::require_device();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dk = upload(hk, "kernels"), db = upload(hb, "bias"), dy(oy.bytes, "y");
  cuda::location_variable_conv(dy.as<float>(), dx.as<float>(), dk.as<float>(), db.as<float>(), in.B, in.Cin, in.Cout,
                               in.K, in.L, in.hop, kOps);
  download(oy, dy);
  return y;
}

// leaky_relu(x, slope): elementwise, any shape
py::array_t<float> leaky_relu(const py::handle& x_, float slope) {
  py::array x = f32(x_, "x");
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t n = x.size();
  const Host hx = host(x);
  const Out oy = out(y);
  cuda::require_device();
  if (y.size() == 0) return y;  // no work: return at once (huge empty leading dimensions too)
  py::gil_scoped_release nogil;
  DeviceBuffer dx = upload(hx, "x"), dy(oy.bytes, "y");
  cuda::leaky_relu(dy.as<float>(), dx.as<float>(), n, slope, kOps);
  download(oy, dy);
  return y;
}

}  // namespace

void register_cuda_decoder(py::module_& c);  // bindings/cuda_decoder.cc

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
        py::arg("silu") = false, "x (B, C, T), g (C,), b (C,) -> (B, C, T); silu: SiLU of the result in the same pass");
  c.def("gelu_new", &elementwise<0>, py::arg("x"), "elementwise GPT-2 tanh GELU, any shape (C order)");
  c.def("gelu", &elementwise<1>, py::arg("x"), "elementwise exact (erf) GELU, any shape (C order)");
  c.def("silu", &elementwise<2>, py::arg("x"), "elementwise x * sigmoid(x), any shape (C order)");
  c.def("location_variable_conv", &location_variable_conv, py::arg("x"), py::arg("kernels"), py::arg("bias"),
        py::arg("hop"), "x (B, Cin, L hop), kernels (B, Cin, Cout, K, L), bias (B, Cout, L) -> (B, Cout, L hop): UnivNet's LVC");
  c.def("gated_gelu", &gated_gelu, py::arg("x"), "x (N, 2F) -> x[:, :F] * gelu(x[:, F:]) (N, F)");
  c.def("softmax", &softmax, py::arg("x"), "x (N, C) -> softmax over the last axis (N, C)");
  c.def("rotary", &rotary, py::arg("x"), py::arg("cos"), py::arg("sin"), "x (M, T, D), cos/sin (T, R) -> (M, T, D)");
  c.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
        py::arg("scale") = 1.0f, py::arg("causal") = false,
        "q (B,H,T,D), k/v (B,H,S,D), additive mask (B|1,H|1,T|1,S) -> (B,H,T,D); D <= 128");
  c.def("conv1d", &conv1d, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("leaky_slope") = py::none(),
        py::arg("residual") = py::none(),
        "x (B, Cin, T), w (Cout, Cin, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv1d, groups=1, of"
        " leaky_relu(x, leaky_slope) unless None, plus residual (B, Cout, To) unless None");
  c.def("conv_transpose1d", &conv_transpose1d, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
        py::arg("stride") = 1, py::arg("padding") = 0, py::arg("output_padding") = 0, py::arg("dilation") = 1,
        py::arg("leaky_slope") = py::none(),
        "x (B, Cin, T), w (Cin, Cout, K), b (Cout,) -> (B, Cout, To): torch.nn.functional.conv_transpose1d, groups=1,"
        " of leaky_relu(x, leaky_slope) unless None");
  c.def("leaky_relu", &leaky_relu, py::arg("x"), py::arg("slope") = 0.01f, "elementwise x > 0 ? x : x * slope, any shape");
  register_cuda_decoder(c);
}

}  // namespace pyclvp::bind
#endif  // PYCLVP_WITH_CUDA
