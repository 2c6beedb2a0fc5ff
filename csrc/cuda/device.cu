// CUDA runtime queries. A missing driver or device is "0 devices", not an error: the Python
// side turns that into a clear message when backend="cuda" is requested.
#include <cuda_runtime.h>

#include "cuda/device.h"

namespace pyclvp::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

std::vector<std::string> device_names() {
  std::vector<std::string> out;
  for (int i = 0, n = device_count(); i < n; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) out.emplace_back(prop.name);
  }
  return out;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace pyclvp::cuda
