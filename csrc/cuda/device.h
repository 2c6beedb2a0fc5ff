// provides: what the CUDA runtime reports (device count and names); plain C++ so the bindings,
// compiled by the host compiler, can include it. Defined in device.cu.
#pragma once
#include <string>
#include <vector>

namespace pyclvp::cuda {

int device_count();                         // 0 when no driver/device (never throws)
std::vector<std::string> device_names();    // one entry per device
int runtime_version();                      // e.g. 13000

}  // namespace pyclvp::cuda
