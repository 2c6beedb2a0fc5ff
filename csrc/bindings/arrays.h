// provides: argument checks for the bindings (dtype, contiguity, shape), each raising ValueError
// with the argument's name, and WeightView construction from a NumPy array.
//
// The bindings are strict: they do not convert. pyclvp/ops/cpu_ops.py prepares arguments (float32,
// C order) and the checks here are the last line of defence, so a bad call raises instead of
// reading out of bounds. Weight matrices may be float32, float16 or uint16 (= bfloat16 bits, the
// layout pyclvp/io/safetensors.py returns with bf16="raw"; pyclvp/io/half.py names it).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/half.h"
#include "cpu/kernels.h"

namespace pyclvp::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {  // "(2, 3)", "(4,)", "()"
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += concat(i ? ", " : "", a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline bool c_contiguous(const py::array& a) { return a.flags() & py::array::c_style; }
inline bool f_contiguous(const py::array& a) { return a.flags() & py::array::f_style; }

// rows: the last axis contiguous, the other strides free (whole elements; zero or negative too: broadcasts and
// sliding windows); else C-contiguous.
enum class Layout { C, Rows };

// A float32 array (C-contiguous, or by rows) of `ndim` dimensions (any ndim when -1); shape entries of -1 are free.
inline py::array f32(const py::handle& obj, const char* name, std::initializer_list<int64_t> shape = {}, int ndim = -1,
                     Layout layout = Layout::C) {
  PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array, got ", std::string(Py_TYPE(obj.ptr())->tp_name));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.dtype().is(py::dtype::of<float>()), name, " must be float32, got ", std::string(py::str(a.dtype())));
  if (layout == Layout::Rows && a.ndim() > 0 && !c_contiguous(a)) {
    bool whole = true;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) whole = whole && a.strides(i) % static_cast<py::ssize_t>(sizeof(float)) == 0;
    PYCLVP_CHECK(whole && (a.shape(a.ndim() - 1) <= 1 || a.strides(a.ndim() - 1) == sizeof(float)), name,
                 " must have contiguous rows (its last axis) and whole-element strides");
  } else {
    PYCLVP_CHECK(c_contiguous(a), name, " must be C-contiguous");
  }
  if (shape.size()) ndim = static_cast<int>(shape.size());
  PYCLVP_CHECK(ndim < 0 || a.ndim() == ndim, name, " must have ", ndim, " dimensions, got shape ", shape_str(a));
  int i = 0;
  for (int64_t want : shape) {
    PYCLVP_CHECK(want < 0 || a.shape(i) == want, name, " has shape ", shape_str(a), ", expected dimension ", i, " = ", want);
    ++i;
  }
  return a;
}

inline const float* f32_ptr(const py::array& a) { return static_cast<const float*>(a.data()); }

// None, or a float32 C-contiguous array of the given shape (as f32()).
inline const float* optional_f32(const py::handle& obj, const char* name, std::initializer_list<int64_t> shape) {
  if (obj.is_none()) return nullptr;
  return f32_ptr(f32(obj, name, shape));
}

// A C-contiguous int64 vector of n entries (any length when n < 0).
inline py::array int64_vector(const py::handle& obj, const char* name, int64_t n) {
  PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy int64 array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.dtype().is(py::dtype::of<int64_t>()) && c_contiguous(a) && a.ndim() == 1 && (n < 0 || a.shape(0) == n),
               name, " must be a C-contiguous int64 array of shape (", n < 0 ? std::string("B") : std::to_string(n),
               ",), got ", std::string(py::str(a.dtype())), " ", shape_str(a));
  return a;
}

inline DType weight_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::F32;
  if (a.dtype().is(py::dtype("float16"))) return DType::F16;
  if (a.dtype().is(py::dtype::of<uint16_t>())) return DType::BF16;
  fail(__func__, name, " must be float32, float16 or uint16 (bfloat16 bits), got ", std::string(py::str(a.dtype())));
}

// A weight matrix of logical shape (Cout, Cin) (the numpy_ops.linear convention): C order is the
// nn.Linear layout; Fortran order (a transposed view of a (Cin, Cout) Conv1D weight) is the Conv1D layout.
inline cpu::WeightView weight(const py::handle& obj, const char* name, int64_t Cout, int64_t Cin) {
  PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array, got ", std::string(Py_TYPE(obj.ptr())->tp_name));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.ndim() == 2 && a.shape(0) == Cout && a.shape(1) == Cin, name, " has shape ", shape_str(a),
               ", expected (", Cout, ", ", Cin, ")");
  cpu::WeightView w;
  w.data = a.data();
  w.dtype = weight_dtype(a, name);
  if (c_contiguous(a)) w.kn = false;
  else if (f_contiguous(a)) w.kn = true;
  else fail(__func__, name, " must be C- or Fortran-contiguous (a transposed contiguous matrix)");
  return w;
}

