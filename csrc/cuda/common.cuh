// provides: what every CUDA kernel file shares: PYCLVP_CUDA_CHECK (a failed CUDA call throws
// std::runtime_error; pybind11 maps it to RuntimeError), launch() (the one way a kernel is launched)
// with its device half wait_for_previous_kernel(), grid-size helpers, warp and block reductions, the
// storage types' loads and stores (float32 / float16 / bfloat16, widened to float32 on load, rounded
// to nearest even on store, as csrc/common/half.h), and the activations (matches
// pyclvp/ops/numpy_ops.py).
//
// For the .cu files only (it needs the CUDA headers). The bindings see the plain C++ interface,
// csrc/cuda/kernels.h and csrc/cuda/memory.h. No fast-math anywhere: expf, tanhf, erff, sqrtf and
// division are the accurate ones (nvcc's defaults: -prec-div=true -prec-sqrt=true -ftz=false).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/half.h"  // DType
#include "cuda/kernels.h"

namespace pyclvp::cuda {

// Defined in csrc/cuda/memory.cu.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, call, file, line);
}

}  // namespace pyclvp::cuda

#define PYCLVP_CUDA_CHECK(call) ::pyclvp::cuda::cuda_check((call), #call, __FILE__, __LINE__)

namespace pyclvp::cuda {

// ---------------------------------------------------------------------------------------------
// Launching: programmatic dependent launch
//
// The decoder step is a chain of ~150 small kernels, each reading what the one before wrote. Launched
// plainly, each starts only after the previous one has finished, and the GPU's memory idles for the
// few microseconds of every hand-over: at batch 1 that is as long as the step's reading of its
// weights. With programmatic dependent launch (PYCLVP_CUDA_PDL=1 on compute capability >= 9.0; memory.h's
// dependent_launch()) kernel N + 1's blocks are started while kernel N still runs: they fetch their
// read-only weights into L2 (prefetch_l2), then wait in wait_for_previous_kernel() until kernel N has
// finished and its writes are visible. So the rule, for every kernel here (tests/test_cuda.py checks
// it in the sources):
//
//   the first statement of a kernel is wait_for_previous_kernel(), after at most __shared__
//   declarations and prefetch_ calls; nothing before it reads or writes memory a kernel writes.
//
// A kernel N + 1 waits for N, which waited for N - 1 before it let N + 1 start: so all earlier work
// in the stream is done too. Below sm_90, or without the launch attribute, both halves are no-ops
// and kernels run one after another as usual. Measured on an H200 (bench/RESULTS.md, "CUDA core"), the
// batch-1 step took 1-8% longer with it than without, so it is off unless PYCLVP_CUDA_PDL=1.

__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");              // kernel N - 1 done, its writes visible
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");  // kernel N + 1 may start its blocks
#endif
}

// A hint that [p, p + bytes) will be read soon: fetched from memory into L2 (sm_90+; else nothing).
// p 16-byte aligned, bytes a multiple of 16, < 2^32.
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(static_cast<unsigned>(bytes)) : "memory");
#endif
}

// kernel<<<grid, block, 0, stream>>>(args...), as a programmatic dependent launch when
// dependent_launch(); a bad launch configuration is reported here, not by some later call.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, StreamHandle stream, A... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  const cudaLaunchConfig_t cfg = {grid, block, 0, stream, attr, dependent_launch() ? 1u : 0u};
  PYCLVP_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(args)...));
}

constexpr unsigned kFullMask = 0xffffffffu;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A grid dimension for n blocks; a launch never silently truncates its grid.
inline unsigned grid_dim(int64_t n, int64_t limit, const char* what) {
  if (n < 1 || n > limit) throw std::runtime_error(std::string("CUDA grid for ") + what + " out of range: " +
                                                   std::to_string(n) + " blocks (limit " + std::to_string(limit) + ")");
  return static_cast<unsigned>(n);
}
inline unsigned grid_x(int64_t n, const char* what) { return grid_dim(n, INT_MAX, what); }
inline unsigned grid_yz(int64_t n, const char* what) { return grid_dim(n, 65535, what); }

// Elementwise kernels: a grid-stride loop over n elements, at most this many blocks of 256 threads.
inline unsigned grid_stride_blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, 256), 4096)); }

// ---------------------------------------------------------------------------------------------
// Storage types: DType <-> element type

