// Device and pinned host memory, streams, graphs and copies (csrc/cuda/memory.h), and the error
// helper every CUDA call goes through (csrc/cuda/common.cuh: PYCLVP_CUDA_CHECK).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "common/check.h"
#include "cuda/common.cuh"
#include "cuda/device.h"
#include "cuda/memory.h"

namespace pyclvp::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(concat("CUDA error: ", call, " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                  ") at ", file, ":", line));
}

void require_device() {
  if (device_count() < 1)
    throw std::runtime_error("no CUDA device: pyclvp was built with CUDA, but the runtime reports no usable GPU "
                             "(no device, no driver, or CUDA_VISIBLE_DEVICES hides them)");
}

bool dependent_launch() {
  static const bool on = [] {
    // opt-in: measured slower on an H200 (2026-11-26, bench/RESULTS.md "CUDA core")
    if (const char* env = std::getenv("PYCLVP_CUDA_PDL"); !env || std::strcmp(env, "1") != 0) return false;
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
  }();
  return on;
}

namespace {

[[noreturn]] void out_of_memory(cudaError_t err, const char* kind, size_t bytes, const char* what) {
  cudaGetLastError();  // an allocation failure is not sticky: clear it so later calls start clean
  throw std::runtime_error(
      concat("CUDA out of memory: ", kind, " of ", bytes, " bytes for ", what, " failed (", cudaGetErrorString(err), ")"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DeviceBuffer / PinnedBuffer

DeviceBuffer::DeviceBuffer(size_t bytes, const char* what) : n_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&p_, bytes);
  if (err != cudaSuccess) out_of_memory(err, "cudaMalloc", bytes, what);
}

DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);  // errors here (a dead context) cannot be reported from a destructor
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}

PinnedBuffer::PinnedBuffer(size_t bytes, const char* what) : n_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMallocHost(&p_, bytes);
  if (err != cudaSuccess) out_of_memory(err, "cudaMallocHost", bytes, what);
}

PinnedBuffer::~PinnedBuffer() {
  if (p_) cudaFreeHost(p_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFreeHost(p_);
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}

// ---------------------------------------------------------------------------------------------
// Stream / GraphExec

Stream::Stream() { PYCLVP_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }

Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}

GraphExec::~GraphExec() { reset(); }

void GraphExec::reset() {
  if (g_) cudaGraphExecDestroy(g_);
  g_ = nullptr;
}

void GraphExec::launch(StreamHandle s) const { PYCLVP_CUDA_CHECK(cudaGraphLaunch(g_, s)); }

// ---------------------------------------------------------------------------------------------
// Copies

void to_device(void* dst, const void* src, size_t bytes, StreamHandle s) {
  if (bytes) PYCLVP_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
}

void to_host(void* dst, const void* src, size_t bytes, StreamHandle s) {
  if (bytes) PYCLVP_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
}

void device_copy(void* dst, const void* src, size_t bytes, StreamHandle s) {
  if (bytes) PYCLVP_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}

void fill_bytes(void* dst, int value, size_t bytes, StreamHandle s) {
  if (bytes) PYCLVP_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, s));
}

void to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                  StreamHandle s) {
  if (width && height)
    PYCLVP_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyHostToDevice, s));
}

void sync(StreamHandle s) { PYCLVP_CUDA_CHECK(cudaStreamSynchronize(s)); }

}  // namespace pyclvp::cuda
