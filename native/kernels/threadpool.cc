#include "threadpool.h"

#if defined(__wasm__) && !defined(__wasm_atomics__)

// WebAssembly without threads: every job runs on the caller, as participant 0 of 1.
namespace lstm {

void Barrier::wait() { (void)n_; }

int hardware_threads() { return 1; }

void parallel_run(int, const std::function<void(const ParallelContext&)>& fn) {
  Barrier barrier(1);
  fn(ParallelContext{0, 1, &barrier});
}

bool parallel_run_if_idle(int threads, const std::function<void(const ParallelContext&)>& fn) {
  parallel_run(threads, fn);
  return true;
}

bool workers_asleep() { return false; }

void wake_workers() {}

}  // namespace lstm

#else

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LSTM_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LSTM_CPU_RELAX() asm volatile("yield")
#else
#define LSTM_CPU_RELAX() ((void)0)
#endif

namespace lstm {

void Barrier::wait() {
  const unsigned gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_release);
    return;
  }
  for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
    if (spins < 2000) {
      LSTM_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

int hardware_threads() {
  // Cached: glibc answers hardware_concurrency() by reading /sys, which costs more than
  // a whole streaming step.
  static const int n = [] {
    const unsigned c = std::thread::hardware_concurrency();
    return c == 0 ? 1 : static_cast<int>(c);
  }();
  return n;
}

namespace {

// After a job, workers spin this long before sleeping: streaming steps arrive every few
// tens of microseconds, and waking a sleeping thread costs about as much as the step.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);

// The hot path (publish a job, pick it up, report done) is lock-free: a contended mutex
// falls into a futex sleep, which costs tens of microseconds on a VM. The mutex and
// condition variables are touched only when the other side is actually asleep.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
    for (std::thread& t : threads_) t.detach();
  }

  // One job at a time: waits for the job before it, or (wait false) returns false at once
  // if there is one.
  bool run(int nth, const std::function<void(const ParallelContext&)>& fn, bool wait) {
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::defer_lock);
    if (wait) {
      job_lock.lock();
    } else if (!job_lock.try_lock()) {
      return false;
    }
    Barrier barrier(nth);
    // Publish: generation is odd while the fields change, even (and new) once they are set.
    const unsigned gen = generation_.load(std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    fn_.store(&fn, std::memory_order_relaxed);
    nth_.store(nth, std::memory_order_relaxed);
    barrier_.store(&barrier, std::memory_order_relaxed);
    remaining_.store(nth - 1, std::memory_order_relaxed);
    generation_.store(gen + 2, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    fn(ParallelContext{0, nth, &barrier});
    if (!spin_until([this] { return remaining_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_waiting_.store(true, std::memory_order_seq_cst);
      done_.wait(lock, [this] { return remaining_.load(std::memory_order_seq_cst) == 0; });
      caller_waiting_.store(false, std::memory_order_relaxed);
    }
    return true;
  }

  template <typename Pred>
  static bool spin_until(Pred ready) {
    const auto start = std::chrono::steady_clock::now();
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
      LSTM_CPU_RELAX();
      if ((i & 255) == 0 && std::chrono::steady_clock::now() - start > kSpinBeforeSleep) return false;
    }
  }

  bool all_asleep() const {
    return !threads_.empty() && sleepers_.load(std::memory_order_seq_cst) == static_cast<int>(threads_.size());
  }

  void poke() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    pokes_.fetch_add(1, std::memory_order_seq_cst);
    wake_.notify_all();
  }

 private:
  void loop(int tid) {
    unsigned seen = 0;
    for (;;) {
      const auto fresh = [&] {
        const unsigned g = generation_.load(std::memory_order_acquire);
        return g != seen && (g & 1u) == 0;
      };
      if (!spin_until(fresh)) {
        // Sleep until a job is published or a poke asks to spin for the next one; then
        // spin again (a poke with no job that follows ends back here).
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned poked = pokes_.load(std::memory_order_seq_cst);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] {
          return generation_.load(std::memory_order_seq_cst) != seen || pokes_.load(std::memory_order_seq_cst) != poked;
        });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        continue;
      }
      // A consistent snapshot of the job: retry if it changed while being read.
      const std::function<void(const ParallelContext&)>* fn;
      int nth;
      Barrier* barrier;
      for (;;) {
        const unsigned g1 = generation_.load(std::memory_order_acquire);
        fn = fn_.load(std::memory_order_relaxed);
        nth = nth_.load(std::memory_order_relaxed);
        barrier = barrier_.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if ((g1 & 1u) == 0 && generation_.load(std::memory_order_relaxed) == g1) {
          seen = g1;
          break;
        }
        LSTM_CPU_RELAX();
      }
      if (tid >= nth) continue;  // this job does not need every worker
      (*fn)(ParallelContext{tid, nth, barrier});
      if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_waiting_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<const std::function<void(const ParallelContext&)>*> fn_{nullptr};
  std::atomic<int> nth_{0};
  std::atomic<Barrier*> barrier_{nullptr};
  std::atomic<int> remaining_{0};
  std::atomic<unsigned> generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<unsigned> pokes_{0};
  std::atomic<bool> caller_waiting_{false};
};

// Created on first use and deliberately never destroyed: its threads are detached and
// idle on a condition variable, so process exit never waits on a join (a job may
// still be running on a libuv thread when Node exits).
Pool& pool() {
  static Pool* p = new Pool(hardware_threads() - 1);
  return *p;
}

// parallel_run, or (wait false) parallel_run_if_idle.
bool run_job(int threads, const std::function<void(const ParallelContext&)>& fn, bool wait) {
  const int nth = threads < hardware_threads() ? threads : hardware_threads();
  if (nth <= 1) {
    fn(ParallelContext{0, 1, nullptr});
    return true;
  }
  return pool().run(nth, fn, wait);
}

}  // namespace

void parallel_run(int threads, const std::function<void(const ParallelContext&)>& fn) { run_job(threads, fn, true); }

bool parallel_run_if_idle(int threads, const std::function<void(const ParallelContext&)>& fn) {
  return run_job(threads, fn, false);
}

bool workers_asleep() { return hardware_threads() > 1 && pool().all_asleep(); }

void wake_workers() {
  if (hardware_threads() > 1) pool().poke();
}

}  // namespace lstm

#endif  // __wasm__
