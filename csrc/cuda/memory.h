// provides: DeviceBuffer and PinnedBuffer (owners of device / page-locked host memory), Stream (an
// owned non-blocking stream), GraphExec (an owned instantiated CUDA graph), the copies between host
// and device, and require_device(). Plain C++ (no CUDA headers), so the bindings, compiled by the
// host compiler, can hold them; defined in csrc/cuda/memory.cu.
//
// Every failing CUDA call throws std::runtime_error naming the call and the CUDA error
// (pybind11: RuntimeError); destructors never throw. Allocation is plain cudaMalloc /
// cudaMallocHost (no managed memory): a buffer is allocated once and reused (weights, KV cache,
// step scratch) or lives for one call (the ops, prefill's scratch).
#pragma once
#include <cstddef>
#include <cstdint>

struct CUstream_st;
struct CUgraphExec_st;

namespace pyclvp::cuda {

using StreamHandle = CUstream_st*;  // what cudaStream_t is; nullptr is the legacy default stream

// Throws std::runtime_error("no CUDA device: ...") unless the runtime reports at least one device.
void require_device();

// Whether kernels are launched as programmatic dependent launches (csrc/cuda/common.cuh: launch()):
// when PYCLVP_CUDA_PDL is "1" and the current device can (compute capability >= 9.0). Decided once.
bool dependent_launch();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const char* what);  // `what` names the buffer in an out-of-memory error
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

class PinnedBuffer {  // page-locked host memory: the only host memory a captured graph may copy to/from
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, const char* what);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

class Stream {
 public:
  Stream();  // cudaStreamNonBlocking: no implicit synchronization with the legacy default stream
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  StreamHandle get() const { return s_; }

 private:
  StreamHandle s_ = nullptr;
};

class GraphExec {  // an instantiated graph, replayed with launch()
 public:
  GraphExec() = default;
  ~GraphExec();
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  explicit operator bool() const { return g_ != nullptr; }
  void reset();
  void launch(StreamHandle s) const;
  CUgraphExec_st** out() { return &g_; }  // for the capture (csrc/cuda/decoder_step.cu)

 private:
  CUgraphExec_st* g_ = nullptr;
};

// Asynchronous on `s`; a pageable host pointer makes the runtime stage the copy (and wait for it).
void to_device(void* dst, const void* src, size_t bytes, StreamHandle s);
void to_host(void* dst, const void* src, size_t bytes, StreamHandle s);
void device_copy(void* dst, const void* src, size_t bytes, StreamHandle s);  // device -> device
void fill_bytes(void* dst, int value, size_t bytes, StreamHandle s);
// dst[r * dpitch + c] = src[r * spitch + c] for rows r < height, bytes c < width (host -> device)
void to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                  StreamHandle s);
void sync(StreamHandle s);

}  // namespace pyclvp::cuda
