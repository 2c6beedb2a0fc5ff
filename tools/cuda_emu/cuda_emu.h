// cuda_emu.h: just enough of CUDA to run pyclvp's kernels (csrc/cuda/*.cu) on the CPU, for checking
// them where there is no GPU (tools/cuda_emu/build.py compiles the core's CUDA part with it; see there).
//
// A kernel launch runs its blocks one after another on the calling thread; the threads of a block
// are fibers switched only at barriers, so:
//   __syncthreads()        waits until every live thread of the block is at a __syncthreads()
//   __shfl_*_sync, __syncwarp()  wait until every live lane of the warp is at a warp barrier
//   __shared__             is `static`: one copy, shared by the running block's fibers
// A barrier that can never complete (a __syncthreads() inside divergent code, a shuffle in a
// partial warp) aborts with a message instead of hanging. Device memory is host memory; streams
// run in order, immediately; stream capture records closures that cudaGraphLaunch replays.
// Not emulated: concurrency between blocks (races between blocks do not show), timing, and any
// CUDA call pyclvp does not make.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "common/half.h"  // the bit-exact float16 / bfloat16 conversions

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// ---------------------------------------------------------------------------------------------
// Vector and half types

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline float __half2float(__half h) { return pyclvp::to_f32(pyclvp::f16_t{h.bits}); }
inline float __bfloat162float(__nv_bfloat16 h) { return pyclvp::to_f32(pyclvp::bf16_t{h.bits}); }
inline __half __float2half_rn(float f) { return __half{pyclvp::to_f16(f).bits}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{pyclvp::to_bf16(f).bits}; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
using std::isnan;

inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
// Fibers switch only at barriers, so a plain update is atomic here.
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline int max(int a, int b) { return a > b ? a : b; }
using std::isfinite;  // CUDA's device isfinite is a global function

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// ---------------------------------------------------------------------------------------------
// The block scheduler

namespace emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// A fiber's saved context: a stack pointer with the callee-saved registers pushed below it
// (x86-64: a 6-register switch, no system call) or, elsewhere, a ucontext_t (glibc's swapcontext).
#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .pushsection .text
  .weak emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .popsection
)");
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& save, Context& load) { emu_switch(&save.sp, load.sp); }
inline void start(Context& c, char* stack, size_t size, void (*fn)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15};
  auto* sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                           // fn's return address slot: fn never returns
  *--sp = reinterpret_cast<void*>(fn);       // emu_switch's `ret` lands in fn
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // the six registers emu_switch pops
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }
inline void start(Context& c, char* stack, size_t size, void (*fn)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fn, 0);
}
#endif

struct Fiber {
  Context ctx;
  dim3 tid;
  int linear = 0;
  State state = RUNNABLE;
};

struct Block {
  dim3 grid, block, bid;
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  Context sched;
  int cur = 0;
  const std::function<void()>* body = nullptr;
  uint64_t slots[1024];  // shuffle exchange, one 8-byte slot per thread
};

inline Block& blk() {
  static Block b;
  return b;
}
inline Fiber& me() { return blk().fibers[blk().cur]; }

inline void wait(State s) {
  me().state = s;
  switch_to(me().ctx, blk().sched);
}

inline void entry() {
  (*blk().body)();
  me().state = DONE;
  switch_to(me().ctx, blk().sched);  // never resumed
}

// Releases the barriers that every live member has reached; false when none could be released.
inline bool release() {
  Block& b = blk();
  const int n = static_cast<int>(b.fibers.size());
  bool any = false, all_block = true, any_block = false;
  for (auto& f : b.fibers) {
    if (f.state == DONE) continue;
    if (f.state != AT_BLOCK_BARRIER) all_block = false;
    else any_block = true;
  }
  if (all_block && any_block) {
    for (auto& f : b.fibers)
      if (f.state == AT_BLOCK_BARRIER) f.state = RUNNABLE;
    return true;
  }
  for (int w0 = 0; w0 < n; w0 += 32) {
    bool all = true, some = false;
    for (int i = w0; i < std::min(n, w0 + 32); ++i) {
      if (b.fibers[i].state == DONE) continue;
      if (b.fibers[i].state == AT_WARP_BARRIER) some = true;
      else all = false;
    }
    if (all && some) {
      for (int i = w0; i < std::min(n, w0 + 32); ++i)
        if (b.fibers[i].state == AT_WARP_BARRIER) b.fibers[i].state = RUNNABLE;
      any = true;
    }
  }
  return any;
}

