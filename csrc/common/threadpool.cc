// The process-wide thread pool behind parallel_for (see threadpool.h for the rules).
#include "common/threadpool.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pyclvp {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

constexpr auto kSpin = std::chrono::microseconds(20);    // an idle worker spins this long (pause) ...
constexpr auto kYield = std::chrono::microseconds(300);  // ... then yields the CPU until this long, then sleeps

thread_local bool t_in_job = false;  // set while this thread runs chunks: nested calls run inline

// Interruption: the outermost caller asks g_interrupt at most every kInterruptPeriod (a thread-local
// clock, so a call made of many short jobs, like the decoder step, is covered too).
constexpr auto kInterruptPeriod = std::chrono::milliseconds(50);
std::atomic<bool (*)()> g_interrupt{nullptr};
thread_local std::chrono::steady_clock::time_point t_last_check{};

// True when the caller should stop: the check is installed, its period has passed, and it says so.
bool interrupt_due() {
  bool (*fn)() = g_interrupt.load(std::memory_order_relaxed);
  if (!fn) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - t_last_check < kInterruptPeriod) return false;
  t_last_check = now;
  return fn();
}

// One job at a time. `state` packs (generation << 32 | next chunk index); a thread claims chunk i of
// generation g with a compare-exchange, so a worker that wakes up late cannot take a chunk of a
// newer job it has not read. The caller waits for the chunks to be *done*, never for the workers to
// show up: on a busy machine a descheduled worker costs nothing unless it holds a chunk.
class Pool {
 public:
  explicit Pool(int nthreads) : nworkers_(nthreads - 1) {
    for (int i = 0; i < nworkers_; ++i) threads_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Runs the job on the pool and returns true, or returns false at once if the pool is busy.
  // Throws Interrupted (after the chunks already claimed are done) when interrupt_due() says stop.
  bool try_run(int64_t n, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || n >= (int64_t{1} << 31)) return false;
    fn_.store(&fn, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = (state_.load(std::memory_order_relaxed) >> 32) + 1;
    state_.store(gen << 32);  // seq_cst: ordered before the sleepers_ check below (see worker_loop)
    if (sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> lk(m_); }
      cv_.notify_all();
    }
    t_in_job = true;
    int64_t mine = 0, handed_out = n;
    bool stop = false;
    for (int64_t i; (i = claim(gen)) >= 0;) {
      fn(i);
      ++mine;
      stop = interrupt_due();  // t_in_job stays set: kernels run from a signal handler run inline
      if (stop) {
        handed_out = close(gen);
        break;
      }
    }
    t_in_job = false;
    if (mine < handed_out) {
      done_.fetch_add(mine, std::memory_order_acq_rel);
      wait_until([&] { return done_.load(std::memory_order_acquire) >= handed_out; });
    }
    if (stop) throw Interrupted();
    return true;
  }

