// The next token on the device: pyclvp/decoding.py's process_logits and sample()/argmax for every
// row of a decoder step, so that only the chosen ids (B int64) come back to the host instead of the
// logits (B x V float32), and the processing runs beside the logits instead of in NumPy. Contract in
// csrc/cuda/kernels.h (SampleArgs).
//
// One block of kThreads per row, in the host's order:
//   1. x = logits; seen tokens: x < 0 ? x * penalty : x / penalty; x[suppress] = -inf; x /= temperature
//   2. greedy: out = argmax x (the lowest id on a tie; NaN wins, as numpy.argmax)
//   3. top-k: remove x < the k-th largest value (ties with it stay)
//      top-p: with p = softmax(x), remove the tokens whose cumulative probability in ascending
//             (value, id) order is <= 1 - top_p (the host's stable argsort orders ties by id)
//   4. sampling: c = cumulative sum of exp(x - max x) in index order (float64);
//      out = min(#{i : c[i] <= u * c[V-1]}, V - 1)
//   5. seen[out] = 1
// Step 3 sorts nothing: both cuts are radix selects (radix_crossing) over order-preserving integer
// keys, 8 bits per pass: a histogram of the row's weight per digit (the token count for top-k, the
// probability in 2^-52 fixed point for top-p), then the digit where the running weight crosses the
// threshold. Integer sums are exact in any order, so the result is the same run to run. The
// cumulative sums of step 4 are a scan: each thread sums a contiguous segment, the block scans the
// segment totals, each thread walks its segment again from its prefix.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kThreads = 512;

// float bits -> unsigned with the same order (negatives flipped, positives above them); -0 is +0,
// so that the two zeros tie (and order by id) as they do in the host's argsort
__device__ __forceinline__ uint32_t orderable(float x) {
  const uint32_t b = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float from_orderable(uint32_t o) {
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// (value, id) a beats (value, id) b for argmax: NaN first, then the larger value, then the lower id
__device__ __forceinline__ bool beats(float va, int64_t ia, float vb, int64_t ib) {
  if (isnan(va) != isnan(vb)) return isnan(va);
  if (va != vb && !isnan(va)) return va > vb;
  return ia < ib;
}

// The block's argmax of each thread's (v, i); every thread gets the id.
__device__ int64_t block_argmax(float v, int64_t i) {
  constexpr int NW = kThreads / 32;
  __shared__ float pv[NW];
  __shared__ int64_t pi[NW];
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(kFullMask, v, o);
    const int64_t i2 = __shfl_xor_sync(kFullMask, i, o);
    if (beats(v2, i2, v, i)) v = v2, i = i2;
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) pv[w] = v, pi[w] = i;
  __syncthreads();
  v = pv[0], i = pi[0];
  for (int k = 1; k < NW; ++k)
    if (beats(pv[k], pi[k], v, i)) v = pv[k], i = pi[k];
  __syncthreads();  // pv, pi may be reused
  return i;
}

// The exclusive prefix sum of each thread's v over the block, in thread order; *total gets the sum.
__device__ double block_exclusive_scan(double v, double* total) {
  constexpr int NW = kThreads / 32;
  __shared__ double warp_prefix[NW + 1];  // [w]: the sum over warps before w; [NW]: the block's sum
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  double incl = v;  // the inclusive scan within the warp
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_sync(kFullMask, incl, lane - o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_prefix[w] = incl;
  __syncthreads();
  if (threadIdx.x == 0) {  // NW warp totals: a sequential scan
    double run = 0;
    for (int k = 0; k < NW; ++k) {
      const double t = warp_prefix[k];
      warp_prefix[k] = run;
      run += t;
    }
    warp_prefix[NW] = run;
  }
  __syncthreads();
  const double prev = __shfl_sync(kFullMask, incl, lane - 1);
  const double out = warp_prefix[w] + (lane == 0 ? 0.0 : prev);
  *total = warp_prefix[NW];
  __syncthreads();  // warp_prefix may be reused
  return out;
}

// radix_crossing's shared memory, declared once in the kernel (a __shared__ array inside the template
// would be allocated once per instantiation)
struct RadixScratch {
  unsigned long long hist[kThreads / 32][256];  // per warp: the weight by digit
  unsigned long long total[256];                // merged
  uint64_t decided;                             // the digits of K decided so far
  unsigned long long below;                     // the weight of the tokens whose decided digits are smaller
};

// The smallest key K with W(K) = (the weight of the row's tokens whose key <= K) > T, where token i
// has key(i) (`bits` wide) and weight(i); T must be below the row's total weight. Each pass decides
// 8 bits of K from the top: per-warp histograms of the weight by digit among the tokens that match
// the digits decided so far (private per warp, so that equal digits contend within a warp only),
// merged, then thread 0 walks the digits until the weight crosses T.
template <class KeyFn, class WeightFn>
__device__ uint64_t radix_crossing(RadixScratch& rs, int64_t V, int bits, unsigned long long T, KeyFn key,
                                   WeightFn weight) {
  constexpr int NW = kThreads / 32;
  if (threadIdx.x == 0) rs.decided = 0, rs.below = 0;
  for (int shift = bits - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < NW * 256; i += kThreads) rs.hist[i / 256][i % 256] = 0;
    __syncthreads();
    const uint64_t high = shift + 8 >= 64 ? 0 : ~uint64_t{0} << (shift + 8);  // the decided digits' bits
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const uint64_t k = key(i);
      if ((k & high) == rs.decided) atomicAdd(&rs.hist[threadIdx.x >> 5][(k >> shift) & 255], weight(i));
    }
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += kThreads) {
      unsigned long long t = 0;
      for (int w = 0; w < NW; ++w) t += rs.hist[w][d];
      rs.total[d] = t;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int d = 0;
      while (d < 255 && rs.below + rs.total[d] <= T) rs.below += rs.total[d++];
      rs.decided |= static_cast<uint64_t>(d) << shift;
    }
    __syncthreads();
  }
  return rs.decided;
}