inline void run_block(const std::function<void()>& body) {
  Block& b = blk();
  const int n = static_cast<int>(b.block.x * b.block.y * b.block.z);
  if (n > 1024) {
    std::fprintf(stderr, "cuda_emu: %d threads per block\n", n);
    std::abort();
  }
  b.fibers.assign(n, Fiber{});
  constexpr size_t kStack = 128 * 1024;
  while (static_cast<int>(b.stacks.size()) < n) b.stacks.emplace_back(new char[kStack]);
  b.body = &body;
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.linear = i;
    f.tid = dim3(i % b.block.x, (i / b.block.x) % b.block.y, i / (b.block.x * b.block.y));
    start(f.ctx, b.stacks[i].get(), kStack, entry);
  }
  for (;;) {
    bool ran = false, live = false;
    for (int i = 0; i < n; ++i) {
      if (b.fibers[i].state != RUNNABLE) continue;
      b.cur = i;
      switch_to(b.sched, b.fibers[i].ctx);
      ran = true;
    }
    for (auto& f : b.fibers) live |= f.state != DONE;
    if (!live) return;
    if (!release() && !ran) {
      std::fprintf(stderr, "cuda_emu: deadlock: a barrier some live threads of block (%u, %u, %u) never reach\n",
                   b.bid.x, b.bid.y, b.bid.z);
      std::abort();
    }
  }
}

// Graph capture: while a stream is capturing, work is recorded instead of run.
struct Graph {
  std::vector<std::function<void()>> work;
};
inline Graph*& capturing() {
  static Graph* g = nullptr;
  return g;
}
inline void submit(std::function<void()> w) {
  if (capturing()) capturing()->work.push_back(std::move(w));
  else w();
}

inline void launch(dim3 grid, dim3 block, std::function<void()> body) {
  submit([grid, block, body = std::move(body)] {
    Block& b = blk();
    b.grid = grid, b.block = block;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          b.bid = dim3(x, y, z);
          run_block(body);
        }
  });
}

template <class T>
inline T exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  Block& b = blk();
  const int i = me().linear, w0 = i - i % 32;
  std::memcpy(&b.slots[i], &v, sizeof(T));
  wait(AT_WARP_BARRIER);
  T r;
  std::memcpy(&r, &b.slots[w0 + (src_lane & 31)], sizeof(T));
  wait(AT_WARP_BARRIER);
  return r;
}

}  // namespace emu

#define threadIdx (emu::me().tid)
#define blockIdx (emu::blk().bid)
#define blockDim (emu::blk().block)
#define gridDim (emu::blk().grid)

inline void __syncthreads() { emu::wait(emu::AT_BLOCK_BARRIER); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::AT_WARP_BARRIER); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
  return emu::exchange(v, (emu::me().linear % 32) ^ mask);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
  return emu::exchange(v, src);
}

// ---------------------------------------------------------------------------------------------
// The runtime API pyclvp uses

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal = 1 };
constexpr unsigned cudaStreamNonBlocking = 1;
struct CUstream_st {
  int unused;
};
struct CUgraph_st {
  emu::Graph g;
};
struct CUgraphExec_st {
  emu::Graph g;
};
using cudaStream_t = CUstream_st*;
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraphExec_st*;
struct cudaDeviceProp {
  char name[256];
};

inline const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "cuda_emu (CPU)");
  return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75 };
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 9;  // as an H100: launches carry the programmatic-dependent-launch attribute (ignored here)
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  if (*p) std::memset(*p, 0xA5, n);  // poison: unwritten memory shows as garbage, not zeros
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  emu::submit([=] { std::memcpy(d, s, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
  emu::submit([=] { std::memset(d, v, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dp, const void* s, size_t sp, size_t w, size_t h, cudaMemcpyKind,
                                     cudaStream_t) {
  emu::submit([=] {
    for (size_t r = 0; r < h; ++r) std::memcpy(static_cast<char*>(d) + r * dp, static_cast<const char*>(s) + r * sp, w);
  });
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new CUstream_st{0};
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::capturing() ? cudaErrorInvalidValue : cudaSuccess; }
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (emu::capturing()) return cudaErrorInvalidValue;
  emu::capturing() = new emu::Graph;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  *g = new CUgraph_st{std::move(*emu::capturing())};
  delete emu::capturing();
  emu::capturing() = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  *e = new CUgraphExec_st{g->g};
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}
// Launches: the blocks run one after another, in order with everything else (a programmatic dependent
// launch waits for nothing, since the kernel before has finished).
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 6 };
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  union {
    int programmaticStreamSerializationAllowed;
  } val;
};
struct cudaLaunchConfig_t {  // CUDA's fields, in CUDA's order (the first two are gridDim and blockDim
  dim3 grid, block;          // there, names this file's macros take)
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};
template <class... P, class... A>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*kernel)(P...), A... args) {
  if (c->dynamicSmemBytes) return cudaErrorInvalidValue;  // not emulated
  emu::launch(c->grid, c->block, [kernel, args...] { kernel(args...); });
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  for (auto& w : e->g.work) w();
  return cudaSuccess;
}