 private:
  // The next unclaimed chunk of generation `gen`, or -1 when it has none left (or is over).
  int64_t claim(uint64_t gen) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((s >> 32) != gen) return -1;
      const int64_t i = static_cast<int64_t>(s & 0xffffffffu);
      if (i >= n_.load(std::memory_order_relaxed)) return -1;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return i;
    }
  }

  // Hands out no more chunks of generation `gen`; returns how many were handed out (all to be waited for).
  int64_t close(uint64_t gen) {
    const int64_t n = n_.load(std::memory_order_relaxed);
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      const int64_t i = static_cast<int64_t>(s & 0xffffffffu);
      if (i >= n) return n;
      if (state_.compare_exchange_weak(s, (gen << 32) | static_cast<uint64_t>(n), std::memory_order_acq_rel)) return i;
    }
  }

  template <class Pred>
  static void wait_until(Pred ready) {
    for (int spins = 0; !ready(); ++spins) {
      if (spins < 2048) cpu_relax();
      else std::this_thread::yield();
    }
  }

  void worker_loop() {
    uint64_t seen = 0;  // the last generation this worker took part in
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t gen;
      for (int spins = 0;; ++spins) {
        if (stop_.load(std::memory_order_relaxed)) return;
        gen = state_.load(std::memory_order_acquire) >> 32;
        if (gen != seen) break;
        if ((spins & 63) != 63) {
          cpu_relax();
          continue;
        }
        const auto idle = std::chrono::steady_clock::now() - t0;
        if (idle < kSpin) continue;
        if (idle < kYield) {
          std::this_thread::yield();
          continue;
        }
        std::unique_lock<std::mutex> lk(m_);
        sleepers_.fetch_add(1);  // seq_cst, then re-check state_ under the lock: no lost wake-up
        cv_.wait(lk, [&] { return (state_.load() >> 32) != seen || stop_.load(); });
        sleepers_.fetch_sub(1);
      }
      seen = gen;
      const std::function<void(int64_t)>* fn = fn_.load(std::memory_order_relaxed);
      t_in_job = true;
      int64_t mine = 0;
      for (int64_t i; (i = claim(gen)) >= 0; ++mine) (*fn)(i);  // a successful claim means fn is gen's
      t_in_job = false;
      if (mine) done_.fetch_add(mine, std::memory_order_acq_rel);
    }
  }

  const int nworkers_;
  std::vector<std::thread> threads_;
  std::mutex busy_;  // held by the caller for the whole job
  std::mutex m_;     // guards sleeping/waking
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> n_{0}, done_{0};
  std::atomic<const std::function<void(int64_t)>*> fn_{nullptr};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

int default_threads() {
  if (const char* env = std::getenv("PYCLVP_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end && *end == '\0' && v >= 1) return static_cast<int>(v < 256 ? v : 256);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw < 256 ? hw : 256);
}

std::mutex g_mutex;          // guards g_pool and g_threads
std::shared_ptr<Pool> g_pool;  // created on first parallel_for with g_threads threads
int g_threads = 0;             // 0: not decided yet

void atfork_prepare() { g_mutex.lock(); }
void atfork_parent() { g_mutex.unlock(); }
void atfork_child() {
  // The parent's workers do not exist in the child: drop (leak) the pool without joining them.
  new std::shared_ptr<Pool>(std::move(g_pool));
  g_mutex.unlock();
}

std::shared_ptr<Pool> pool() {
  static const bool registered = (pthread_atfork(atfork_prepare, atfork_parent, atfork_child), true);
  (void)registered;
  std::lock_guard<std::mutex> lk(g_mutex);
  if (g_threads == 0) g_threads = default_threads();
  if (!g_pool && g_threads > 1) g_pool = std::make_shared<Pool>(g_threads);
  return g_pool;
}

}  // namespace

int num_threads() {
  std::lock_guard<std::mutex> lk(g_mutex);
  return g_threads == 0 ? default_threads() : g_threads;
}

void set_num_threads(int n) {
  if (n < 1 || n > 256) throw std::invalid_argument("set_num_threads: n must be in [1, 256], got " + std::to_string(n));
  std::shared_ptr<Pool> old;
  {
    std::lock_guard<std::mutex> lk(g_mutex);
    old = std::move(g_pool);  // joined below, once any job still running on it has finished
    g_threads = n;
  }
}

void set_interrupt_check(bool (*fn)()) { g_interrupt.store(fn); }

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (t_in_job) {  // nested in a pool job: inline, never interrupted (only the outermost caller stops)
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  if (n > 1) {
    std::shared_ptr<Pool> p = pool();
    if (p && p->try_run(n, fn)) return;
  }
  // one chunk, single-threaded or pool busy: inline, checking for an interrupt between chunks
  for (int64_t i = 0; i < n; ++i) {
    fn(i);
    if (interrupt_due()) throw Interrupted();
  }
}

}  // namespace pyclvp