// A Conv1D weight as stored, logical shape (Cin, Cout) (transformers' Conv1D): the WeightView of its
// transpose, taken from this array's own memory (not from `.T`, which an ndarray subclass may make a copy).
// (Cin, Cout) in Fortran order is (Cout, Cin) in C order (kn = false); in C order it is the kn layout.
inline cpu::WeightView conv1d_weight(const py::handle& obj, const char* name, int64_t Cin, int64_t Cout) {
  PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.ndim() == 2 && a.shape(0) == Cin && a.shape(1) == Cout, name, " has shape ", shape_str(a),
               ", expected (", Cin, ", ", Cout, ")");
  cpu::WeightView w;
  w.data = a.data();
  w.dtype = weight_dtype(a, name);
  if (f_contiguous(a)) w.kn = false;  // checked first, as weight() checks its transpose's C order first
  else if (c_contiguous(a)) w.kn = true;
  else fail(__func__, name, " must be C- or Fortran-contiguous");
  return w;
}

// An int8 matrix of pyclvp/io/q8.py: q (Cout, Cin) int8, C-contiguous whatever the checkpoint's layout (a Conv1D
// weight is quantized transposed), Cin a multiple of Q8_BLOCK; scale (Cout, Cin / Q8_BLOCK) float32, C-contiguous.
inline bool is_int8(const py::handle& obj) {
  return py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<int8_t>());
}

inline cpu::WeightView q8_weight(const py::handle& q_, const py::handle& scale_, const std::string& name, int64_t Cout,
                                 int64_t Cin) {
  PYCLVP_CHECK(is_int8(q_), name, " must be a numpy int8 array");
  py::array q = py::reinterpret_borrow<py::array>(q_);
  PYCLVP_CHECK(q.ndim() == 2 && q.shape(0) == Cout && q.shape(1) == Cin, name, " has shape ", shape_str(q),
               ", expected (", Cout, ", ", Cin, ")");
  PYCLVP_CHECK(c_contiguous(q), name, " must be C-contiguous (int8 weights are (Cout, Cin) row-major)");
  PYCLVP_CHECK(Cin % cpu::Q8_BLOCK == 0, name, ": int8 weights need Cin to be a multiple of ", cpu::Q8_BLOCK,
               " (one scale per block), got Cin = ", Cin);
  PYCLVP_CHECK(!scale_.is_none(), name, " is int8 but its scale is missing");
  cpu::WeightView w;
  w.data = q.data();
  w.dtype = DType::I8;
  w.scale = f32_ptr(f32(scale_, (name + " scale").c_str(), {Cout, Cin / cpu::Q8_BLOCK}));
  return w;
}

// The arrays a session points into (csrc/bindings/decoder.cc). For each: a read-only plain-ndarray
// view (the same memory; its base keeps the caller's array alive, and while it exists numpy refuses
// to resize that array: "cannot resize an array that references or is referenced"). Views, not
// copies: the weights are the model's bulk (GBs, often memory-mapped), and a copy would double them.
// numpy still lets `resize(refcheck=False)` reallocate an array that has views, so the data pointer
// and size of the array and of every ndarray below it (its .base chain) are recorded too, and
// verify() (before every call) refuses to run once one has moved instead of reading freed memory.
struct HeldArrays {
  struct Watched {
    py::array array;
    const void* data;
    py::ssize_t nbytes;
    std::string name;
  };
  std::vector<py::array> views;
  std::vector<Watched> watched;

  void hold(const py::array& a, const std::string& name) {
    py::array view(a.dtype(), std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()),
                   std::vector<py::ssize_t>(a.strides(), a.strides() + a.ndim()), a.data(), a);
    view.attr("setflags")(py::arg("write") = false);
    views.push_back(view);
    py::object b = a;
    for (int depth = 0; depth < 64 && py::isinstance<py::array>(b); ++depth) {
      py::array arr = py::reinterpret_borrow<py::array>(b);
      watched.push_back({arr, arr.data(), arr.nbytes(), name});
      b = arr.attr("base");
    }
  }

  void verify() const {
    for (const Watched& w : watched)
      PYCLVP_CHECK(w.array.data() == w.data && w.array.nbytes() == w.nbytes, "weight '", w.name,
                   "' was resized or reallocated after the session was built; build a new session");
  }
};

// An embedding table (rows, C) in float32 / float16 / bfloat16 bits, C-contiguous.
inline py::array table(const py::handle& obj, const char* name, int64_t rows, int64_t C, DType& dtype) {
  PYCLVP_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  PYCLVP_CHECK(a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == C, name, " has shape ", shape_str(a),
               ", expected (", rows, ", ", C, ")");
  PYCLVP_CHECK(c_contiguous(a), name, " must be C-contiguous");
  dtype = weight_dtype(a, name);
  return a;
}

}  // namespace pyclvp::bind