template <class T>
struct Type {
  using type = T;
};

// f(Type<float>{}) / f(Type<__half>{}) / f(Type<__nv_bfloat16>{}) for the storage dtype
template <class F>
decltype(auto) dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::F16: return f(Type<__half>{});
    case DType::BF16: return f(Type<__nv_bfloat16>{});
    default: return f(Type<float>{});
  }
}

inline size_t dtype_size(DType dt) { return dt == DType::F32 ? 4 : 2; }

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Eight consecutive elements as fetched by 16-byte loads (two for float32), widened on use.
template <class T>
struct Pack8 {
  uint4 u;  // 8 x 16-bit
};
template <>
struct Pack8<float> {
  float4 lo, hi;
};

// p must be 16-byte aligned. ldg: the read-only path, for data no kernel writes while it runs (weights).
template <class T>
__device__ __forceinline__ Pack8<T> ldg8(const T* p) {
  return Pack8<T>{__ldg(reinterpret_cast<const uint4*>(p))};
}
template <>
__device__ __forceinline__ Pack8<float> ldg8<float>(const float* p) {
  const float4* q = reinterpret_cast<const float4*>(p);
  return Pack8<float>{__ldg(q), __ldg(q + 1)};
}

// A plain (coherent) 16-byte load: for data this kernel may have written itself (the KV cache).
template <class T>
__device__ __forceinline__ Pack8<T> ld8(const T* p) {
  return Pack8<T>{*reinterpret_cast<const uint4*>(p)};
}
template <>
__device__ __forceinline__ Pack8<float> ld8<float>(const float* p) {
  const float4* q = reinterpret_cast<const float4*>(p);
  return Pack8<float>{q[0], q[1]};
}

__device__ __forceinline__ void widen(const Pack8<float>& p, float (&v)[8]) {
  v[0] = p.lo.x, v[1] = p.lo.y, v[2] = p.lo.z, v[3] = p.lo.w, v[4] = p.hi.x, v[5] = p.hi.y, v[6] = p.hi.z, v[7] = p.hi.w;
}
// The 16-bit widenings take the halves out of each 32-bit word with shifts (little-endian: element
// 2i is the low half), not through a __half2 pointer: reading a uint4 as __half2 breaks C++'s
// aliasing rules, and tools/cuda_emu's host build miscompiled exactly that.
__device__ __forceinline__ void widen(const Pack8<__half>& p, float (&v)[8]) {
  const unsigned w[4] = {p.u.x, p.u.y, p.u.z, p.u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
    v[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
  }
}
__device__ __forceinline__ void widen(const Pack8<__nv_bfloat16>& p, float (&v)[8]) {
  const unsigned w[4] = {p.u.x, p.u.y, p.u.z, p.u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // a bfloat16 is the top half of a float32
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---------------------------------------------------------------------------------------------
// Reductions (butterfly shuffles: every lane ends with the result; the order is fixed, so results
// are the same run to run)

template <class T>  // float, or an integer type (exact in any order)
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// The sum over a block of NT threads (NT a multiple of 32, <= 1024); every thread gets it. Every
// thread of the block must call it (it has barriers); it may be called again right after.
template <int NT, class T>
__device__ __forceinline__ T block_sum(T v) {
  static_assert(NT % 32 == 0 && NT <= 1024, "block_sum: NT must be a multiple of 32, at most 1024");
  constexpr int NW = NT / 32;
  __shared__ T part[NW];
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  v = warp_sum(lane < NW ? part[lane] : T(0));
  __syncthreads();  // part[] may be reused by the next call
  return v;
}

template <int NT>
__device__ __forceinline__ float block_max(float v) {
  constexpr int NW = NT / 32;
  __shared__ float part[NW];
  v = warp_max(v);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  v = warp_max(lane < NW ? part[lane] : -INFINITY);
  __syncthreads();
  return v;
}

// ---------------------------------------------------------------------------------------------
// Activations

// matches pyclvp/ops/numpy_ops.py::gelu_new (GPT-2's tanh approximation)
__device__ __forceinline__ float gelu_new_f(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * (x * x * x))));
}

// matches pyclvp/ops/numpy_ops.py::gelu (exact, erf-based)
// silu: x sigmoid(x) as x / (1 + e^-x), as the CPU kernel (x -> -inf gives -0)
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

}  // namespace pyclvp::cuda
