// provides: parallel_for(n, fn) over a process-wide pool of std::threads; num_threads()/set_num_threads().
//
// The pool has num_threads() - 1 workers; the calling thread is the last participant. Its size is
// PYCLVP_NUM_THREADS when set, else std::thread::hardware_concurrency(). Work is handed out in
// chunks (`fn(i)` for i in [0, n)) through an atomic counter, so uneven chunks balance themselves.
//
// Safety rules (a kernel call never deadlocks or crashes the interpreter):
//   * a parallel_for issued from inside a chunk runs inline (no nested parallelism);
//   * a second caller (another Python thread, the GIL is released) runs inline while the pool is busy;
//   * after fork() the child gets a fresh pool (the parent's threads do not exist there);
//   * chunk functions must not throw: kernels check their arguments before any parallel_for.
//   * interruption (Ctrl-C): the outermost caller, between its own chunks, calls the interrupt check
//     (set_interrupt_check; the Python module installs one that runs PyErr_CheckSignals with the GIL
//     taken briefly) at most every kInterruptPeriod. When it says stop, no further chunk is handed
//     out, the chunks already running finish, and parallel_for throws Interrupted from the caller's
//     thread (never from a worker, never from a nested call). Kernels hold their buffers in RAII
//     objects, so the exception unwinds them; the binding turns it into KeyboardInterrupt.
// Workers spin briefly after each job (the decoder step issues a few hundred jobs per token, each a
// few tens of microseconds), then yield the CPU for a while, then sleep on a condition variable.
// The caller waits for the chunks to be done, never for a worker to wake up: on a machine shared
// with other processes, a descheduled worker does not stall the job (the caller takes its chunks).
#pragma once
#include <cstdint>
#include <exception>
#include <functional>

namespace pyclvp {

// Thrown by parallel_for on the caller's thread when the interrupt check asked to stop.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// fn() -> true means "stop the current call" (a pending Ctrl-C). Called from a thread that does not
// hold the GIL (the binding released it); nullptr (the default) means never interrupted.
void set_interrupt_check(bool (*fn)());

int num_threads();

void set_num_threads(int n);  // n >= 1; takes effect on the next parallel_for

// Runs fn(i) for every i in [0, n), spread over the pool; returns when all are done.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace pyclvp
