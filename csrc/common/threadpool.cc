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

constexpr auto kSpin = std::chrono::microseconds(200);  // how long an idle worker spins before sleeping

thread_local bool t_in_job = false;  // set while this thread runs chunks: nested calls run inline

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
  int size() const { return nworkers_ + 1; }

  // Runs the job on the pool and returns true, or returns false at once if the pool is busy.
  bool try_run(int64_t n, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    acknowledged_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(m_);  // under m_: a worker about to sleep cannot miss it
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    // Every worker acknowledges every job, so fn_ and n_ stay valid until all have left it.
    for (int spins = 0; acknowledged_.load(std::memory_order_acquire) < nworkers_; ++spins) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
    return true;
  }

 private:
  void work() {
    t_in_job = true;
    for (;;) {
      const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) break;
      (*fn_)(i);
    }
    t_in_job = false;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = generation_.load(std::memory_order_acquire);
      const auto t0 = std::chrono::steady_clock::now();
      for (int spins = 0; g == seen && !stop_.load(std::memory_order_relaxed); ++spins) {
        cpu_relax();
        if ((spins & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lk(m_);
          cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
        }
        g = generation_.load(std::memory_order_acquire);
      }
      if (stop_.load()) return;
      seen = g;
      work();
      acknowledged_.fetch_add(1, std::memory_order_release);
    }
  }

  const int nworkers_;
  std::vector<std::thread> threads_;
  std::mutex busy_;  // held by the caller for the whole job
  std::mutex m_;     // guards sleeping/waking
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> acknowledged_{0};
  std::atomic<bool> stop_{false};
  int64_t n_ = 0;
  const std::function<void(int64_t)>* fn_ = nullptr;
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

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n > 1 && !t_in_job) {
    std::shared_ptr<Pool> p = pool();
    if (p && p->try_run(n, fn)) return;
  }
  for (int64_t i = 0; i < n; ++i) fn(i);  // one chunk, nested, single-threaded or pool busy
}

}  // namespace pyclvp