// This thread's contiguous segment [lo, hi) of n items.
__device__ __forceinline__ void segment(int64_t n, int64_t* lo, int64_t* hi) {
  const int64_t per = (n + kThreads - 1) / kThreads;
  *lo = min(n, threadIdx.x * per), *hi = min(n, *lo + per);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleArgs a) {
  __shared__ RadixScratch rs;
  wait_for_previous_kernel();
  const int64_t row = blockIdx.x, V = a.V, tid = threadIdx.x;
  const Pick& o = a.pick;
  const float temperature = o.do_sample ? o.temperature : 1.0f;
  float* x = a.logits + row * V;
  uint8_t* seen = a.seen + row * V;

  // 1. the processors that act token by token
  for (int64_t i = tid; i < V; i += kThreads) {
    if (a.start >= 0) seen[i] = (i == a.start);
    float v = x[i];
    if (seen[i]) v = v < 0.0f ? v * o.penalty : v / o.penalty;
    if (i == o.suppress) v = -INFINITY;
    x[i] = v / temperature;
  }
  __syncthreads();

  int64_t pick;
  if (!o.do_sample) {  // 2. greedy
    float best = -INFINITY;  // a thread without tokens loses to any real one
    int64_t best_i = INT64_MAX;
    for (int64_t i = tid; i < V; i += kThreads)
      if (beats(x[i], i, best, best_i)) best = x[i], best_i = i;
    pick = block_argmax(best, best_i);
  } else {
    if (o.top_k > 0) {  // 3. top-k: the k-th largest value is the k-th smallest of the flipped keys
      const uint64_t kth = radix_crossing(
          rs, V, 32, static_cast<unsigned long long>(min(o.top_k, V) - 1),
          [&](int64_t i) { return static_cast<uint64_t>(~orderable(x[i])); }, [](int64_t) { return 1ull; });
      const float v_kth = from_orderable(~static_cast<uint32_t>(kth));
      for (int64_t i = tid; i < V; i += kThreads)
        if (x[i] < v_kth) x[i] = -INFINITY;
      __syncthreads();
    }
    if (o.top_p) {  // top-p: remove the keys below the one where the ascending probability crosses 1 - top_p
      float mx = -INFINITY;
      for (int64_t i = tid; i < V; i += kThreads) mx = fmaxf(mx, x[i]);
      const float m = block_max<kThreads>(mx);
      float part = 0.0f;
      for (int64_t i = tid; i < V; i += kThreads) part += expf(x[i] - m);
      const float sum = block_sum<kThreads>(part);
      auto key = [&](int64_t i) { return static_cast<uint64_t>(orderable(x[i])) << 32 | static_cast<uint64_t>(i); };
      auto weight = [&](int64_t i) {  // the probability in 2^-52 fixed point: V of them sum below 2^63
        return static_cast<unsigned long long>(ldexp(static_cast<double>(expf(x[i] - m) / sum), 52));
      };
      unsigned long long all = 0;
      for (int64_t i = tid; i < V; i += kThreads) all += weight(i);
      all = block_sum<kThreads>(all);
      const auto T = static_cast<unsigned long long>(ldexp(static_cast<double>(o.top_p_remove), 52));
      const uint64_t cut = radix_crossing(rs, V, 64, min(T, all - 1), key, weight);  // all - 1: the largest stays
      for (int64_t i = tid; i < V; i += kThreads)  // reads x[i] before any thread writes it: x[i] is its own
        if (key(i) < cut) x[i] = -INFINITY;
      __syncthreads();
    }
    // 4. the inverse-CDF draw, in index order, in float64
    float mx = -INFINITY;
    for (int64_t i = tid; i < V; i += kThreads) mx = fmaxf(mx, x[i]);
    const double m = block_max<kThreads>(mx);
    int64_t s0, s1;
    segment(V, &s0, &s1);
    double seg = 0.0;
    for (int64_t i = s0; i < s1; ++i) seg += exp(static_cast<double>(x[i]) - m);
    double total;
    double c = block_exclusive_scan(seg, &total);
    const double threshold = a.u[row] * total;
    int64_t below = 0;
    for (int64_t i = s0; i < s1; ++i) {
      c += exp(static_cast<double>(x[i]) - m);
      below += c <= threshold;
    }
    pick = min(block_sum<kThreads>(below), V - 1);
    if (!isfinite(total)) pick = -1;  // NaN or overflowed logits: no draw (the host refuses such a row too)
  }
  if (tid == 0) {  // 5.
    a.out[row] = pick;
    if (pick >= 0) seen[pick] = 1;
  }
}

}  // namespace

void sample(const SampleArgs& a, StreamHandle stream) {
  if (a.V > (int64_t(1) << 32))  // an id is the low 32 bits of a top-p key
    throw std::runtime_error("the device sampler takes vocabularies of at most 2^32 tokens, got " + std::to_string(a.V));
  launch(sample_kernel, grid_x(a.B, "sample"), kThreads, stream, a);
}

}  // namespace pyclvp::cuda
