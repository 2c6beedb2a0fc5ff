// PYBIND11_MODULE(_core): version(), build_info(), the ISA switch, and the op registrations.
// Exceptions: std::invalid_argument -> ValueError (pybind11's default translation); Interrupted (a
// Ctrl-C seen by the thread pool between chunks of a long call) -> the signal handler's exception,
// KeyboardInterrupt by default.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/dispatch.h"
#include "cpu/isa.h"
#include "common/threadpool.h"
#include "cpu/kernels.h"
#ifdef PYCLVP_WITH_CUDA
#include "cuda/device.h"
#endif

namespace py = pybind11;
using namespace pyclvp;

namespace pyclvp::bind {
void register_ops(py::module_& m);      // bindings/ops.cc
void register_decoder(py::module_& m);  // bindings/decoder.cc
void register_cuda(py::module_& m);     // bindings/cuda_ops.cc (+ cuda_decoder.cc; only with PYCLVP_WITH_CUDA)
}  // namespace pyclvp::bind

// The thread pool's interrupt check (common/threadpool.h): on the main thread only (where Python runs
// signal handlers), take the GIL for a moment and run the pending handlers. Their exception is kept
// here, off the thread state, until the Interrupted exception reaches the translator below.
namespace {
unsigned long g_main_thread = 0;
thread_local PyObject* t_pending[3] = {nullptr, nullptr, nullptr};  // (type, value, traceback) of the handler's error

bool check_signals() {
  if (PyThread_get_thread_ident() != g_main_thread || !Py_IsInitialized()) return false;
  PyGILState_STATE g = PyGILState_Ensure();
  bool stop = false;
  if (PyErr_CheckSignals() != 0) {
    stop = true;
    Py_XDECREF(t_pending[0]), Py_XDECREF(t_pending[1]), Py_XDECREF(t_pending[2]);
    PyErr_Fetch(&t_pending[0], &t_pending[1], &t_pending[2]);
  }
  PyGILState_Release(g);
  return stop;
}

void translate_interrupted(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const Interrupted&) {
    if (t_pending[0]) {
      PyErr_Restore(t_pending[0], t_pending[1], t_pending[2]);
      t_pending[0] = t_pending[1] = t_pending[2] = nullptr;
    } else {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  }
}
}  // namespace

static py::list isa_names(const std::vector<cpu::CpuIsa>& isas) {
  py::list out;
  for (auto isa : isas) out.append(cpu::isa_name(isa));
  return out;
}

static py::dict build_info() {
  py::dict d;
  d["version"] = PYCLVP_VERSION;
  d["compiler"] = PYCLVP_CXX_COMPILER;
  d["isas_compiled"] = isa_names(cpu::compiled_isas());
  d["isas_supported"] = isa_names(cpu::usable_isas());
  d["isa_best"] = cpu::isa_name(cpu::best_isa());
  d["isa_active"] = cpu::isa_name(cpu::active_isa());
  d["simd_width"] = cpu::dispatch(cpu::active_isa(), [](auto isa) { return cpu::simd_width<isa.value>(); });
  d["num_threads"] = num_threads();
#ifdef PYCLVP_WITH_CUDA
  d["cuda_compiled"] = true;
  d["cuda_archs"] = PYCLVP_CUDA_ARCHS;
  d["cuda_compiler_version"] = PYCLVP_CUDA_VERSION;
  d["cuda_runtime_version"] = cuda::runtime_version();
  d["cuda_devices"] = cuda::device_names();
#else
  d["cuda_compiled"] = false;
  d["cuda_devices"] = py::list();
#endif
  return d;
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyclvp's C++/CUDA kernels; use pyclvp.ops.get_ops() rather than this module directly";
  m.def("version", [] { return std::string(PYCLVP_VERSION); });
  m.def("build_info", &build_info, "Compiler, ISAs compiled/supported/active, CUDA compiled and devices");
  m.def("get_isa", [] { return std::string(cpu::isa_name(cpu::active_isa())); });
  m.def("set_isa", [](const std::string& name) { cpu::set_active_isa(cpu::isa_from_name(name)); },
        py::arg("name"), "Force the CPU kernels to one ISA: 'scalar', 'avx2' or 'avx512' (must be usable)");
  m.def("cuda_device_count", [] {
#ifdef PYCLVP_WITH_CUDA
    return cuda::device_count();
#else
    return 0;
#endif
  });
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  set_interrupt_check(&check_signals);
  py::register_exception_translator(&translate_interrupted);
  bind::register_ops(m);
  bind::register_decoder(m);
#ifdef PYCLVP_WITH_CUDA
  bind::register_cuda(m);  // pyclvp._core.cuda
#endif
}
